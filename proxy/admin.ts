/**
 * The admin endpoint, on its own port so that it never competes with user
 * traffic for a listener and can be firewalled apart:
 *
 * - `GET /healthz`: 200 while the data plane works: every listener accepts
 *   a connection and, in a cluster, every worker answers (`data-plane.ts`);
 *   else 503, the JSON body naming what failed. Without a `health` check,
 *   200 while the process runs.
 * - `GET /readyz`: 200 when a config is in force and the node is not
 *   draining, else 503; the JSON body also carries the node's `role`.
 * - `GET /metrics`: Prometheus text.
 * - `POST /drain`: starts a drain (202); `/readyz` turns 503 at once. Only
 *   with `authorization: Bearer <admin token>` (`admin-token.ts`): 401
 *   without it or with another, 403 when the node has no token at all.
 *
 * `role` is the seam for the node agent (lease, heartbeat, Elastic IP), which
 * lives beside the proxy: it calls `setRole("active" | "standby" | ...)`. The
 * proxy never decides its own role.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tokenMatches } from "./admin-token";
import type { DataPlaneReport } from "./data-plane";
import { ListenError } from "./errors";

export interface AdminStatus {
  /** A config is in force (from the store, a file, or the last good copy on disk). */
  readonly configLoaded: boolean;
  readonly configVersion: number;
  readonly draining: boolean;
  /** Where the config in force came from: `file`, `store` or `state-file`. */
  readonly configSource?: string;
  /** Each backend's health as this process sees it (absent in a cluster primary). */
  readonly backends?: readonly BackendHealth[];
}

export interface BackendHealth {
  readonly pool: string;
  readonly id: string;
  /** Passes active checks and is not ejected. */
  readonly healthy: boolean;
  readonly ejected: boolean;
}

export interface AdminServerOptions {
  /** @default "127.0.0.1" */
  readonly host?: string;
  readonly port: number;
  readonly status: () => AdminStatus;
  readonly metrics: () => Promise<{ contentType: string; body: string }>;
  /** Starts a drain; the answer does not wait for it to end. */
  readonly drain: () => void;
  /** The data plane's health, which `/healthz` reports. @default none: alive is healthy */
  readonly health?: () => Promise<DataPlaneReport>;
  /** @default "none" (no agent has set one) */
  readonly role?: string;
  /** The token that state changes need. @default none: every state change is refused */
  readonly token?: string;
}

export class AdminServer {
  private readonly server: Server;
  private readonly options: AdminServerOptions;
  role: string;
  private readonly token: string | undefined;

  private constructor(options: AdminServerOptions) {
    this.options = options;
    this.role = options.role ?? "none";
    this.token = options.token;
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        send(res, 500, { error: String(err) });
      });
    });
    this.server.keepAliveTimeout = 5000;
  }

  static async start(options: AdminServerOptions): Promise<AdminServer> {
    const admin = new AdminServer(options);
    const host = options.host ?? "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      admin.server.once("error", (err) =>
        reject(new ListenError("admin server", `${host}:${options.port}`, err)),
      );
      admin.server.listen(options.port, host, () => resolve());
    });
    return admin;
  }

  /** Set by the node agent. */
  setRole(role: string): void {
    this.role = role;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    switch (path) {
      case "/healthz": {
        if (!this.options.health) return send(res, 200, { alive: true });
        const report = await this.options.health();
        return send(res, report.healthy ? 200 : 503, { alive: true, ...report });
      }
      case "/readyz": {
        const s = this.options.status();
        const ready = s.configLoaded && !s.draining;
        return send(res, ready ? 200 : 503, { ready, role: this.role, ...s });
      }
      case "/metrics": {
        const m = await this.options.metrics();
        res.writeHead(200, { "content-type": m.contentType });
        res.end(m.body);
        return;
      }
      case "/drain":
        if (req.method !== "POST") {
          res.setHeader("allow", "POST");
          return send(res, 405, { error: "use POST /drain" });
        }
        if (!this.mayChangeState(req, res)) return;
        this.options.drain();
        return send(res, 202, { draining: true });
      default:
        return send(res, 404, { error: `no ${path}; try /healthz, /readyz, /metrics, POST /drain` });
    }
  }

  /** Answers 403 or 401 and returns false unless the caller shows the token. */
  private mayChangeState(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.token === undefined) {
      send(res, 403, {
        error: "state changes are disabled: this node was started without --admin-token-file",
      });
      return false;
    }
    if (!tokenMatches(req.headers.authorization, this.token)) {
      res.setHeader("www-authenticate", "Bearer");
      send(res, 401, { error: "state changes need authorization: Bearer <admin token>" });
      return false;
    }
    return true;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
