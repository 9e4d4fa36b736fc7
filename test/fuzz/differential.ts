/**
 * The differential check of the proxy's framing against node's own strict
 * parser (llhttp, through node:http on a real backend).
 *
 * A seeded generator makes mutated requests from valid ones (bytes inserted,
 * deleted and replaced in heads; Content-Length and Transfer-Encoding
 * swapped; case and whitespace changed; headers duplicated; chunk sizes
 * edited; pipelined pairs). For each, the proxy's own parse is computed by
 * calling its parser directly (`parseRequestHead`, `findHeadEnd`,
 * `ChunkScanner`, read as the listener reads them): which requests it
 * forwards, with which method, target, headers and body, and how the
 * connection ends. The requests it forwards are then sent through a real
 * proxy to a node:http backend that answers each request it read in full
 * with what it saw; every answer must be the proxy's view of that request,
 * and the backend must never read more requests than the proxy accepted
 * (an extra request is a smuggled one). Refused requests are checked by the
 * parser alone, and a sample of them over the socket too.
 *
 * Used by `test/unit/proxy/differential.test.ts` (10,000 requests in every
 * `npm test`) and `npm run fuzz:proxy` (as many as asked).
 */
import { createServer, METHODS, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import { type FleetConfig, parseFleetConfig } from "../../lib/core/config";
import {
  ChunkScanner,
  Framing,
  findHeadEnd,
  MALFORMED,
  NEED_MORE,
  parseRequestHead,
  type RequestHead,
} from "../../proxy/http1";
import { ProxyServer } from "../../proxy/server";

// ---- the generator ---------------------------------------------------------

/** mulberry32: a small, fast, seeded generator of floats in [0, 1). */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rand, n: number): number => Math.floor(r() * n);

function body(r: Rand, max: number): string {
  let s = "";
  const n = int(r, max);
  for (let i = 0; i < n; i++)
    s += String.fromCharCode(pick(r, [0x61, 0x62, 0x30, 0x0d, 0x0a, 0x20, 0x47, 0xff]));
  return s;
}

function chunked(r: Rand): string {
  let out = "";
  const n = int(r, 3);
  for (let i = 0; i < n; i++) {
    const data = body(r, 12) || "x";
    const ext = pick(r, ["", "", ";a=b", ";q", ';n="v w"']);
    out += `${data.length.toString(16)}${ext}\r\n${data}\r\n`;
  }
  return `${out}0\r\n${pick(r, ["", "", "X-Sum: 1\r\n"])}\r\n`;
}

const TEMPLATES: readonly ((r: Rand) => string)[] = [
  (r) =>
    `GET /p/${int(r, 100)}?q=${int(r, 9)} HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: fuzz\r\n\r\n`,
  (r) => {
    const b = body(r, 20);
    return `POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: ${b.length}\r\n\r\n${b}`;
  },
  (r) =>
    `POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Id: ${int(r, 1000)}\r\n\r\n${chunked(r)}`,
  () => "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
  (r) => {
    const b = body(r, 10);
    return `PUT /v HTTP/1.0\r\nContent-Length: ${b.length}\r\nConnection: keep-alive\r\n\r\n${b}`;
  },
  () => "GET http://b.example/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n",
  () => "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
  () => "HEAD /h HTTP/1.1\r\nHost: a\r\nCookie: s=1; t=2\r\n\r\n",
  () =>
    "DELETE /d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\r\n",
];

/** Bytes that tend to matter to a parser. */
const NOISE = [
  "\r",
  "\n",
  "\r\n",
  " ",
  "\t",
  ":",
  ";",
  ",",
  "\0",
  "\x0b",
  "\x7f",
  "\xff",
  '"',
  "a",
  "0",
  "f",
  "-",
  "/",
];
/** Header lines inserted by the mutator. */
const EXTRA_HEADERS = [
  "Transfer-Encoding: chunked",
  "Content-Length: 5",
  "Content-Length: 0",
  "Connection: content-length",
  "Connection: close",
  "Host: b",
  "X-Forwarded-For: 10.0.0.1",
  "Transfer-Encoding: identity",
  "TE: trailers",
  "X-A: 1",
];

