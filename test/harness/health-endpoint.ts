/**
 * A node's health endpoint as the health checker probes it: a real HTTP server
 * on a loopback port whose `/healthz` answers 200, or 503 once `healthy` is false.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export class HealthEndpoint {
  healthy = true;
  readonly server: Server = createServer((req, res) => {
    res.writeHead(req.url === "/healthz" && this.healthy ? 200 : 503).end();
  });

  /** Listens on a free loopback port; returns the base URL. */
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}
