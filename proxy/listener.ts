/**
 * What HTTP and TCP listeners share: the bound server, the set of client
 * connections, the settings a reload swaps in, the connection limit, and the
 * sweep that enforces timeouts.
 *
 * Timeouts are deadlines and inactivity checked by one coarse sweep per
 * listener instead of a timer per connection per request: arming a timer
 * costs more than forwarding a small request, and a timeout only needs to be
 * right to within the sweep period (a quarter of the shortest timeout,
 * between 10 and 250 ms). Inactivity is a flag set per read or drain and
 * looked at by the sweep, so no clock is read per chunk.
 */
import { createServer, type Server, Socket } from "node:net";
import type { Logger } from "pino";
import type { FleetConfig, ListenerConfig } from "../lib/core/config";
import { ListenError } from "./errors";
import type { Pool } from "./pool";
import type { ListenerStats } from "./stats";
import type { StickyRouter } from "./sticky";

/** Everything a reload may change for a running listener. */
export interface ListenerSettings {
  readonly listener: ListenerConfig;
  readonly pool: Pool;
  readonly timeouts: FleetConfig["timeouts"];
  readonly limits: FleetConfig["limits"];
  readonly retries: FleetConfig["retries"];
  readonly sticky: StickyRouter | undefined;
}

/** Open client connections across all listeners of a process, against `limits.maxConnections`. */
export class ConnectionGate {
  open = 0;
  constructor(public max: number) {}
}

export interface ClientConnection {
  /**
   * Bytes from the client. `chunk` may be a view of the connection's read
   * buffer, which the next read overwrites: return true when a reference to
   * it is kept beyond the call (queued in a socket's write buffer).
   */
  onClientBytes(chunk: Buffer): boolean;
  /** Called by the sweep; closes the connection when a deadline passed. */
  sweep(nowMs: number): void;
  /** Drain: close now when idle, else after the exchange in flight. */
  drain(): void;
  destroy(): void;
}

export interface ListenerOptions {
  readonly settings: ListenerSettings;
  readonly stats: ListenerStats;
  readonly gate: ConnectionGate;
  readonly logger: Logger;
  readonly accessLog: boolean;
  /** Port to bind instead of the configured one (tests bind 0). */
  readonly port?: number;
  /** Client sockets get reusable read buffers (see `installReadBuffers`). @default true */
  readonly readBuffers?: boolean;
}

export abstract class Listener<C extends ClientConnection> {
  settings: ListenerSettings;
  readonly stats: ListenerStats;
  readonly gate: ConnectionGate;
  readonly logger: Logger;
  readonly accessLog: boolean;
  readonly conns = new Set<C>();
  draining = false;
  protected readonly server: Server;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly port: number;
  private readonly readBuffers: boolean;
  private drained: (() => void) | undefined;

  constructor(options: ListenerOptions) {
    this.settings = options.settings;
    this.stats = options.stats;
    this.gate = options.gate;
    this.logger = options.logger;
    this.accessLog = options.accessLog;
    this.port = options.port ?? options.settings.listener.port;
    this.readBuffers = options.readBuffers ?? true;
    // Half-open: a client's FIN ends only its side, so what it asked for is
    // still answered (docs/architecture.md §8); each connection closes its own side.
    this.server = createServer({ noDelay: true, pauseOnConnect: false, allowHalfOpen: true }, (socket) =>
      this.accept(socket),
    );
  }

  get name(): string {
    return this.settings.listener.name;
  }