/** One mutation of `s`, somewhere in its head mostly. */
function mutate(r: Rand, s: string): string {
  const headEnd = s.indexOf("\r\n\r\n");
  const inHead = () => int(r, headEnd > 0 ? headEnd + 2 : s.length + 1);
  const anywhere = () => int(r, s.length + 1);
  switch (int(r, 10)) {
    case 0: {
      const at = r() < 0.8 ? inHead() : anywhere();
      return s.slice(0, at) + pick(r, NOISE) + s.slice(at);
    }
    case 1: {
      const at = r() < 0.8 ? inHead() : anywhere();
      return s.slice(0, at) + s.slice(at + 1);
    }
    case 2: {
      const at = r() < 0.8 ? inHead() : anywhere();
      return s.slice(0, at) + pick(r, NOISE) + s.slice(at + 1);
    }
    case 3: // Content-Length and Transfer-Encoding swapped
      return /content-length: \d+/i.test(s)
        ? s.replace(/content-length: \d+/i, "Transfer-Encoding: chunked")
        : s.replace(/transfer-encoding: chunked/i, `Content-Length: ${int(r, 40)}`);
    case 4: {
      // a header name's case
      const lines = s.split("\r\n");
      const i = 1 + int(r, Math.max(1, lines.length - 2));
      const line = lines[i] ?? "";
      lines[i] = r() < 0.5 ? line.toUpperCase() : line.toLowerCase();
      return lines.join("\r\n");
    }
    case 5: {
      // whitespace around a colon
      const colon = s.indexOf(":", s.indexOf("\r\n"));
      if (colon < 0 || colon > headEnd) return s;
      const ws = pick(r, [" ", "\t", "  "]);
      return r() < 0.5
        ? s.slice(0, colon) + ws + s.slice(colon)
        : s.slice(0, colon + 1) + ws + s.slice(colon + 1);
    }
    case 6: {
      // a header line repeated
      const lines = s.slice(0, headEnd).split("\r\n");
      if (lines.length < 2) return s;
      const i = 1 + int(r, lines.length - 1);
      lines.splice(i, 0, lines[i]!);
      return lines.join("\r\n") + s.slice(headEnd);
    }
    case 7: {
      // a header inserted
      const lines = s.slice(0, headEnd).split("\r\n");
      lines.splice(1 + int(r, lines.length), 0, pick(r, EXTRA_HEADERS));
      return lines.join("\r\n") + s.slice(headEnd);
    }
    case 8: {
      // a chunk size line edited: any of them, its size or its extensions
      if (headEnd < 0) return s;
      const lines = [...s.slice(headEnd + 4).matchAll(/(?:^|\r\n)([0-9a-fA-F]+(?:;[^\r\n]*)?)\r\n/g)];
      if (lines.length === 0) return s;
      const m = pick(r, lines);
      const line = m[1]!;
      const at = headEnd + 4 + m.index + m[0].indexOf(line);
      const size = /^[0-9a-fA-F]+/.exec(line)![0];
      const edit = pick(r, [
        "ffffffffffffffff",
        `0x${size}`,
        `-${size}`,
        ` ${line}`,
        `${line} `,
        `${size}\t`,
        String(int(r, 20)),
        "0",
        `${size};a b`,
        `${size} ;a=b`,
        `${size}; a=b`,
        `${size};a=b `,
        `${size};a="b`,
        `${size};=b`,
        `${size};a=`,
        `${size};a="b\\"c";d`,
        `${size};\xff`,
        `${size.toUpperCase()};A=B`,
        `00${line}`,
      ]);
      return s.slice(0, at) + edit + s.slice(at + line.length);
    }
    default: // a pipelined second request
      return s + pick(r, TEMPLATES)(r);
  }
}

/** The `n`-th request of run `seed`: the same bytes every time. */
export function generate(seed: number, n: number): string {
  const r = random((seed * 0x9e3779b1 + n) >>> 0);
  let s = pick(r, TEMPLATES)(r);
  const mutations = int(r, 4); // 0 to 3; a quarter stay valid
  for (let i = 0; i < mutations; i++) s = mutate(r, s);
  return s;
}

// ---- the proxy's own view ----------------------------------------------------

/** What a backend should see of one forwarded request. */
export interface Seen {
  readonly method: string;
  readonly url: string;
  readonly version: string;
  /** Name, value, name, value... as node's `rawHeaders` gives them. */
  readonly headers: readonly string[];
  /** The decoded body (latin1). */
  readonly body: string;
  readonly trailers: readonly string[];
}

