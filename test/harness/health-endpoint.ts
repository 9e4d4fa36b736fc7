/**
 * A node's health endpoint as the health checker probes it: a real HTTP server
 * on a loopback port whose `/healthz` answers 200, or 503 once `healthy` is
 * false. With `hang`, a probe gets no answer until `release()`: a hung node,
 * whose probe takes as long as the test decides, not as long as a timer.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Heartbeater } from "../../lib/core/heartbeat";
import type { StateStore } from "../../lib/core/store";

export class HealthEndpoint {
  healthy = true;
  /** Hold every probe unanswered until `release()`. */
  hang = false;
  /** Probes received so far. */
  probes = 0;
  private readonly held: ServerResponse[] = [];
  private readonly waiters: (() => void)[] = [];
  readonly server: Server = createServer((req, res) => {
    this.probes++;
    for (const w of this.waiters.splice(0)) w();
    if (this.hang) {
      this.held.push(res);
      return;
    }
    res.writeHead(req.url === "/healthz" && this.healthy ? 200 : 503).end();
  });

  /** Listens on a free loopback port; returns the base URL. */
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves when the next probe arrives. */
  nextProbe(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  /** Ends the hang: the held probes fail (their connections close unanswered), the next ones are answered. */
  release(): void {
    this.hang = false;
    for (const res of this.held.splice(0)) res.socket?.destroy();
  }

  close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A node as the checker sees one in active-active: heartbeats saying `serving`, and a health endpoint. */
export interface ServingNode {
  readonly admin: HealthEndpoint;
  readonly heartbeater: Heartbeater;
  /** Ends both, as when the instance is gone; once is enough. */
  stop(): Promise<void>;
}

/** Starts one: its first heartbeat is written before this returns. */
export async function startServingNode(o: {
  readonly store: StateStore;
  readonly fleetId: string;
  readonly nodeId: string;
  readonly publicIp: string;
  /** The node's stable name (what its Route 53 record is keyed on). */
  readonly name?: string;
  readonly periodMs: number;
}): Promise<ServingNode> {
  const admin = new HealthEndpoint();
  const adminUrl = await admin.start();
  const heartbeater = new Heartbeater({
    store: o.store,
    fleetId: o.fleetId,
    nodeId: o.nodeId,
    periodMs: o.periodMs,
    report: () => ({
      address: "127.0.0.1",
      adminUrl,
      role: "serving",
      drain: false,
      load: { connections: 0, rps: 0 },
      version: "test",
      publicIp: o.publicIp,
      ...(o.name !== undefined ? { name: o.name } : {}),
    }),
  });
  await heartbeater.beat();
  heartbeater.start();
  let stopped: Promise<void> | undefined;
  return {
    admin,
    heartbeater,
    stop: () => {
      stopped ??= (async () => {
        await heartbeater.stop();
        await admin.close();
      })();
      return stopped;
    },
  };
}
