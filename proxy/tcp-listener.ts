/**
 * The TCP proxy: each client connection is joined to one backend connection
 * and bytes are copied both ways with backpressure.
 *
 * `data` handlers with write/pause/resume instead of `stream.pipe`: pipe adds
 * an event and a function frame per chunk on each side, which is measurable
 * when a chunk is one small request. A connect failure is retried on another
 * backend (nothing has reached a backend yet, so this is safe whatever the
 * protocol), within the retry budget. The idle timeout counts sweep ticks
 * rather than reading the clock per chunk.
 *
 * A FIN from either side goes on to the other, whose bytes keep flowing the
 * other way, as HAProxy carries half-closed streams; the connection is done
 * when both sides have ended. When the backend goes away first, the client
 * connection is closed with a lingering close (docs/architecture.md §8).
 */
import type { Socket } from "node:net";
import { hash32 } from "./hash";
import { type ClientConnection, clientAddress, Listener, type ListenerOptions } from "./listener";
import type { Backend, Pool } from "./pool";
import type { TcpEnd } from "./stats";
import { UpstreamConnection, type UpstreamOwner } from "./upstream";

export class TcpListener extends Listener<TcpConnection> {
  private lastSweepMs = performance.now();
  /** Milliseconds since the previous sweep, measured. */
  tickMs = 0;

  constructor(options: ListenerOptions) {
    super(options);
  }

  protected override refuse(socket: Socket): void {
    socket.destroy();
  }

  protected override open(socket: Socket): TcpConnection {
    return new TcpConnection(this, socket);
  }

  /** Called by the sweep of each connection with the same `now`; advances the tick once per sweep. */
  advance(nowMs: number): void {
    if (nowMs === this.lastSweepMs) return;
    this.tickMs = nowMs - this.lastSweepMs;
    this.lastSweepMs = nowMs;
  }
}

const CONNECTING = 0;
const PIPING = 1;
const CLOSED = 2;

export class TcpConnection implements ClientConnection, UpstreamOwner {
  private readonly listener: TcpListener;
  private readonly socket: Socket;
  private readonly ip: string;
  private state = CONNECTING;
  private upstream: UpstreamConnection | undefined;
  private backend: Backend | undefined;
  private pending: Buffer[] = [];
  /** Bytes moved since the last sweep (a flag, cheaper than reading the clock per chunk). */
  private active = true;
  private idleMsSeen = 0;
  private readonly retry = { attempts: 0, isRetry: false };
  private readonly startMs = performance.now();
  /** The pool this connection was routed in (a reload may give the listener another). */
  private readonly pool: Pool;
  /** The client sent FIN. */
  private clientEnded = false;
  /** Closed by the proxy: milliseconds left before the socket is destroyed (-1: not lingering). */
  private lingerLeftMs = -1;

  constructor(listener: TcpListener, socket: Socket) {
    this.listener = listener;
    this.socket = socket;
    this.ip = clientAddress(socket);
    socket.on("drain", () => this.upstream?.socket.resume());
    socket.on("end", () => {
      // Half-close travels to the backend (at once, or once connected, after
      // the bytes that came before it); the connection ends when both sides have.
      this.clientEnded = true;
      if (this.state === PIPING) this.upstream?.socket.end();
    });
    socket.on("error", () => {});
    socket.on("close", () => this.close("client closed"));
    const settings = listener.settings;
    this.pool = settings.pool;
    settings.pool.inFlight++;
    const sticky = settings.sticky;
    if (sticky) {
      socket.pause();
      sticky.route(settings.pool, this.ip, false).then(
        (d) => this.connectTo(d.backend),
        () => this.connectTo(settings.pool.hashPick(hash32(this.ip))),
      );
    } else this.connectTo(settings.pool.pick(hash32(this.ip)));
  }

  onClientBytes(chunk: Buffer): boolean {
    // Lingering after the backend went away: read and drop, so the client's FIN is seen.
    if (this.state === CLOSED) return false;
    this.active = true;
    const up = this.upstream;
    if (this.state === PIPING && up) {
      if (!up.socket.write(chunk)) this.socket.pause();
      // A write that could not finish at once still points into `chunk`.
      return up.socket.writableLength > 0;
    }
    // Still connecting: keep a copy (`chunk` may be the reusable read buffer).
    this.pending.push(Buffer.from(chunk));
    this.socket.pause();
    return false;
  }