export type End =
  /** The proxy answers this status and closes (the request was refused). */
  | { readonly kind: "refused"; readonly status: number }
  /** The last request asked to close: the proxy closes after answering it. */
  | { readonly kind: "closed" }
  /** All bytes were requests the proxy answered; the connection stays open. */
  | { readonly kind: "open" }
  /** What is left is a request not yet complete: the proxy waits for more. */
  | { readonly kind: "incomplete" }
  /** A method node does not know: the backend refuses it (400) and closes (llhttp's list is fixed). */
  | { readonly kind: "foreign-method" }
  /** A protocol upgrade: not a framing question, not sent. */
  | { readonly kind: "upgrade" };

export interface Prediction {
  /** Requests the proxy forwards and the backend reads in full, in order. */
  readonly accepted: readonly Seen[];
  readonly end: End;
}

export interface Limits {
  readonly maxHeaderBytes: number;
  readonly maxBodyBytes: number;
}

function trimOws(s: string): string {
  return s.replace(/^[ \t]+|[ \t]+$/g, "");
}

/** The headers the proxy sends for `req` from a peer at 127.0.0.1 (no trusted proxies). */
function forwardedHeaders(req: RequestHead): string[] {
  const out: string[] = [];
  for (const line of req.forwardLines.split("\r\n")) {
    if (!line) continue;
    const colon = line.indexOf(":");
    out.push(line.slice(0, colon), trimOws(line.slice(colon + 1)));
  }
  out.push("x-forwarded-for", "127.0.0.1", "x-forwarded-proto", "http");
  if (req.host !== undefined) out.push("x-forwarded-host", req.host);
  if (req.minor === 0) out.push("connection", "keep-alive");
  return out;
}

/** Decodes a chunked body the scanner accepted: its data and its trailer fields. */
function decodeChunked(text: string): { body: string; trailers: string[] } {
  let i = 0;
  let body = "";
  for (;;) {
    const eol = text.indexOf("\r\n", i);
    const size = Number.parseInt(text.slice(i, eol), 16);
    i = eol + 2;
    if (size === 0) break;
    body += text.slice(i, i + size);
    i += size + 2;
  }
  const trailers: string[] = [];
  for (;;) {
    const eol = text.indexOf("\r\n", i);
    if (eol === i) break;
    const line = text.slice(i, eol);
    const colon = line.indexOf(":");
    trailers.push(line.slice(0, colon), trimOws(line.slice(colon + 1)));
    i = eol + 2;
  }
  return { body, trailers };
}

const KNOWN_METHODS = new Set(METHODS);

/** What the proxy does with `bytes` sent on a fresh connection, read as `http-listener.ts` reads them. */
export function predict(bytes: string, limits: Limits): Prediction {
  const accepted: Seen[] = [];
  let buf = Buffer.from(bytes, "latin1");
  for (;;) {
    let skip = 0;
    while (skip + 1 < buf.length && buf[skip] === 13 && buf[skip + 1] === 10) skip += 2;
    buf = buf.subarray(skip);
    if (buf.length === 0) return { accepted, end: { kind: "open" } };
    const headEnd = findHeadEnd(buf);
    if (headEnd === MALFORMED) return { accepted, end: { kind: "refused", status: 400 } };
    if (headEnd === NEED_MORE) {
      if (buf.length > limits.maxHeaderBytes) return { accepted, end: { kind: "refused", status: 431 } };
      return { accepted, end: { kind: "incomplete" } };
    }
    if (headEnd > limits.maxHeaderBytes) return { accepted, end: { kind: "refused", status: 431 } };
    const req = parseRequestHead(buf.toString("latin1", 0, headEnd));
    if (req.error) return { accepted, end: { kind: "refused", status: req.status } };
    if (req.method === "CONNECT") return { accepted, end: { kind: "refused", status: 501 } };
    if (req.framing === Framing.Length && req.contentLength > limits.maxBodyBytes)
      return { accepted, end: { kind: "refused", status: 413 } };
    if (req.upgrade !== undefined) return { accepted, end: { kind: "upgrade" } };
    let end = headEnd;
    let body = "";
    let trailers: string[] = [];
    if (req.framing === Framing.Length) {
      if (buf.length < headEnd + req.contentLength) return { accepted, end: { kind: "incomplete" } };
      end = headEnd + req.contentLength;
      body = buf.toString("latin1", headEnd, end);
    } else if (req.framing === Framing.Chunked) {
      const scanner = new ChunkScanner(limits.maxBodyBytes, limits.maxHeaderBytes);
      const r = scanner.feed(buf, headEnd, buf.length);
      if (r === MALFORMED)
        return { accepted, end: { kind: "refused", status: scanner.error === "too large" ? 413 : 400 } };
      if (r === NEED_MORE) return { accepted, end: { kind: "incomplete" } };
      end = r;
      ({ body, trailers } = decodeChunked(buf.toString("latin1", headEnd, end)));
    }
    // llhttp knows a fixed list of methods; the proxy forwards any token (RFC 9110 9.1).
    if (!KNOWN_METHODS.has(req.method)) return { accepted, end: { kind: "foreign-method" } };
    accepted.push({
      method: req.method,
      url: req.target,
      version: `1.${req.minor}`,
      headers: forwardedHeaders(req),
      body,
      trailers,
    });
    if (!req.keepAlive) return { accepted, end: { kind: "closed" } };
    buf = buf.subarray(end);
  }
}

