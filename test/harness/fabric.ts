/**
 * The local network fabric: what AWS's network does for an Elastic IP, on one
 * machine. For each Elastic IP it listens on the address's own public IP
 * (moto allocates them in 127.0.0.0/8, so they are routable on loopback) on
 * each listener port, and forwards every new connection to the node that the
 * emulator says the address is associated with: DescribeAddresses gives the
 * instance, the node's heartbeat (`node#`) gives the instance's address.
 *
 * As on AWS, a connection belongs to the instance it was opened to: moving the
 * address sends new connections to the new owner and leaves existing ones
 * where they are (they end when that node dies). A connection to an address
 * whose node process died is reset (its kernel answers so); one to an address
 * that no instance owns is held and retried as a client's SYN retransmissions
 * would be (see `route`).
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import type { ElasticIps } from "../../lib/core/elastic-ip";
import { listNodes } from "../../lib/core/heartbeat";
import type { StateStore } from "../../lib/core/store";

/** Linux's SYN retransmission timeouts (initial RTO 1 s, doubling), the first four. */
const SYN_RETRIES_MS = [1000, 2000, 4000, 8000];

export interface FabricAddress {
  readonly allocationId: string;
  readonly publicIp: string;
}

export interface ElasticIpFabricOptions {
  readonly elasticIps: ElasticIps;
  readonly store: StateStore;
  readonly fleetId: string;
  readonly addresses: readonly FabricAddress[];
  /** Listener ports forwarded on each address (the fleet's listeners). */
  readonly ports: readonly number[];
  /** How often the emulator's associations are read. @default 100 */
  readonly pollMs?: number;
}

export class ElasticIpFabric {
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly owner = new Map<string, string>();
  private readonly instanceAddress = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private stopped = false;
  /** Connections forwarded, and reset after the last retry found no live owner. */
  readonly stats = { forwarded: 0, refused: 0 };

  constructor(private readonly o: ElasticIpFabricOptions) {}

  async start(): Promise<void> {
    await this.refresh();
    for (const address of this.o.addresses) {
      for (const port of this.o.ports) {
        const server = createServer((client) => this.route(address, port, client));
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(port, address.publicIp, () => {
            server.off("error", reject);
            resolve();
          });
        });
        this.servers.push(server);
      }
    }
    const loop = () => {
      if (this.stopped) return;
      this.polling = this.refresh()
        .catch(() => {
          // the emulator is briefly unreachable: keep the last known associations
        })
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(loop, this.o.pollMs ?? 100);
        });
    };
    this.timer = setTimeout(loop, this.o.pollMs ?? 100);
  }

  /** True when `ip` is one of this fabric's addresses. */
  serves(ip: string): boolean {
    return this.o.addresses.some((a) => a.publicIp === ip);
  }

  /**
   * Whether a TCP handshake with `ip:port` would complete: the address's
   * instance is known and its node accepts on the port. What a Route 53 TCP
   * health check sees (the fabric's own listener accepts every connection,
   * so connecting to it proves nothing).
   */
  async check(ip: string, port: number, timeoutMs: number): Promise<boolean> {
    const address = this.o.addresses.find((a) => a.publicIp === ip);
    const instance = address && this.owner.get(address.allocationId);
    const target = instance ? this.instanceAddress.get(instance) : undefined;
    if (!target) return false;
    return tcpConnect(target, port, timeoutMs);
  }

  /** The instance an address is associated with, as last read. */
  ownerOf(allocationId: string): string | undefined {
    return this.owner.get(allocationId) || undefined;
  }

  private async refresh(): Promise<void> {
    const [addresses, nodes] = await Promise.all([
      this.o.elasticIps.listByFleet(this.o.fleetId),
      listNodes(this.o.store, this.o.fleetId),
    ]);
    for (const a of addresses) this.owner.set(a.allocationId, a.instanceId);
    for (const n of nodes) if (n.instanceId) this.instanceAddress.set(n.instanceId, n.address);
  }

  /**
   * A new connection goes to the address's current owner. When the owner's
   * port refuses (its proxy process died, the instance lives), the client is
   * reset at once, as the instance's kernel would. When no instance owns the
   * address, the connection is held and tried again on the schedule of a
   * client kernel's SYN retransmissions (1 s, 2 s, 4 s, 8 s), as on AWS, where
   * packets to an unowned address are dropped and a retransmitted SYN reaches
   * whichever instance owns it by then. After the last try the client is reset.
   */
  private route(address: FabricAddress, port: number, client: Socket): void {
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    client.on("error", () => {});
    client.pause();
    const attempt = (retry: number) => {
      if (this.stopped || client.destroyed) return;
      const instance = this.owner.get(address.allocationId);
      const target = instance ? this.instanceAddress.get(instance) : undefined;
      const again = () => {
        const delay = SYN_RETRIES_MS[retry];
        if (delay === undefined) {
          this.stats.refused++;
          client.resetAndDestroy();
          return;
        }
        const t = setTimeout(() => {
          this.timers.delete(t);
          attempt(retry + 1);
        }, delay);
        this.timers.add(t);
      };
      if (!target) return again();
      const upstream = connect({ host: target, port });
      // The instance is there but nothing listens (its proxy process died): its
      // kernel answers the SYN with a reset, and so does the fabric.
      const refused = () => {
        upstream.destroy();
        this.stats.refused++;
        client.resetAndDestroy();
      };
      upstream.once("error", refused);
      upstream.once("connect", () => {
        upstream.off("error", refused);
        this.stats.forwarded++;
        this.sockets.add(upstream);
        upstream.on("close", () => this.sockets.delete(upstream));
        // A reset on one side is a reset on the other, as a dead instance's would be.
        client.on("error", () => upstream.resetAndDestroy());
        upstream.on("error", () => client.resetAndDestroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const t of this.timers) clearTimeout(t);
    await this.polling;
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** A TCP check: true when a connection to ip:port opens within timeoutMs. */
export function tcpConnect(ip: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host: ip, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}