  private connectTo(b: Backend | undefined): void {
    if (this.state !== CONNECTING) return;
    if (!b) {
      this.close("no backend available");
      return;
    }
    this.backend = b;
    b.outstanding++;
    b.requests++;
    this.upstream = new UpstreamConnection(b, this, this.listener.settings.timeouts.connectMs);
  }

  onUpstreamConnect(conn: UpstreamConnection): void {
    if (conn !== this.upstream || this.state !== CONNECTING) return;
    this.state = PIPING;
    this.pool.reportSuccess(conn.backend);
    this.doneRetrying();
    const pending = this.pending;
    this.pending = [];
    for (const chunk of pending) conn.socket.write(chunk);
    if (this.clientEnded) conn.socket.end();
    this.socket.resume();
  }

  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): boolean {
    this.active = true;
    if (!this.socket.write(chunk)) conn.socket.pause();
    return this.socket.writableLength > 0;
  }

  onUpstreamDrain(): void {
    this.socket.resume();
  }

  onUpstreamEnd(conn: UpstreamConnection): void {
    if (conn === this.upstream) this.socket.end();
  }

  onUpstreamClose(conn: UpstreamConnection, connected: boolean): void {
    if (conn !== this.upstream || this.state === CLOSED) return;
    this.upstream = undefined;
    const settings = this.listener.settings;
    const pool = this.pool;
    if (!connected) {
      pool.reportFailure(conn.backend);
      this.releaseBackend();
      if (pool.beginRetry(this.retry, settings.retries.attempts, settings.retries.budgetPercent)) {
        this.connectTo(pool.pick(hash32(this.ip), conn.backend));
        return;
      }
      this.close("connect failed");
      return;
    }
    // The backend is gone: after both FINs, or reset. Let the client read
    // what is left, then close; lingering, whatever the client does.
    this.state = CLOSED;
    this.finish("closed");
    if (this.socket.destroyed) return;
    this.socket.end();
    this.lingerLeftMs = this.listener.settings.timeouts.lingerMs;
    this.socket.resume();
  }

  private releaseBackend(): void {
    if (this.backend) {
      this.backend.outstanding--;
      this.backend = undefined;
    }
  }

  private doneRetrying(): void {
    if (this.retry.isRetry) {
      this.pool.retriesInFlight--;
      this.retry.isRetry = false;
    }
  }

  private finished = false;

  /** Bookkeeping once, when the stream ends: `end` is how (the first cause wins). */
  private finish(end: TcpEnd): void {
    if (this.finished) return;
    this.finished = true;
    this.doneRetrying();
    this.releaseBackend();
    this.pool.inFlight--;
    this.listener.stats.countTcpEnd(end);
    this.listener.stats.observe(performance.now() - this.startMs);
    if (this.listener.accessLog) {
      this.listener.logger.info({ listener: this.listener.name, client: this.ip }, "connection closed");
    }
  }

  private close(end: TcpEnd): void {
    this.state = CLOSED;
    if (this.upstream) {
      this.upstream.destroy();
      this.upstream = undefined;
    }
    this.socket.destroy();
    this.finish(end);
  }

  sweep(nowMs: number): void {
    this.listener.advance(nowMs);
    if (this.state === CLOSED) {
      if (this.lingerLeftMs < 0) return;
      this.lingerLeftMs -= this.listener.tickMs;
      if (this.lingerLeftMs <= 0) this.socket.destroy();
      return;
    }
    if (this.active) {
      this.active = false;
      this.idleMsSeen = 0;
      return;
    }
    this.idleMsSeen += this.listener.tickMs;
    if (this.idleMsSeen >= this.listener.settings.timeouts.idleMs) this.close("idle timeout");
  }

  drain(): void {
    // TCP has no exchange boundary to stop at: connections run until drainMs.
  }

  destroy(): void {
    this.close("drain");
  }
}