// ---- the run ---------------------------------------------------------------

export interface Mismatch {
  readonly n: number;
  /** The request bytes, as a JSON string (every byte visible). */
  readonly bytes: string;
  readonly expected: unknown;
  readonly got: unknown;
}

export interface Report {
  readonly check: "fuzz-proxy";
  readonly cases: number;
  /** Cases of which the proxy forwarded at least one request. */
  readonly accepted: number;
  /** Cases that ended refused with a status of the proxy's own. */
  readonly refused: number;
  /** Cases sent over sockets. */
  readonly sent: number;
  /** Requests the backend read in full, and the proxy's own count of them. */
  readonly backendRequests: number;
  readonly predictedRequests: number;
  readonly mismatches: number;
  readonly seed: number;
}

export interface RunOptions {
  readonly cases: number;
  readonly seed: number;
  /** Keep-alive client connections in parallel. */
  readonly parallel?: number;
  /** Every how many-th refused case goes over the socket as well. */
  readonly refusedSample?: number;
  /** At most this many mismatches are kept (all are counted). */
  readonly keepMismatches?: number;
}

const LIMITS: Limits = { maxHeaderBytes: 16 * 1024, maxBodyBytes: 10 * 1024 * 1024 };

/** A node:http backend that answers every request it read in full with what it saw (in a header: HEAD too). */
async function startSeeingBackend(): Promise<{ server: Server; port: number; requests: () => number }> {
  let requests = 0;
  const server = createServer({ maxHeaderSize: 64 * 1024, keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      requests++;
      const seen: Seen = {
        method: req.method ?? "",
        url: req.url ?? "",
        version: req.httpVersion,
        headers: req.rawHeaders,
        body: Buffer.concat(chunks).toString("latin1"),
        trailers: req.rawTrailers,
      };
      res.setHeader("x-seen", Buffer.from(JSON.stringify(seen), "utf8").toString("base64"));
      res.setHeader("content-length", "0");
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port, requests: () => requests };
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
}

/** Reads answers off a client socket: heads, then Content-Length bodies (or to the close). */
class AnswerReader {
  private buf = "";
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf += d.toString("latin1");
      this.wake?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on("error", () => {});
  }

  /** The next answer, or "closed" when the connection ended first, or "hang" after `waitMs`. */
  async next(waitMs: number): Promise<Answer | "closed" | "hang"> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const a = this.take();
      if (a) return a;
      if (this.closed) return "closed";
      const left = deadline - Date.now();
      if (left <= 0) return "hang";
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** The connection closes with no further bytes (or "hang"). */
  async closes(waitMs: number): Promise<boolean | "hang"> {
    const deadline = Date.now() + waitMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return "hang";
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.buf.length === 0;
  }

  private take(): Answer | undefined {
    const end = this.buf.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const lines = this.buf.slice(0, end).split("\r\n");
    const status = Number(lines[0]!.slice(9, 12));
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(":");
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const cl = headers["content-length"];
    if (cl === undefined) {
      // Framed by the close (node's own 400): wait for it.
      if (!this.closed) return undefined;
      this.buf = "";
      return { status, headers };
    }
    if (this.buf.length < end + 4 + Number(cl)) return undefined;
    this.buf = this.buf.slice(end + 4 + Number(cl));
    return { status, headers };
  }
}

const WAIT_MS = 5000;

