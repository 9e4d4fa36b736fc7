/**
 * Real DNS on a loopback UDP port, answered by the Route 53 resolver
 * (`route53-resolver.ts`): what Route 53's name servers would answer for the
 * zone, so that `dig @127.0.0.1 -p PORT NAME` and `curl --resolve` recipes
 * work against the local fleet's weighted set, as they would against AWS.
 *
 * A queries of a name in the zone get the resolver's answer with its TTL
 * (NXDOMAIN when the zone has no record there); other types of a name in
 * the zone get an empty answer; names outside the zone are REFUSED, as an
 * authoritative server that is no recursive resolver does. Messages are
 * read and written by `dns-packet`; a message it cannot read is dropped.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import * as packet from "dns-packet";
import type { Route53Resolver } from "./route53-resolver";

/** The response codes this server gives (RFC 1035 4.1.1). */
const RCODES = { NOERROR: 0, NXDOMAIN: 3, REFUSED: 5 } as const;

export interface DnsServerOptions {
  readonly resolver: Route53Resolver;
  /** The zone's name (`hafleet.test`); the server answers for it and its subdomains. */
  readonly zoneName: string;
  /** @default 127.0.0.1 */
  readonly host?: string;
  /** @default 0 (any free port) */
  readonly port?: number;
}

export class DnsServer {
  private socket: Socket | undefined;
  private readonly zone: string;
  /** Queries answered, by response code. */
  readonly answered = new Map<string, number>();

  constructor(private readonly o: DnsServerOptions) {
    this.zone = o.zoneName.toLowerCase().replace(/\.$/, "");
  }

  /** Binds the port; resolves with it. */
  async start(): Promise<number> {
    const socket = createSocket("udp4");
    this.socket = socket;
    socket.on("message", (msg, from) => this.onQuery(msg, from));
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(this.o.port ?? 0, this.o.host ?? "127.0.0.1", () => {
        socket.off("error", reject);
        resolve();
      });
    });
    socket.on("error", () => {});
    return socket.address().port;
  }

  get port(): number {
    if (!this.socket) throw new Error("DnsServer is not started");
    return this.socket.address().port;
  }

  async stop(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private inZone(name: string): boolean {
    const n = name.toLowerCase().replace(/\.$/, "");
    return n === this.zone || n.endsWith(`.${this.zone}`);
  }

  private onQuery(msg: Buffer, from: RemoteInfo): void {
    let query: packet.Packet;
    try {
      query = packet.decode(msg);
    } catch {
      return; // not a DNS message
    }
    if (query.type !== "query" || !query.questions || query.questions.length !== 1) return;
    const q = query.questions[0]!;
    const answers: packet.Answer[] = [];
    let rcode: "NOERROR" | "NXDOMAIN" | "REFUSED" = "NOERROR";
    if (!this.inZone(q.name)) rcode = "REFUSED";
    else if (q.type === "A") {
      const a = this.o.resolver.resolve(q.name);
      if (a) answers.push({ type: "A", class: "IN", name: q.name, ttl: a.ttlS, data: a.address });
      else rcode = "NXDOMAIN";
    }
    this.answered.set(rcode, (this.answered.get(rcode) ?? 0) + 1);
    const reply = packet.encode({
      id: query.id ?? 0,
      type: "response",
      // Authoritative answer (AA) for names in the zone; recursion desired copied, not available.
      // dns-packet writes the response code as the low bits of `flags`.
      flags:
        (rcode === "REFUSED" ? 0 : packet.AUTHORITATIVE_ANSWER) |
        ((query.flags ?? 0) & packet.RECURSION_DESIRED) |
        RCODES[rcode],
      questions: [q],
      answers,
    });
    this.socket?.send(reply, from.port, from.address);
  }
}