  async listen(): Promise<void> {
    const { bind } = this.settings.listener;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) =>
        reject(new ListenError(`listener '${this.name}'`, `${bind}:${this.port}`, err));
      this.server.once("error", onError);
      // A deep accept backlog absorbs connection bursts while the event loop is busy.
      this.server.listen({ host: bind, port: this.port, backlog: 4096 }, () => {
        this.server.off("error", onError);
        resolve();
      });
    });
    this.server.on("error", (err) => this.logger.error({ err, listener: this.name }, "listener error"));
    if (this.readBuffers) this.installReadBuffers();
    this.restartSweep();
  }

  /**
   * Client sockets with a read buffer of their own (`onread`), reused while
   * nothing holds on to it, as backend sockets have (`upstream.ts`): no 64 KiB
   * allocation and no Readable machinery per read. net.Server has no option
   * for it, so the listening handle's `onconnection` (what net.Server itself
   * installs, lib/net.js) is wrapped to build the socket; where that handle is
   * not there (another Node, a cluster round-robin handle), sockets come from
   * net.Server as usual and 'data' events feed the same `onClientBytes`.
   */
  private installReadBuffers(): void {
    const handle = (this.server as unknown as { _handle?: { onconnection?: unknown } })._handle;
    if (!handle || typeof handle.onconnection !== "function") return;
    const original = handle.onconnection as (err: number, clientHandle: unknown) => void;
    handle.onconnection = (err: number, clientHandle: unknown) => {
      if (err || !clientHandle) return original.call(handle, err, clientHandle);
      const reader = new ReadBuffer();
      const socket = new Socket({
        handle: clientHandle,
        allowHalfOpen: true,
        readable: true,
        writable: true,
        onread: {
          buffer: (() => reader.next()) as () => Uint8Array,
          callback: (n: number, buf: Uint8Array) => reader.deliver(n, buf),
        },
      } as unknown as ConstructorParameters<typeof Socket>[0]);
      // As net.Server does for `noDelay` (its constructor option only records it).
      socket.setNoDelay(true);
      reader.socket = socket;
      this.accept(socket, reader);
    };
  }

  address(): { address: string; port: number } {
    const a = this.server.address();
    if (!a || typeof a === "string") throw new Error(`listener '${this.name}' is not listening`);
    return { address: a.address, port: a.port };
  }

  /** Swaps in settings from a reload; connections read them per request. */
  update(settings: ListenerSettings): void {
    this.settings = settings;
    this.restartSweep();
  }

  private restartSweep(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const t = this.settings.timeouts;
    const shortest = Math.min(
      t.headMs,
      t.idleMs,
      t.clientMs,
      t.serverMs,
      t.tunnelMs,
      t.lingerMs,
      t.requestMs ?? Number.POSITIVE_INFINITY,
      t.connectMs,
    );
    const periodMs = Math.max(10, Math.min(250, Math.floor(shortest / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), periodMs);
    this.sweepTimer.unref();
  }

  private sweep(): void {
    const now = performance.now();
    for (const c of this.conns) c.sweep(now);
    this.settings.pool.sweepIdle(now, this.settings.timeouts.idleMs);
  }

  private accept(socket: Socket, reader?: ReadBuffer): void {
    if (this.draining) {
      socket.destroy();
      return;
    }
    if (this.gate.open >= this.gate.max) {
      this.stats.connectionsRefused++;
      this.refuse(socket);
      return;
    }
    this.gate.open++;
    this.stats.activeConnections++;
    this.stats.connectionsTotal++;
    const conn = this.open(socket);
    if (reader) reader.sink = conn;
    else socket.on("data", (chunk: Buffer) => conn.onClientBytes(chunk));
    this.conns.add(conn);
    socket.once("close", () => {
      this.gate.open--;
      this.stats.activeConnections--;
      this.conns.delete(conn);
      if (this.drained && this.conns.size === 0) this.drained();
    });
  }

  /** Turns away a connection over the limit. */
  protected abstract refuse(socket: Socket): void;
  protected abstract open(socket: Socket): C;

  /**
   * Stops accepting, lets exchanges in flight finish, closes idle connections;
   * after `deadlineMs` destroys whatever is left. Resolves when all are closed.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.conns.size > 0) {
      const done = new Promise<void>((resolve) => {
        this.drained = resolve;
      });
      for (const c of this.conns) c.drain();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, deadlineMs);
      });
      await Promise.race([done, deadline]);
      clearTimeout(timer);
      for (const c of this.conns) c.destroy();
    }
    await closed;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /** Closes everything now. */
  async close(): Promise<void> {
    return this.drain(0);
  }
}

/** Per-client read buffer (HAProxy's default tune.bufsize is 16 KiB). */
const CLIENT_READ_BYTES = 16 * 1024;

/** A client socket's reusable read buffer (see `installReadBuffers`). */
class ReadBuffer {
  socket: Socket | undefined;
  sink: ClientConnection | undefined;
  private buf: Buffer | undefined;
  private retained = false;

  /** Node asks after every read: a new buffer only when the last is still referenced. */
  next(): Buffer | undefined {
    if (this.buf === undefined || this.retained) {
      this.retained = false;
      this.buf = Buffer.allocUnsafe(CLIENT_READ_BYTES);
      return this.buf;
    }
    return undefined;
  }

  deliver(n: number, buf: Uint8Array): boolean {
    const b = buf as Buffer;
    const sink = this.sink;
    if (sink) this.retained = sink.onClientBytes(n === b.length ? b : b.subarray(0, n));
    // Paused (backpressure or an exchange in flight): stop reading until resume.
    return !this.socket?.isPaused();
  }
}

/** The client address as people read it (IPv4-mapped IPv6 shown as IPv4). */
export function clientAddress(socket: Socket): string {
  const a = socket.remoteAddress ?? "";
  return a.startsWith("::ffff:") ? a.slice(7) : a;
}
