/**
 * The HTTP/1.1 reverse proxy on plain `net` sockets.
 *
 * Per client connection, one exchange at a time:
 * 1. Read the request head (bounded by `maxHeaderBytes` and `headMs`), parse
 *    it strictly (`http1.ts`); anything ambiguous is answered 400 and closed.
 * 2. Pick a backend (balancer, or sticky session), take an idle keep-alive
 *    connection to it or open one (`connectMs`).
 * 3. Send the rewritten head (hop-by-hop headers out, X-Forwarded-* in), then
 *    the body bytes as they came (Content-Length counted, chunked validated).
 * 4. Parse the response head, forward it rewritten and the body as it came;
 *    when the response ends, the backend connection goes back to its idle list
 *    and the client connection reads its next request.
 * A connect failure of an idempotent request is retried on another backend
 * (`retries.attempts`, within `retries.budgetPercent`). A failure on a reused
 * keep-alive connection before any answer (the backend closed it as we sent)
 * is retried once on a fresh connection, idempotent requests only.
 *
 * Bodies are never buffered beyond one read; backpressure pauses the side
 * that sends faster. Pipelined requests are read one after the other.
 */
import type { Socket } from "node:net";
import { isTrustedPeer } from "./forwarded";
import { hash32 } from "./hash";
import {
  ChunkScanner,
  cookieValue,
  errorResponse,
  Framing,
  findHeadEnd,
  IDEMPOTENT,
  MALFORMED,
  NEED_MORE,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
} from "./http1";
import { type ClientConnection, clientAddress, Listener } from "./listener";
import type { Backend, Pool } from "./pool";
import type { Abort, BackendError, ClientRefusal } from "./stats";
import { StickyRouter } from "./sticky";
import { release, takeIdle, UpstreamConnection, type UpstreamOwner } from "./upstream";

/** A backend's response head may be this large (HAProxy's default buffer is 16 KiB; cookies grow). */
const MAX_RESPONSE_HEAD = 64 * 1024;

// Connection states.
const READ_HEAD = 0;
const ROUTING = 1; // picking a backend (sticky lookups are asynchronous) or connecting
const EXCHANGE = 2; // request sent or being sent; response awaited or streaming
const TUNNEL = 3; // after 101 Switching Protocols: bytes both ways
const CLOSED = 4;

// Deadline kinds.
const D_NONE = 0;
const D_IDLE = 1; // between requests: close quietly
const D_HEAD = 2; // reading a head: 408
const D_REQUEST = 3; // the optional total for an exchange (`requestMs`): 504 if nothing answered yet
const D_LINGER = 4; // closed by the proxy: destroyed at the deadline, whatever the client does

const OVERSIZE_BODY = errorResponse(413);
/** While draining, how long a connection may stay open for a request the client already sent. */
const DRAIN_GRACE_MS = 2000;

export class HttpListener extends Listener<HttpConnection> {
  protected override refuse(socket: Socket): void {
    // Over the connection limit: answer 503 rather than reset, so clients see
    // why. No connection object exists for it, so a timer bounds its linger.
    socket.on("error", () => {});
    socket.end(errorResponse(503));
    socket.resume();
    setTimeout(() => socket.destroy(), this.settings.timeouts.lingerMs).unref();
  }

  protected override open(socket: Socket): HttpConnection {
    return new HttpConnection(this, socket);
  }
}

export class HttpConnection implements ClientConnection, UpstreamOwner {
  private readonly listener: HttpListener;
  private readonly socket: Socket;
  private readonly ip: string;
  private state = READ_HEAD;
  /** Client bytes not yet consumed (partial head, or bytes after the current request). */
  private pending: Buffer | undefined;
  /** Bytes of a partial head in `pending` already scanned by `findHeadEnd`. */
  private headScanned = 0;
  private deadlineKind = D_HEAD;
  private deadlineMs: number;
  private draining = false;

