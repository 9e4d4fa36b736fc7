/**
 * Real backends, real clients and a proxy on loopback for the proxy's tests.
 * Every helper returns something with a `close()`; `Harness` collects them so
 * a test's teardown closes all of it.
 */
import {
  Agent,
  createServer,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from "node:http";
import { connect, createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { type FleetConfig, type FleetConfigInput, parseFleetConfig } from "../../../lib/core/config";
import { ProxyServer, type ProxyServerOptions } from "../../../proxy/server";

export interface Backend {
  readonly name: string;
  readonly port: number;
  readonly server: Server;
  /** Requests seen, in order (method, url, headers). */
  readonly seen: IncomingMessage[];
  /** Bodies received, in order. */
  readonly bodies: string[];
  /** Replaces the answer; default answers 200 with the backend's name. */
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => void;
  close(): Promise<void>;
}

export function defaultAnswer(name: string) {
  return (_req: IncomingMessage, res: ServerResponse) => {
    res.setHeader("x-backend", name);
    res.end(name);
  };
}

export async function startBackend(name: string): Promise<Backend> {
  const seen: IncomingMessage[] = [];
  const bodies: string[] = [];
  const backend: { handler: Backend["handler"] } = { handler: defaultAnswer(name) };
  const server = createServer((req, res) => {
    seen.push(req);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      bodies.push(body);
      backend.handler(req, res, body);
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return Object.assign(backend, {
    name,
    port,
    server,
    seen,
    bodies,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

/** A TCP echo server that prefixes each answer with its name. */
export async function startEchoBackend(
  name: string,
): Promise<{ port: number; server: NetServer; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.on("data", (d) => s.write(`${name}:${d.toString()}`));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    server,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A port nothing listens on (bound, then closed). */
export async function deadPort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function config(input: FleetConfigInput): FleetConfig {
  return parseFleetConfig(input);
}

/** One http listener `web` on pool `web`, health checks slow unless given. */
export function webConfig(
  backends: readonly { port: number; weight?: number; id?: string }[],
  pool: Record<string, unknown> = {},
  rest: Record<string, unknown> = {},
): FleetConfig {
  return config({
    listeners: [
      { name: "web", protocol: "http", port: 8080, bind: "127.0.0.1", pool: "web", ...(rest.listener ?? {}) },
    ],
    pools: {
      web: {
        backends: backends.map((b) => ({
          host: "127.0.0.1",
          port: b.port,
          weight: b.weight ?? 1,
          ...(b.id ? { id: b.id } : {}),
        })),
        healthCheck: { intervalMs: 60_000, timeoutMs: 1000 },
        ...pool,
      },
    },
    ...(rest.timeouts ? { timeouts: rest.timeouts } : {}),
    ...(rest.limits ? { limits: rest.limits } : {}),
    ...(rest.retries ? { retries: rest.retries } : {}),
  } as FleetConfigInput);
}

export async function startProxy(
  cfg: FleetConfig,
  options: Partial<ProxyServerOptions> = {},
): Promise<ProxyServer> {
  const portOverrides: Record<string, number> = {};
  for (const l of cfg.listeners) portOverrides[l.name] = 0;
  return ProxyServer.start({ config: cfg, healthChecks: false, portOverrides, ...options });
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request with node's client; `agent` false opens a new connection. */
export function get(
  port: number,
  path = "/",
  options: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    agent?: Agent | false;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: options.method ?? "GET",
        headers: options.headers,
        agent: options.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/**
 * Sends raw bytes on a new connection and returns everything the proxy sent
 * until it closed the connection (or `waitMs` passed: then `closed` is false).
 */
export function raw(
  port: number,
  data: string | Buffer | readonly (string | Buffer)[],
  waitMs = 10_000,
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    s.on("data", (c) => chunks.push(c));
    s.on("error", () => finish(true));
    s.on("close", () => finish(true));
    s.on("connect", () => {
      const parts = Array.isArray(data) ? data : [data];
      for (const p of parts) s.write(p);
    });
  });
}

/** Status codes in a raw answer, in order. */
export function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
}

/** Collects closeables; `closeAll` in afterEach. */
export class Harness {
  private readonly items: { close(): Promise<void> | void }[] = [];

  add<T extends { close(): Promise<void> | void }>(item: T): T {
    this.items.push(item);
    return item;
  }

  async closeAll(): Promise<void> {
    const items = this.items.splice(0).reverse();
    for (const i of items) await i.close();
  }
}

/** A keep-alive agent that the harness destroys. */
export function keepAliveAgent(maxSockets = 10): Agent & { close(): void } {
  const agent = new Agent({ keepAlive: true, maxSockets });
  return Object.assign(agent, { close: () => agent.destroy() });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns true (generous deadline: tests assert outcome, not timing). */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}