/** Runs `cases` generated requests of `seed` through a proxy to a node:http backend. */
export async function runDifferential(o: RunOptions): Promise<{ report: Report; mismatches: Mismatch[] }> {
  const parallel = o.parallel ?? 16;
  const sample = o.refusedSample ?? 10;
  const keep = o.keepMismatches ?? 20;
  const backend = await startSeeingBackend();
  const config: FleetConfig = parseFleetConfig({
    listeners: [{ name: "web", protocol: "http", port: 8080, bind: "127.0.0.1", pool: "web" }],
    pools: {
      web: {
        backends: [{ host: "127.0.0.1", port: backend.port }],
        healthCheck: { intervalMs: 60_000, timeoutMs: 1000 },
      },
    },
    timeouts: { headMs: 60_000, requestMs: 60_000 },
    limits: LIMITS,
  });
  const proxy = await ProxyServer.start({ config, healthChecks: false, portOverrides: { web: 0 } });
  const port = proxy.port("web");
  const mismatches: Mismatch[] = [];
  let mismatchCount = 0;
  let accepted = 0;
  let refused = 0;
  let sent = 0;
  let predictedRequests = 0;
  let refusedSeen = 0;
  const fail = (n: number, bytes: string, expected: unknown, got: unknown) => {
    mismatchCount++;
    if (mismatches.length < keep) mismatches.push({ n, bytes: JSON.stringify(bytes), expected, got });
  };

  // Each worker keeps one connection while the proxy keeps it open.
  let next = 0;
  const worker = async () => {
    let reader: AnswerReader | undefined;
    const open = async (): Promise<AnswerReader> => {
      const s = connect(port, "127.0.0.1");
      await new Promise<void>((resolve, reject) => {
        s.once("connect", () => resolve());
        s.once("error", reject);
      });
      return new AnswerReader(s);
    };
    for (;;) {
      const n = next++;
      if (n >= o.cases) break;
      const bytes = generate(o.seed, n);
      const p = predict(bytes, LIMITS);
      if (p.accepted.length > 0) accepted++;
      if (p.end.kind === "refused") refused++;
      if (p.end.kind === "upgrade") continue;
      const refusedOnly = p.accepted.length === 0 && p.end.kind === "refused";
      if (refusedOnly && refusedSeen++ % sample !== 0) continue;
      sent++;
      predictedRequests += p.accepted.length;
      if (!reader || reader.socket.destroyed) reader = await open();
      reader.socket.write(bytes, "latin1");
      let broken = false;
      for (const want of p.accepted) {
        const a = await reader.next(WAIT_MS);
        const seen =
          typeof a === "object" && a.headers["x-seen"]
            ? (JSON.parse(Buffer.from(a.headers["x-seen"], "base64").toString("utf8")) as Seen)
            : undefined;
        if (typeof a !== "object" || a.status !== 200 || JSON.stringify(seen) !== JSON.stringify(want)) {
          fail(n, bytes, want, typeof a === "object" ? (seen ?? { status: a.status }) : a);
          broken = true;
          break;
        }
      }
      if (!broken) {
        const e = p.end;
        if (e.kind === "refused" || e.kind === "foreign-method") {
          const status = e.kind === "refused" ? e.status : 400;
          const a = await reader.next(WAIT_MS);
          if (typeof a !== "object" || a.status !== status || a.headers["x-seen"] !== undefined) {
            fail(n, bytes, { status, closed: true }, a);
            broken = true;
          } else if ((await reader.closes(WAIT_MS)) !== true) {
            fail(n, bytes, { status, closed: true }, "more bytes or no close");
            broken = true;
          }
        } else if (e.kind === "closed") {
          if ((await reader.closes(WAIT_MS)) !== true) {
            fail(n, bytes, { closed: true }, "more bytes or no close");
            broken = true;
          }
        }
      }
      // A connection left with a partial request, or one that went wrong, is not reused.
      if (broken || p.end.kind !== "open") {
        reader.socket.destroy();
        reader = undefined;
      }
    }
    reader?.socket.destroy();
  };
  try {
    await Promise.all(Array.from({ length: parallel }, () => worker()));
  } finally {
    await proxy.close();
    backend.server.closeAllConnections();
    await new Promise<void>((r) => backend.server.close(() => r()));
  }
  const backendRequests = backend.requests();
  if (backendRequests !== predictedRequests) {
    fail(-1, "", { backendRequests: predictedRequests }, { backendRequests });
  }
  return {
    report: {
      check: "fuzz-proxy",
      cases: o.cases,
      accepted,
      refused,
      sent,
      backendRequests,
      predictedRequests,
      mismatches: mismatchCount,
      seed: o.seed,
    },
    mismatches,
  };
}