  // The exchange in flight.
  private req: RequestHead | undefined;
  private upstreamHead: string | undefined;
  private reqRemaining = 0;
  private reqChunks: ChunkScanner | undefined;
  private reqDone = false;
  private startMs = 0;
  private readonly retry = { attempts: 0, isRetry: false };
  private hashKey = 0;
  private backend: Backend | undefined;
  private upstream: UpstreamConnection | undefined;
  private setCookie: string | undefined;
  private resStarted = false;
  private resHeadBuf: Buffer | undefined;
  private resFraming: Framing = Framing.None;
  private resRemaining = 0;
  private resChunks: ChunkScanner | undefined;
  private resReusable = false;
  private resStatus = 0;
  private closeAfter = false;
  /** The client sent FIN: what it sent before is answered, then the connection closes. */
  private clientEnded = false;
  private countedInFlight = false;
  /** The pool of the exchange in flight (a reload may give the listener another). */
  private pool: Pool;
  private staleRetried = false;
  /** Bytes came from the client, or it took answer bytes, since the last sweep. */
  private clientSeen = false;
  /** Bytes came from the backend, or it took request bytes, since the last sweep. */
  private serverSeen = false;
  /** Since when the exchange has waited on the client (or the tunnel on either side). */
  private clientWaitMs = 0;
  /** Since when the exchange has waited on the backend. */
  private serverWaitMs = 0;
  /** The `trustedProxies` list `trusted` was decided for. */
  private trustedFor: readonly string[] | undefined;
  private trusted = false;

  constructor(listener: HttpListener, socket: Socket) {
    this.listener = listener;
    this.socket = socket;
    this.ip = clientAddress(socket);
    this.pool = listener.settings.pool;
    // The first request's head must arrive within headMs of the connection
    // (so idle connection floods are cut like slowloris); later ones within
    // idleMs of the last answer plus headMs of their first byte.
    this.deadlineMs = performance.now() + listener.settings.timeouts.headMs;
    socket.on("drain", () => {
      this.clientSeen = true;
      if (this.upstream && this.state === EXCHANGE) this.upstream.socket.resume();
    });
    socket.on("end", () => this.onClientEnd());
    socket.on("error", () => {});
    socket.on("close", () => this.onClientClose());
  }

  // ---- client side -------------------------------------------------------

  onClientBytes(chunk: Buffer): boolean {
    this.onClientData(chunk);
    // `chunk` may be the socket's reusable read buffer: what stays pending is
    // copied, and a write that could not finish at once still points into it.
    const p = this.pending;
    if (p !== undefined && p.buffer === chunk.buffer) this.pending = Buffer.from(p);
    const up = this.upstream;
    return up !== undefined && up.socket.writableLength > 0;
  }

  private onClientData(chunk: Buffer): void {
    // Closed by the proxy, lingering: read and drop, so the client's FIN is seen.
    if (this.state === CLOSED) return;
    this.clientSeen = true;
    if (this.state === TUNNEL) {
      if (this.upstream && !this.upstream.socket.write(chunk)) this.socket.pause();
      return;
    }
    if (this.state === EXCHANGE && !this.reqDone && this.pending === undefined) {
      this.forwardBody(chunk);
      return;
    }
    this.pending = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    if (this.state === READ_HEAD) this.readHead();
    else if (this.state === EXCHANGE && !this.reqDone) this.forwardBody(this.takePending()!);
    else this.socket.pause(); // pipelined bytes wait for the current exchange
  }

