/**
 * A node's health endpoint as the health checker probes it: a real HTTP server
 * on a loopback port whose `/healthz` answers 200, or 503 once `healthy` is
 * false. With `hang`, a probe gets no answer until `release()`: a hung node,
 * whose probe takes as long as the test decides, not as long as a timer.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

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