  private takePending(): Buffer | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }

  private onClientEnd(): void {
    if (this.state === CLOSED) return;
    if (this.state === TUNNEL) {
      this.upstream?.socket.end();
      return;
    }
    // Half-close from the client (docs/architecture.md §8): the exchange in
    // flight, and requests already read, are answered; then the proxy closes.
    // Between requests, or half way through a head that can no longer
    // complete, there is nothing to answer.
    if (this.state === READ_HEAD) this.closeGracefully();
    else this.clientEnded = true;
  }

  private onClientClose(): void {
    const wasInExchange = this.state === EXCHANGE || this.state === ROUTING || this.state === TUNNEL;
    this.state = CLOSED;
    if (this.upstream) {
      this.upstream.destroy();
      this.upstream = undefined;
    }
    if (wasInExchange) this.endExchange(0);
  }

  private readHead(): void {
    const limits = this.listener.settings.limits;
    let buf = this.pending!;
    // RFC 9112 2.2: ignore empty lines before a request line.
    let skip = 0;
    while (skip + 1 < buf.length && buf[skip] === 13 && buf[skip + 1] === 10) skip += 2;
    if (skip > 0) {
      buf = buf.subarray(skip);
      this.pending = buf;
      this.headScanned = 0;
    }
    const headEnd = findHeadEnd(buf, this.headScanned);
    if (headEnd === MALFORMED) {
      this.refuse(400, "bare CR or LF in head");
      return;
    }
    if (headEnd === NEED_MORE) {
      this.headScanned = buf.length;
      if (buf.length > limits.maxHeaderBytes) {
        this.refuse(431, "head too large");
        return;
      }
      if (this.deadlineKind === D_IDLE && buf.length > 0) {
        this.deadlineKind = D_HEAD;
        this.deadlineMs = performance.now() + this.listener.settings.timeouts.headMs;
      }
      return;
    }
    this.headScanned = 0;
    if (headEnd > limits.maxHeaderBytes) {
      this.refuse(431, "head too large");
      return;
    }
    const pool = this.listener.settings.pool;
    const hk = pool.config.hashKey;
    const req = parseRequestHead(
      buf.toString("latin1", 0, headEnd),
      hk?.source === "header" ? hk.name!.toLowerCase() : undefined,
    );
    if (req.error) {
      this.refuse(req.status, req.reason);
      return;
    }
    if (req.method === "CONNECT") {
      this.refuse(501, "CONNECT");
      return;
    }
    if (req.framing === Framing.Length && req.contentLength > limits.maxBodyBytes) {
      this.refuse(413, "body too large");
      return;
    }
    this.pending = headEnd < buf.length ? buf.subarray(headEnd) : undefined;
    this.startExchange(req);
  }

  /** Refuses the client's request (its doing, or over a limit) with an answer of the proxy's own, and closes. */
  private refuse(status: number, reason: ClientRefusal): void {
    this.listener.stats.countRefused(reason);
    if (this.countedInFlight) {
      this.answerOwn(status);
      return;
    }
    this.listener.stats.countStatus(status);
    if (this.upstream) {
      this.upstream.destroy();
      this.upstream = undefined;
    }
    this.closeGracefully(errorResponse(status));
  }

  /**
   * The proxy closes the connection (docs/architecture.md §8, lingering
   * close): `last` and FIN go out, what the client still sends is read and
   * dropped (a paused socket would never see the client's FIN, and would
   * hold its `maxConnections` slot for good), and the sweep destroys the
   * socket `lingerMs` later whatever the client does.
   */
  private closeGracefully(last?: Buffer): void {
    this.state = CLOSED;
    this.pending = undefined;
    if (this.socket.destroyed) return;
    if (last === undefined) this.socket.end();
    else this.socket.end(last);
    this.deadlineKind = D_LINGER;
    this.deadlineMs = performance.now() + this.listener.settings.timeouts.lingerMs;
    this.socket.resume();
  }

  // ---- routing -----------------------------------------------------------

  private startExchange(req: RequestHead): void {
    const settings = this.listener.settings;
    this.state = ROUTING;
    this.req = req;
    this.startMs = performance.now();
    // Inactivity per direction (clientMs, serverMs) is the sweep's; a total only when asked for.
    const total = settings.timeouts.requestMs;
    this.deadlineKind = total === undefined ? D_NONE : D_REQUEST;
    this.deadlineMs = this.startMs + (total ?? 0);
    this.clientWaitMs = this.startMs;
    this.serverWaitMs = this.startMs;
    this.retry.attempts = 0;
    this.retry.isRetry = false;
    this.staleRetried = false;
    this.reqDone = req.framing === Framing.None;
    this.reqRemaining = req.contentLength;
    this.reqChunks = undefined;
    if (req.framing === Framing.Chunked) {
      this.reqChunks = new ChunkScanner(settings.limits.maxBodyBytes, settings.limits.maxHeaderBytes);
    }
    this.resStarted = false;
    this.resHeadBuf = undefined;
    this.setCookie = undefined;
    this.upstreamHead = undefined;
    const pool = settings.pool;
    this.pool = pool;
    pool.inFlight++;
    this.countedInFlight = true;
    // The client socket keeps reading: bytes that come before a backend is
    // connected (a body, a pipelined request) are kept in `pending` and pause
    // it then (`onClientData`). Pausing here would cost two epoll_ctl calls
    // per request (libuv re-adds a descriptor it stopped watching), about a
    // third of the proxy's syscalls for a small request.
    const hk = pool.config.hashKey;
    let keyText: string | undefined;
    if (hk?.source === "header") keyText = req.hashValue;
    else if (hk?.source === "cookie") keyText = cookieValue(req.cookie, hk.name!);
    this.hashKey = hash32(keyText ?? this.ip);

    const sticky = settings.sticky;
    if (sticky) {
      const cookieName = settings.listener.stickiness!.cookieName;
      const cookie = StickyRouter.parseCookie(cookieValue(req.cookie, cookieName));
      sticky.route(pool, cookie?.key, true, cookie?.hint).then(
        (d) => {
          if (this.state !== ROUTING) return;
          if (d.cookie)
            this.setCookie = `set-cookie: ${cookieName}=${d.cookie}; Path=/; HttpOnly; SameSite=Lax\r\n`;
          this.connectTo(d.backend);
        },
        () => this.state === ROUTING && this.connectTo(pool.hashPick(this.hashKey)),
      );
      return;
    }
    this.connectTo(pool.pick(this.hashKey));
  }

  private connectTo(b: Backend | undefined): void {
    if (!b) {
      this.failExchange(503, "no backend available");
      return;
    }
    this.backend = b;
    b.outstanding++;
    b.requests++;
    const idle = takeIdle(b, this);
    if (idle) {
      this.upstream = idle;
      this.sendRequest();
    } else {
      this.upstream = new UpstreamConnection(b, this, this.listener.settings.timeouts.connectMs);
    }
  }

  onUpstreamConnect(conn: UpstreamConnection): void {
    if (conn !== this.upstream || this.state !== ROUTING) return;
    this.sendRequest();
  }

  /** The peer is inside the listener's `trustedProxies` (decided once per connection and config). */
  private peerTrusted(): boolean {
    const cidrs = this.listener.settings.listener.trustedProxies;
    if (cidrs.length === 0) return false;
    if (cidrs !== this.trustedFor) {
      this.trustedFor = cidrs;
      this.trusted = isTrustedPeer(cidrs, this.ip);
    }
    return this.trusted;
  }

  /** The head sent to the backend; a latin1 string, which the socket writes without a Buffer of ours. */
  private buildUpstreamHead(req: RequestHead): string {
    // 1.0 clients are forwarded as 1.0 (so the backend never answers chunked to
    // them), asking the backend to keep the connection for reuse.
    let head = `${req.method} ${req.target} HTTP/1.${req.minor}\r\n${req.forwardLines}`;
    // Forwarded headers (README, "Forwarded headers and trust"): a client's
    // are replaced, a trusted proxy's believed (its X-Forwarded-For appended to).
    const trusted = this.peerTrusted();
    const xff = trusted && req.forwardedFor ? `${req.forwardedFor}, ${this.ip}` : this.ip;
    head += `x-forwarded-for: ${xff}\r\n`;
    head += `x-forwarded-proto: ${trusted && req.forwardedProto ? req.forwardedProto : "http"}\r\n`;
    const xfh = trusted && req.forwardedHost ? req.forwardedHost : req.host;
    if (xfh !== undefined) head += `x-forwarded-host: ${xfh}\r\n`;
    if (req.upgrade !== undefined) head += `connection: upgrade\r\nupgrade: ${req.upgrade}\r\n`;
    else if (req.minor === 0) head += "connection: keep-alive\r\n";
    return `${head}\r\n`;
  }

  private sendRequest(): void {
    const up = this.upstream!;
    const req = this.req!;
    this.state = EXCHANGE;
    this.upstreamHead ??= this.buildUpstreamHead(req);
    this.resFraming = Framing.None;
    if (this.reqDone) {
      up.socket.write(this.upstreamHead, "latin1");
      // Pipelined bytes wait until the answer is complete.
      if (this.pending === undefined) this.socket.resume();
      return;
    }
    up.socket.cork();
    up.socket.write(this.upstreamHead, "latin1");
    const body = this.takePending();
    if (body) this.forwardBody(body);
    up.socket.uncork();
    if (
      this.state === EXCHANGE &&
      !this.reqDone &&
      this.pending === undefined &&
      !up.socket.writableNeedDrain
    ) {
      this.socket.resume();
    }
  }

  /** Forwards request body bytes; keeps what follows the body for the next request. */
  private forwardBody(chunk: Buffer): void {
    const up = this.upstream;
    if (!up) return;
    let take = chunk.length;
    if (this.reqChunks) {
      const end = this.reqChunks.feed(chunk, 0, chunk.length);
      if (end === MALFORMED) {
        const tooLarge = this.reqChunks.error === "too large";
        if (this.resStarted) {
          this.abort("bad request body");
          return;
        }
        this.refuse(tooLarge ? 413 : 400, tooLarge ? "body too large" : "bad chunk");
        return;
      }
      if (end !== NEED_MORE) {
        take = end;
        this.reqDone = true;
      }
    } else {
      if (take >= this.reqRemaining) {
        take = this.reqRemaining;
        this.reqDone = true;
      }
      this.reqRemaining -= take;
    }
    const ok = take === 0 || up.socket.write(take === chunk.length ? chunk : chunk.subarray(0, take));
    if (take < chunk.length) {
      // Bytes of a pipelined request: hold them until this exchange ends.
      this.pending = chunk.subarray(take);
      this.socket.pause();
    } else if (!ok) this.socket.pause(); // resumed by the backend socket's 'drain'
  }

  // ---- upstream side -----------------------------------------------------

  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): boolean {
    if (conn !== this.upstream) return false;
    this.serverSeen = true;
    if (this.state === TUNNEL) {
      if (!this.socket.write(chunk)) conn.socket.pause();
    } else if (!this.resStarted || this.resHeadBuf !== undefined) this.readResponseHead(conn, chunk);
    else this.forwardResponseBody(conn, chunk, 0);
    // Whatever a write could not send at once still points into `chunk`.
    return this.socket.writableLength > 0;
  }

  private readResponseHead(conn: UpstreamConnection, chunk: Buffer): void {
    let scanned = this.resHeadBuf === undefined ? 0 : this.resHeadBuf.length;
    let buf = this.resHeadBuf === undefined ? chunk : Buffer.concat([this.resHeadBuf, chunk]);
    for (;;) {
      const headEnd = findHeadEnd(buf, scanned);
      if (headEnd === MALFORMED) {
        this.badUpstream(conn, "bare CR or LF in response head");
        return;
      }
      // The limit holds whether the head came in many reads or ended in the one that crossed it.
      if (headEnd === NEED_MORE ? buf.length > MAX_RESPONSE_HEAD : headEnd > MAX_RESPONSE_HEAD) {
        this.badUpstream(conn, "response head too large");
        return;
      }
      if (headEnd === NEED_MORE) {
        // `chunk` is the connection's read buffer: keep a copy of a partial head.
        this.resHeadBuf = buf === chunk ? Buffer.from(chunk) : buf;
        this.resStarted = true;
        return;
      }
      scanned = 0;
      const req = this.req!;
      const res = parseResponseHead(buf.toString("latin1", 0, headEnd), req.method === "HEAD");
      if (res.error) {
        this.badUpstream(conn, res.reason);
        return;
      }
      if (res.status === 101 && req.upgrade === undefined) {
        // Before anything is sent: the client can still get a clean 502.
        this.badUpstream(conn, "101 without upgrade");
        return;
      }
      this.resStarted = true;
      this.resHeadBuf = undefined;
      if (res.status < 200 && res.status !== 101) {
        // Interim answer (100 Continue, 103 Early Hints): forward, keep
        // reading; never to an HTTP/1.0 client (RFC 9110 15.2).
        if (req.minor === 1) this.socket.write(`${res.forwardHead}\r\n`, "latin1");
        buf = buf.subarray(headEnd);
        if (buf.length === 0) {
          this.resStarted = false;
          return;
        }
        continue;
      }
      this.resStatus = res.status;
      if (res.status >= 500) this.pool.reportFailure(conn.backend);
      else this.pool.reportSuccess(conn.backend);
      if (res.status === 101) {
        this.socket.write(
          `${res.forwardHead}connection: upgrade\r\nupgrade: ${req.upgrade}\r\n\r\n`,
          "latin1",
        );
        this.startTunnel(conn, buf.subarray(headEnd));
        return;
      }
      const closeClient =
        !req.keepAlive ||
        this.draining ||
        this.closeAfter ||
        (this.clientEnded && this.pending === undefined) ||
        !res.reusable ||
        res.framing === Framing.UntilClose;
      if (closeClient) this.closeAfter = true;
      let head = res.forwardHead;
      if (this.setCookie) head += this.setCookie;
      if (closeClient) head += "connection: close\r\n";
      else if (req.minor === 0) head += "connection: keep-alive\r\n";
      head += "\r\n";
      this.resFraming = res.framing;
      this.resRemaining = res.contentLength;
      this.resReusable = res.reusable;
      if (res.framing === Framing.Chunked) this.resChunks ??= new ChunkScanner();
      if (res.framing === Framing.Chunked) this.resChunks!.reset();
      const rest = buf.length - headEnd;
      if (rest === 0 || res.framing === Framing.None) {
        this.socket.write(head, "latin1");
        if (rest > 0) this.resReusable = false; // bytes after a body-less answer: do not reuse
        if (res.framing === Framing.None) {
          this.responseComplete(conn);
          return;
        }
        return;
      }
      this.forwardResponseBody(conn, buf, headEnd, head);
      return;
    }
  }

  /** Forwards body bytes `buf[start..]`, preceded by the response head when given. */
  private forwardResponseBody(conn: UpstreamConnection, buf: Buffer, start: number, head?: string): void {
    let end = buf.length;
    let complete = false;
    switch (this.resFraming) {
      case Framing.Length:
        if (end - start >= this.resRemaining) {
          end = start + this.resRemaining;
          complete = true;
          if (end < buf.length) this.resReusable = false; // extra bytes: the backend is confused
        }
        this.resRemaining -= end - start;
        break;
      case Framing.Chunked: {
        const r = this.resChunks!.feed(buf, start, end);
        if (r === MALFORMED) {
          if (head !== undefined) this.resStarted = false; // nothing sent yet: a clean 502 is possible
          this.badUpstream(conn, "bad chunked response");
          return;
        }
        if (r !== NEED_MORE) {
          if (r < end) this.resReusable = false;
          end = r;
          complete = true;
        }
        break;
      }
      case Framing.UntilClose:
        break;
    }
    let data: Buffer;
    if (head !== undefined) {
      // Head and first body bytes in one buffer: one write, one syscall. (cork
      // and uncork would make it a writev, measured slower for small answers.)
      data = Buffer.allocUnsafe(head.length + end - start);
      data.write(head, 0, "latin1");
      buf.copy(data, head.length, start, end);
    } else data = start === 0 && end === buf.length ? buf : buf.subarray(start, end);
    if (data.length > 0 && !this.socket.write(data)) conn.socket.pause();
    if (complete) this.responseComplete(conn);
  }

  private responseComplete(_conn: UpstreamConnection): void {
    if (!this.reqDone) {
      // The backend answered before reading the whole body (an early 413, say):
      // the connection's framing is lost on both sides.
      this.resReusable = false;
      this.closeAfter = true;
    }
    this.finishExchange();
  }

  private finishExchange(): void {
    const conn = this.upstream;
    this.upstream = undefined;
    if (conn) release(conn, performance.now(), this.resReusable && this.reqDone);
    this.endExchange(this.resStatus);
    if (this.state === CLOSED) return;
    if (this.closeAfter) {
      this.closeGracefully();
      return;
    }
    this.state = READ_HEAD;
    this.deadlineKind = D_IDLE;
    const t = this.listener.settings.timeouts;
    // Draining, after an answer that did not say `connection: close`: the
    // client may already be sending its next request on this connection, so
    // wait briefly for it (it will be answered with close) instead of racing it.
    this.deadlineMs = performance.now() + (this.draining ? Math.min(t.idleMs, DRAIN_GRACE_MS) : t.idleMs);
    if (this.pending !== undefined) {
      this.deadlineKind = D_HEAD;
      this.deadlineMs = performance.now() + t.headMs;
      this.readHead();
    }
    if (this.state !== READ_HEAD) return;
    // Half-closed: no more bytes can come, so a partial head never completes.
    if (this.clientEnded) this.closeGracefully();
    else this.socket.resume();
  }

  /**
   * Bookkeeping at the end of an exchange, whatever its outcome: `status` is
   * counted when above 0; the duration is observed then, or when `cut`.
   */
  private endExchange(status: number, cut = false): void {
    const b = this.backend;
    if (b) {
      b.outstanding--;
      this.backend = undefined;
    }
    if (this.countedInFlight) {
      const pool = this.pool;
      pool.inFlight--;
      if (this.retry.isRetry) pool.retriesInFlight--;
      this.countedInFlight = false;
    }
    this.retry.isRetry = false;
    const stats = this.listener.stats;
    if (status > 0 || cut) {
      if (status > 0) stats.countStatus(status);
      const ms = performance.now() - this.startMs;
      stats.observe(ms);
      if (this.listener.accessLog) {
        const req = this.req;
        this.listener.logger.info(
          {
            listener: this.listener.name,
            client: this.ip,
            method: req?.method,
            target: req?.target,
            status,
            backend: b?.id,
            ms: Math.round(ms * 1000) / 1000,
          },
          "request",
        );
      }
    }
    this.req = undefined;
    this.upstreamHead = undefined;
    this.resStatus = 0;
  }

  onUpstreamDrain(conn: UpstreamConnection): void {
    if (conn !== this.upstream) return;
    this.serverSeen = true;
    if (this.state === TUNNEL || (this.state === EXCHANGE && !this.reqDone && this.pending === undefined)) {
      this.socket.resume();
    }
  }

  onUpstreamEnd(conn: UpstreamConnection): void {
    // In a tunnel the backend's FIN goes on to the client, whose bytes still
    // go the other way; in an exchange it ends the connection.
    if (conn === this.upstream && this.state === TUNNEL) this.socket.end();
    else conn.socket.destroy();
  }

  onUpstreamClose(conn: UpstreamConnection, connected: boolean, error: Error | undefined): void {
    if (conn !== this.upstream || this.state === CLOSED) return;
    this.upstream = undefined;
    const settings = this.listener.settings;
    const pool = this.pool;
    const req = this.req!;
    if (this.state === TUNNEL) {
      this.closeGracefully();
      return;
    }
    if (this.resStarted && this.resHeadBuf === undefined && this.resFraming === Framing.UntilClose) {
      // The body ended with the connection, as its framing said it would.
      this.resReusable = false;
      this.closeAfter = true;
      this.finishExchange();
      return;
    }
    if (this.resStarted) {
      // Mid-answer: the client already has part of it; only a reset tells it.
      this.abort("backend closed mid-answer");
      return;
    }
    const b = conn.backend;
    if (b.outstanding > 0 && this.backend === b) {
      b.outstanding--;
      this.backend = undefined;
    }
    if (!connected) {
      // Connect failure: nothing reached the backend. Retry elsewhere within budget.
      pool.reportFailure(b);
      this.listener.logger.debug({ backend: b.id, err: error?.message }, "connect failed");
      if (
        IDEMPOTENT.has(req.method) &&
        pool.beginRetry(this.retry, settings.retries.attempts, settings.retries.budgetPercent)
      ) {
        this.state = ROUTING;
        const next = pool.pick(this.hashKey, b);
        if (next) this.connectTo(next);
        else this.failExchange(502, "connect failed");
        return;
      }
      this.failExchange(502, "connect failed");
      return;
    }
    if (conn.reused && IDEMPOTENT.has(req.method) && !this.staleRetried && this.canResend()) {
      // The backend closed a keep-alive connection as we reused it: send again on a fresh one.
      this.staleRetried = true;
      this.state = ROUTING;
      this.backend = b;
      b.outstanding++;
      this.upstream = new UpstreamConnection(b, this, settings.timeouts.connectMs);
      return;
    }
    pool.reportFailure(b);
    this.failExchange(502, "backend closed before answering");
  }

  /** The request can be sent again: it had no body (bodies are streamed, not kept). */
  private canResend(): boolean {
    return this.req !== undefined && this.req.framing === Framing.None;
  }

  private badUpstream(conn: UpstreamConnection, reason: BackendError): void {
    this.listener.logger.warn({ backend: conn.backend.id, reason }, "bad response from backend");
    this.pool.reportFailure(conn.backend);
    this.upstream = undefined;
    conn.destroy();
    if (this.resStarted && this.resHeadBuf === undefined) {
      this.abort("bad response body");
      return;
    }
    this.failExchange(502, reason);
  }

  /** Ends an exchange that failed on the backend's side with an answer of the proxy's own, then closes. */
  private failExchange(status: number, reason: BackendError): void {
    this.listener.stats.countBackendError(reason);
    this.answerOwn(status);
  }

  /** Ends the exchange in flight with an error answer of the proxy's own, then closes. */
  private answerOwn(status: number): void {
    this.resStatus = status;
    if (this.upstream) {
      this.upstream.destroy();
      this.upstream = undefined;
    }
    this.endExchange(status);
    this.closeGracefully(status === 413 ? OVERSIZE_BODY : errorResponse(status));
  }

  /**
   * Resets both sides (an answer was cut off half way). Counted as aborted,
   * not under the status its head carried.
   */
  private abort(reason: Abort): void {
    this.listener.stats.countAborted(reason);
    if (this.upstream) {
      this.upstream.destroy();
      this.upstream = undefined;
    }
    this.endExchange(0, true);
    this.state = CLOSED;
    this.socket.destroy();
  }

  private startTunnel(conn: UpstreamConnection, rest: Buffer): void {
    this.state = TUNNEL;
    this.deadlineKind = D_NONE;
    this.clientWaitMs = performance.now();
    this.endExchange(101);
    this.backend = undefined;
    if (rest.length > 0) this.socket.write(rest);
    const pending = this.takePending();
    if (pending) conn.socket.write(pending);
    this.socket.resume();
  }

  // ---- timeouts and drain ------------------------------------------------

  sweep(nowMs: number): void {
    if (this.state === CLOSED) {
      if (this.deadlineKind === D_LINGER && nowMs >= this.deadlineMs) this.socket.destroy();
      return;
    }
    if ((this.state === EXCHANGE || this.state === TUNNEL) && this.inactive(nowMs)) return;
    if (this.deadlineKind === D_NONE || nowMs < this.deadlineMs) return;
    switch (this.deadlineKind) {
      case D_IDLE:
        this.state = CLOSED;
        this.socket.destroy();
        return;
      case D_HEAD:
        this.refuse(408, "head timeout");
        return;
      case D_REQUEST:
        if (this.resStarted) this.abort("total timeout");
        else this.failExchange(504, "total timeout");
        return;
    }
  }

  /**
   * Inactivity timeouts, per direction: each counts only while the exchange
   * waits on that side (a side paused by backpressure from the other is not
   * the one waited on). True when it closed the connection.
   */
  private inactive(nowMs: number): boolean {
    const t = this.listener.settings.timeouts;
    const client = this.clientSeen;
    const server = this.serverSeen;
    this.clientSeen = false;
    this.serverSeen = false;
    if (this.state === TUNNEL) {
      if (client || server) this.clientWaitMs = nowMs;
      else if (nowMs - this.clientWaitMs >= t.tunnelMs) {
        this.listener.stats.countAborted("tunnel idle");
        if (this.upstream) {
          this.upstream.destroy();
          this.upstream = undefined;
        }
        this.closeGracefully();
        return true;
      }
      return false;
    }
    const up = this.upstream;
    // Waiting on the client: for request body bytes it is allowed to send, or to take answer bytes.
    const onClient = (!this.reqDone && !this.socket.isPaused()) || this.socket.writableNeedDrain;
    if (client || !onClient) this.clientWaitMs = nowMs;
    else if (nowMs - this.clientWaitMs >= t.clientMs) {
      if (this.resStarted) this.abort("client timeout");
      else this.refuse(408, "body timeout");
      return true;
    }
    // Waiting on the backend: for answer bytes once it may answer, or to take request bytes.
    const onServer =
      up?.connected &&
      (((this.reqDone || this.resStarted) && !up.socket.isPaused()) || up.socket.writableNeedDrain);
    if (server || !onServer) this.serverWaitMs = nowMs;
    else if (nowMs - this.serverWaitMs >= t.serverMs) {
      if (this.resStarted && this.resHeadBuf === undefined) this.abort("server timeout");
      else this.failExchange(504, "server timeout");
      return true;
    }
    return false;
  }

  drain(): void {
    this.draining = true;
    const idle = this.state === READ_HEAD && (this.pending === undefined || this.pending.length === 0);
    if (idle) this.closeGracefully();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
