/**
 * HTTP/1.1 message framing for the proxy: strict parsing of request and
 * response heads, and a chunked-body scanner that validates and finds the end
 * of a body without copying it.
 *
 * The proxy parses only heads; bodies are forwarded as the bytes that came in.
 * Strictness is the defence against request smuggling (RFC 9112 section 11.2):
 * whatever two parsers could read differently is refused with 400 and the
 * connection closed (502 for a backend's answer), rather than "repaired".
 * Refused:
 * - more than one Content-Length, or one that is not all digits;
 * - Transfer-Encoding together with Content-Length (RFC 9112 6.1 allows a
 *   proxy to refuse), or any Transfer-Encoding other than exactly `chunked`;
 * - an HTAB after a Content-Length or Transfer-Encoding value (OWS to RFC
 *   9110, but llhttp refuses it);
 * - obsolete line folding (a line starting with SP or HTAB; RFC 9112 5.2);
 * - a header name that is not a token, whitespace before the colon (RFC 9112
 *   5.1), a control byte (other than HTAB) in a value;
 * - a bare CR or bare LF anywhere in a head, refused as soon as it arrives
 *   (`findHeadEnd`), not when the head timeout ends a wait for CRLFCRLF;
 * - a request target with a byte outside visible ASCII (RFC 3986), or of no
 *   form but origin-form (`/...`), absolute-form http(s) without userinfo,
 *   or `*` for OPTIONS (RFC 9112 3.2);
 * - chunk sizes that are not hex, longer than 13 hex digits (2^52, the safe
 *   integer range), or chunk data not followed by CRLF; chunk extensions
 *   other than `;token[=token|quoted-string]`, or whitespace in a size line
 *   (RFC 9112 7.1.1 allows it; llhttp does not);
 * - a trailer line that is not a field (`token ":" value`), or a trailer
 *   carrying Content-Length, Transfer-Encoding or Host (RFC 9110 6.5.1).
 * Rewritten: an absolute-form target goes on as origin-form with Host from
 * its authority (RFC 9112 3.2.2); a backend's repeated identical
 * Content-Length goes on once.
 * Removed from every request, whatever the peer: X-Real-IP, Forwarded,
 * X-Forwarded-Port and the X-Forwarded-For/-Proto/-Host lines (the listener
 * sets its own, believing a trusted proxy's values; README, "Forwarded
 * headers and trust").
 * Not refused but never honoured: `Connection` naming Content-Length,
 * Transfer-Encoding or Host (either direction). Those are not removable; the
 * message is forwarded with the framing it was parsed with.
 *
 * The hostile corpus (test/unit/proxy/hostile-corpus.ts) holds a case for
 * each of these; the differential check (test/fuzz/differential.ts) holds
 * this parser to llhttp's reading of whatever it accepts.
 */

/** RFC 9110 5.6.2 token characters. */
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * One pass over a whole head: a control byte other than HTAB, CR and LF
 * (RFC 9110 5.5), a CR not followed by LF, or an LF not preceded by CR. After
 * it, splitting on CRLF is unambiguous and values need no check of their own.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control bytes is the point
const BAD_HEAD_RE = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
/**
 * Lengths of the header names the parsers act on (host 4, te 2, cookie 6,
 * trailer/upgrade 7, x-real-ip/forwarded 9, connection/keep-alive 10,
 * content-length 14, x-forwarded-for 15, proxy-connection/x-forwarded-host/
 * x-forwarded-port 16, transfer-encoding/x-forwarded-proto 17,
 * proxy-authenticate 18, proxy-authorization 19): other names are forwarded
 * without lower-casing.
 */
const NOTABLE_LENGTH = (() => {
  const a = new Uint8Array(64);
  for (const n of [2, 4, 6, 7, 9, 10, 14, 15, 16, 17, 18, 19]) a[n] = 1;
  return a;
})();
/** The forwarded headers the proxy sets or removes; their underscore spellings are removed too. */
const FORWARDED_NAMES = new Set([
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-port",
  "x-real-ip",
]);
/** method SP request-target SP HTTP/1.x; the target is visible ASCII (RFC 3986; llhttp refuses other bytes). */
const REQUEST_LINE_RE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control bytes is the point (RFC 9110 5.5)
const STATUS_LINE_RE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;
const DIGITS_RE = /^\d{1,15}$/;
/**
 * Absolute-form http(s) target (RFC 9112 3.2.2): the authority (a reg-name or
 * an IP literal, an optional port; no userinfo, RFC 9110 4.2.4), then the
 * path and query. Only non-origin-form targets meet it.
 */
const ABSOLUTE_RE =
  /^https?:\/\/((?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::\d{0,5})?)([/?].*)?$/i;

export const CRLFCRLF = Buffer.from("\r\n\r\n", "latin1");

/**
 * Where a head ends in `buf`: the offset just past its blank line, NEED_MORE,
 * or MALFORMED when an LF without its CR, or a CR without its LF, has come
 * (RFC 9112 2.2 lets a recipient take a bare LF as a line end; this proxy
 * never does, and a head ended by LF LF would otherwise wait for a CRLFCRLF
 * that never comes, until the head timeout). `from` is how many bytes of
 * `buf` an earlier call already saw, so a head sent a byte at a time is
 * scanned once, not once per byte. Bare CR or LF before a CRLFCRLF is left to
 * the head parser's byte check.
 */
export function findHeadEnd(buf: Buffer, from = 0): number {
  const end = buf.indexOf(CRLFCRLF, from > 3 ? from - 3 : 0);
  if (end >= 0) return end + 4;
  // The byte before `from` may be a CR whose LF has just come.
  const start = from > 0 ? from - 1 : 0;
  for (let i = buf.indexOf(10, start); i >= 0; i = buf.indexOf(10, i + 1)) {
    if (i === 0 || buf[i - 1] !== 13) return MALFORMED;
  }
  for (let i = buf.indexOf(13, start); i >= 0 && i + 1 < buf.length; i = buf.indexOf(13, i + 1)) {
    if (buf[i + 1] !== 10) return MALFORMED;
  }
  return NEED_MORE;
}

/** Body framing of a message. */
export const Framing = {
  None: 0,
  Length: 1,
  Chunked: 2,
  /** Response body delimited by the connection closing (RFC 9112 6.3 rule 8). */
  UntilClose: 3,
} as const;
export type Framing = (typeof Framing)[keyof typeof Framing];

/** Why a head (a request's or an answer's) was refused: a closed set, used as metric labels. */
export const HEAD_FAULTS = [
  "no request line",
  "bad request line",
  "bad request target",
  "asterisk-form other than OPTIONS",
  "HTTP version not supported",
  "bad status line",
  "bad header line",
  "bad header name",
  "bad header bytes",
  "obs-fold",
  "missing host",
  "repeated host",
  "bad content-length",
  "repeated content-length",
  "repeated transfer-encoding",
  "transfer-encoding other than chunked",
  "transfer-encoding with content-length",
  "transfer-encoding in HTTP/1.0",
  "bad upgrade",
] as const;
export type HeadFault = (typeof HEAD_FAULTS)[number];

/** Why a head was refused, with the status to answer. */
export interface HeadError {
  readonly error: true;
  readonly status: 400 | 431 | 501 | 502 | 505;
  readonly reason: HeadFault;
}

function fail(status: HeadError["status"], reason: HeadFault): HeadError {
  return { error: true, status, reason };
}

/** Headers removed when forwarding, in either direction (RFC 9110 7.6.1 and RFC 2616 13.5.1). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Headers `Connection` cannot remove: the message is forwarded with the
 * framing it was parsed with (dropping Content-Length while forwarding the
 * body turns the body into a second request), and with its Host.
 */
const FRAMING_NAMES = new Set(["content-length", "transfer-encoding", "host"]);

export interface RequestHead {
  readonly error: false;
  readonly method: string;
  readonly target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minor: number;
  readonly framing: Framing;
  readonly contentLength: number;
  readonly host: string | undefined;
  /** The client asked to keep the connection open (1.1 default; 1.0 with `keep-alive`). */
  readonly keepAlive: boolean;
  /** The `Upgrade` value when the client asked for a protocol switch (WebSocket). */
  readonly upgrade: string | undefined;
  readonly cookie: string | undefined;
  /**
   * The client's X-Forwarded-For, -Proto and -Host (repeated lines joined):
   * used only when the peer is a trusted proxy, replaced otherwise.
   */
  readonly forwardedFor: string | undefined;
  readonly forwardedProto: string | undefined;
  readonly forwardedHost: string | undefined;
  /** Value of the header named by `hashHeader`, when asked for. */
  readonly hashValue: string | undefined;
  /**
   * Header lines to forward, each ending in CRLF: hop-by-hop removed, and
   * every forwarded header a client might spoof (X-Forwarded-For/-Proto/
   * -Host/-Port, X-Real-IP, Forwarded), which the proxy sets itself.
   */
  readonly forwardLines: string;
}

/** Removes leading and trailing SP and HTAB only (String.trim also eats 0xA0, a legal obs-text byte). */
function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * An HTAB in the whitespace after a value. RFC 9110 5.6.3 counts it as OWS,
 * but llhttp refuses it after Content-Length and Transfer-Encoding, so a
 * backend or client on node would read such a message otherwise: refused.
 */
function tabAfter(raw: string): boolean {
  for (let i = raw.length - 1; i >= 0; i--) {
    const c = raw.charCodeAt(i);
    if (c === 9) return true;
    if (c !== 32) return false;
  }
  return false;
}

function hasToken(list: string, token: string): boolean {
  for (const part of list.split(",")) if (trimOws(part).toLowerCase() === token) return true;
  return false;
}

/**
 * Parses a request head (`head` is the latin1 text up to and including the
 * blank line). `hashHeader` is a lower-case header name whose value is
 * returned in `hashValue` (consistent hashing on a header).
 */
export function parseRequestHead(head: string, hashHeader?: string): RequestHead | HeadError {
  // The head ends in CRLFCRLF; lines are separated by CRLF. A bare LF or CR
  // stays inside a line and is caught by the line's checks below.
  const end = head.length - 4;
  let lineEnd = head.indexOf("\r\n");
  if (lineEnd < 0 || lineEnd > end) return fail(400, "no request line");
  if (BAD_HEAD_RE.test(head)) return fail(400, "bad header bytes");
  const m = REQUEST_LINE_RE.exec(head.slice(0, lineEnd));
  if (!m) {
    const version = /HTTP\/(\d+\.\d+)$/.exec(head.slice(0, lineEnd));
    if (version && version[1] !== "1.0" && version[1] !== "1.1")
      return fail(505, "HTTP version not supported");
    return fail(400, "bad request line");
  }
  const method = m[1]!;
  let target = m[2]!;
  const minor = m[3] === "1" ? 1 : 0;
  // The authority of an absolute-form target, which replaces Host (below).
  let authority: string | undefined;
  if (target.charCodeAt(0) !== 0x2f /* / */ && method !== "CONNECT") {
    // CONNECT (authority-form) is answered 501 by the listener.
    if (target === "*") {
      if (method !== "OPTIONS") return fail(400, "asterisk-form other than OPTIONS");
    } else {
      // RFC 9112 3.2.2: a server must ignore Host when the target is
      // absolute-form, and a proxy must send Host from the target's
      // authority. Forwarding both while they differ lets the backend and
      // whatever sits in front of it disagree on the site (routing, caches,
      // virtual hosts); so the backend gets origin-form and that Host, which
      // is what the RFC asks of a proxy (HAProxy 2.6 refuses a mismatch with
      // 400 instead). Anything that is not origin-form, absolute-form http(s)
      // or asterisk-form is refused (RFC 9112 3.2).
      const a = ABSOLUTE_RE.exec(target);
      if (!a) return fail(400, "bad request target");
      authority = a[1]!;
      const rest = a[2] ?? "";
      target = rest === "" ? "/" : rest.charCodeAt(0) === 0x3f /* ? */ ? `/${rest}` : rest;
    }
  }

  let contentLength = -1;
  let chunked = false;
  let sawTransferEncoding = false;
  let host: string | undefined;
  let connection: string | undefined;
  let upgrade: string | undefined;
  let cookie: string | undefined;
  let forwardedFor: string | undefined;
  let forwardedProto: string | undefined;
  let forwardedHost: string | undefined;
  let hashValue: string | undefined;
  let forwardLines = "";
  const hashLength = hashHeader === undefined ? -1 : hashHeader.length;

  let pos = lineEnd + 2;
  while (pos < end + 2) {
    lineEnd = head.indexOf("\r\n", pos);
    const line = head.slice(pos, lineEnd);
    pos = lineEnd + 2;
    const colon = line.indexOf(":");
    if (colon <= 0)
      return fail(400, line.length && (line[0] === " " || line[0] === "\t") ? "obs-fold" : "bad header line");
    const name = line.slice(0, colon);
    if (!TOKEN_RE.test(name)) return fail(400, "bad header name");
    const raw = line.slice(colon + 1);
    const len = name.length;
    const lower = (len < 64 && NOTABLE_LENGTH[len] === 1) || len === hashLength ? name.toLowerCase() : "";
    switch (lower) {
      case "content-length": {
        if (contentLength >= 0) return fail(400, "repeated content-length");
        const v = trimOws(raw);
        if (!DIGITS_RE.test(v) || tabAfter(raw)) return fail(400, "bad content-length");
        contentLength = Number(v);
        forwardLines += line + "\r\n";
        continue;
      }
      case "transfer-encoding": {
        if (sawTransferEncoding) return fail(400, "repeated transfer-encoding");
        sawTransferEncoding = true;
        if (trimOws(raw).toLowerCase() !== "chunked" || tabAfter(raw))
          return fail(400, "transfer-encoding other than chunked");
        chunked = true;
        continue; // re-emitted below
      }
      case "host":
        if (host !== undefined) return fail(400, "repeated host");
        host = trimOws(raw);
        forwardLines += authority === undefined ? `${line}\r\n` : `host: ${authority}\r\n`;
        continue;
      case "connection":
        connection = connection === undefined ? raw : `${connection},${raw}`;
        continue;
      case "upgrade":
        upgrade = trimOws(raw);
        continue;
      case "cookie":
        cookie = cookie === undefined ? trimOws(raw) : `${cookie}; ${trimOws(raw)}`;
        forwardLines += line + "\r\n";
        continue;
      case "x-forwarded-for":
        forwardedFor = forwardedFor === undefined ? trimOws(raw) : `${forwardedFor}, ${trimOws(raw)}`;
        continue;
      case "x-forwarded-proto":
        forwardedProto = forwardedProto === undefined ? trimOws(raw) : `${forwardedProto}, ${trimOws(raw)}`;
        continue;
      case "x-forwarded-host":
        forwardedHost = forwardedHost === undefined ? trimOws(raw) : `${forwardedHost}, ${trimOws(raw)}`;
        continue;
      case "x-forwarded-port":
      case "x-real-ip":
      case "forwarded":
        continue; // the proxy sets none of these and passes on no client's
      default:
        if (lower === hashHeader && hashValue === undefined) hashValue = trimOws(raw);
        if (HOP_BY_HOP.has(lower)) continue;
        // A gateway interface (CGI, WSGI, Rack) reads `_` as `-`: an underscore
        // spelling of a forwarded header would pass the client's value on as
        // the proxy's (docs/architecture.md §8).
        if (lower.includes("_") && FORWARDED_NAMES.has(lower.replaceAll("_", "-"))) continue;
        forwardLines += line + "\r\n";
    }
  }
  if (chunked && contentLength >= 0) return fail(400, "transfer-encoding with content-length");
  // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing.
  if (chunked && minor === 0) return fail(400, "transfer-encoding in HTTP/1.0");
  if (chunked) forwardLines += "transfer-encoding: chunked\r\n";
  if (minor === 1 && host === undefined) return fail(400, "missing host");
  if (authority !== undefined) {
    if (host === undefined) forwardLines += `host: ${authority}\r\n`;
    host = authority;
  }

  let keepAlive = minor === 1;
  if (connection !== undefined) {
    // Connection may name further hop-by-hop headers (RFC 9110 7.6.1).
    let extra: string[] | undefined;
    let close = false;
    for (const part of connection.split(",")) {
      const token = trimOws(part).toLowerCase();
      if (token === "close") close = true;
      else if (token === "keep-alive") keepAlive = true;
      else if (token === "upgrade" || token === "" || FRAMING_NAMES.has(token)) continue;
      else {
        extra ??= [];
        extra.push(token);
      }
    }
    if (close) keepAlive = false;
    if (extra) forwardLines = dropNamed(forwardLines, extra);
  }
  if (upgrade !== undefined && (connection === undefined || !hasToken(connection, "upgrade")))
    upgrade = undefined;
  if (upgrade !== undefined && !TOKEN_RE.test(upgrade.split("/")[0] ?? "")) return fail(400, "bad upgrade");

  return {
    error: false,
    method,
    target,
    minor,
    framing: chunked ? Framing.Chunked : contentLength > 0 ? Framing.Length : Framing.None,
    contentLength: contentLength > 0 ? contentLength : 0,
    host,
    keepAlive,
    upgrade,
    cookie,
    forwardedFor,
    forwardedProto,
    forwardedHost,
    hashValue,
    forwardLines,
  };
}

function dropNamed(lines: string, names: readonly string[]): string {
  let out = "";
  for (const line of lines.split("\r\n")) {
    if (!line) continue;
    const name = line.slice(0, line.indexOf(":")).toLowerCase();
    if (!names.includes(name)) out += line + "\r\n";
  }
  return out;
}

export interface ResponseHead {
  readonly error: false;
  readonly status: number;
  readonly minor: number;
  readonly framing: Framing;
  readonly contentLength: number;
  /** The upstream connection may be reused after this response. */
  readonly reusable: boolean;
  /** Status line plus the header lines to forward (hop-by-hop removed), each ending in CRLF. */
  readonly forwardHead: string;
}

/**
 * Parses a response head from a backend. `noBody` is true for answers to
 * HEAD; 1xx, 204 and 304 never have a body (RFC 9112 6.3 rules 1-2).
 */
export function parseResponseHead(head: string, noBody: boolean): ResponseHead | HeadError {
  const end = head.length - 4;
  let lineEnd = head.indexOf("\r\n");
  const m = STATUS_LINE_RE.exec(head.slice(0, lineEnd));
  if (!m) return fail(502, "bad status line");
  if (BAD_HEAD_RE.test(head)) return fail(502, "bad header bytes");
  const minor = m[1] === "1" ? 1 : 0;
  const status = Number(m[2]);
  let forwardHead = head.slice(0, lineEnd + 2);
  let contentLength = -1;
  let chunked = false;
  let close = minor === 0;
  let connection: string | undefined;
  let pos = lineEnd + 2;
  while (pos < end + 2) {
    lineEnd = head.indexOf("\r\n", pos);
    const line = head.slice(pos, lineEnd);
    pos = lineEnd + 2;
    const colon = line.indexOf(":");
    if (colon <= 0) return fail(502, "bad header line");
    const name = line.slice(0, colon);
    if (!TOKEN_RE.test(name)) return fail(502, "bad header name");
    const raw = line.slice(colon + 1);
    const len = name.length;
    const lower = len < 64 && NOTABLE_LENGTH[len] === 1 ? name.toLowerCase() : "";
    if (lower === "content-length") {
      const v = trimOws(raw);
      if (!DIGITS_RE.test(v) || tabAfter(raw) || (contentLength >= 0 && contentLength !== Number(v))) {
        return fail(502, "bad content-length");
      }
      // The same length again (RFC 9110 8.6 allows it): forwarded once, as a strict client wants it.
      if (contentLength >= 0) continue;
      contentLength = Number(v);
    } else if (lower === "transfer-encoding") {
      if (chunked || trimOws(raw).toLowerCase() !== "chunked" || tabAfter(raw))
        return fail(502, "transfer-encoding other than chunked");
      chunked = true;
      forwardHead += line + "\r\n"; // the chunked bytes are forwarded as they are
      continue;
    } else if (lower === "connection") {
      connection = connection === undefined ? raw : `${connection},${raw}`;
      continue;
    } else if (HOP_BY_HOP.has(lower)) continue;
    forwardHead += line + "\r\n";
  }
  if (connection !== undefined) {
    const extra: string[] = [];
    for (const part of connection.split(",")) {
      const token = trimOws(part).toLowerCase();
      if (token === "close") close = true;
      else if (token === "keep-alive") {
        if (minor === 0) close = false;
      } else if (token && token !== "upgrade" && !FRAMING_NAMES.has(token)) extra.push(token);
    }
    if (extra.length) {
      const [statusLine, ...rest] = forwardHead.split("\r\n");
      forwardHead = `${statusLine}\r\n${dropNamed(rest.join("\r\n"), extra)}`;
    }
  }
  if (chunked && contentLength >= 0) return fail(502, "transfer-encoding with content-length");
  let framing: Framing;
  if (noBody || status < 200 || status === 204 || status === 304) framing = Framing.None;
  else if (chunked) framing = Framing.Chunked;
  else if (contentLength >= 0) framing = contentLength > 0 ? Framing.Length : Framing.None;
  else {
    framing = Framing.UntilClose;
    close = true;
  }
  return {
    error: false,
    status,
    minor,
    framing,
    contentLength: contentLength > 0 ? contentLength : 0,
    reusable: !close,
    forwardHead,
  };
}

// States of the chunk scanner (plain numbers: a switch on small integers is the fastest dispatch in V8).
const S_SIZE = 0;
const S_SIZE_OR_EXT = 1;
const S_EXT = 2;
const S_SIZE_LF = 3;
const S_DATA = 4;
const S_DATA_CR = 5;
const S_DATA_LF = 6;
const S_TRAILER_START = 7;
const S_TRAILER = 8;
const S_TRAILER_LF = 9;
const S_END_LF = 10;
const S_TRAILER_NAME = 11;
const S_EXT_VALUE_START = 12;
const S_EXT_TOKEN = 13;
const S_EXT_QUOTED = 14;
const S_EXT_QUOTED_PAIR = 15;
const S_EXT_QUOTED_END = 16;
const S_EXT_NAME = 17;

/** RFC 9110 5.6.2 tchar, as a byte table for the scanner. */
const TCHAR = (() => {
  const t = new Uint8Array(256);
  for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    t[c.charCodeAt(0)] = 1;
  return t;
})();
/**
 * Fields a trailer may not carry (RFC 9110 6.5.1): framing and routing are
 * decided by the header section, and a recipient that merged trailers into
 * it would read another message than the proxy did.
 */
const TRAILER_FORBIDDEN = new Set(["content-length", "transfer-encoding", "host"]);

/** `feed` returned this: more bytes are needed. */
export const NEED_MORE = -1;
/** `feed` returned this: the body is malformed or too large (see `error`). */
export const MALFORMED = -2;

/**
 * Follows a chunked body (RFC 9112 7.1) through any number of buffers. Chunk
 * data is skipped by length, so only size lines and trailers are read byte by
 * byte. `maxBytes` bounds the decoded body and `maxTrailerBytes` the trailer
 * section; exceeding either is an error.
 */
export class ChunkScanner {
  private state: number = S_SIZE;
  private size = 0;
  private digits = 0;
  private remaining = 0;
  private trailerBytes = 0;
  /** The trailer name being read, lower-cased (only while it could be a forbidden one). */
  private trailerName = "";
  /** Decoded body bytes seen so far. */
  bodyBytes = 0;
  error: "bad chunk" | "too large" | undefined;

  constructor(
    private readonly maxBytes = Number.MAX_SAFE_INTEGER,
    private readonly maxTrailerBytes = 16 * 1024,
  ) {}

  reset(): void {
    this.state = S_SIZE;
    this.size = 0;
    this.digits = 0;
    this.remaining = 0;
    this.trailerBytes = 0;
    this.trailerName = "";
    this.bodyBytes = 0;
    this.error = undefined;
  }

  /** Reads `buf[start, end)`; returns the offset just past the body's end, `NEED_MORE` or `MALFORMED`. */
  feed(buf: Buffer, start: number, end: number): number {
    let i = start;
    while (i < end) {
      switch (this.state) {
        case S_DATA: {
          const take = Math.min(this.remaining, end - i);
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = S_DATA_CR;
          continue;
        }
        case S_SIZE:
        case S_SIZE_OR_EXT: {
          const c = buf[i]!;
          const v = hexValue(c);
          if (v >= 0) {
            // 13 hex digits is 2^52: beyond it the sum would lose precision.
            if (++this.digits > 13) return this.bad("bad chunk");
            this.size = this.size * 16 + v;
            this.state = S_SIZE_OR_EXT;
          } else if (this.state === S_SIZE) return this.bad("bad chunk");
          else if (c === 0x3b /* ; */) this.state = S_EXT;
          else if (c === 0x0d) this.state = S_SIZE_LF;
          else return this.bad("bad chunk");
          i++;
          continue;
        }
        // Extensions: *( ";" token [ "=" ( token / quoted-string ) ] ), RFC
        // 9112 7.1.1 without its optional whitespace, which llhttp refuses:
        // whatever a backend's parser would refuse is refused here first.
        // Their bytes count against the trailer limit.
        case S_EXT: // after ";": a name
        case S_EXT_NAME: {
          const c = buf[i++]!;
          if (TCHAR[c] === 1) this.state = S_EXT_NAME;
          else if (this.state === S_EXT) return this.bad("bad chunk");
          else if (c === 0x3d /* = */) this.state = S_EXT_VALUE_START;
          else if (!this.extEnd(c)) return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_EXT_VALUE_START: {
          const c = buf[i++]!;
          if (TCHAR[c] === 1) this.state = S_EXT_TOKEN;
          else if (c === 0x22 /* " */) this.state = S_EXT_QUOTED;
          else return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_EXT_TOKEN: {
          const c = buf[i++]!;
          if (TCHAR[c] !== 1 && !this.extEnd(c)) return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_EXT_QUOTED: {
          // qdtext (HTAB, SP, VCHAR but '"' and '\', obs-text) or a quoted pair.
          const c = buf[i++]!;
          if (c === 0x22) this.state = S_EXT_QUOTED_END;
          else if (c === 0x5c /* \ */) this.state = S_EXT_QUOTED_PAIR;
          else if ((c < 0x20 && c !== 0x09) || c === 0x7f) return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_EXT_QUOTED_PAIR: {
          const c = buf[i++]!;
          if ((c < 0x20 && c !== 0x09) || c === 0x7f) return this.bad("bad chunk");
          this.state = S_EXT_QUOTED;
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_EXT_QUOTED_END: {
          if (!this.extEnd(buf[i++]!)) return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_SIZE_LF: {
          if (buf[i++] !== 0x0a) return this.bad("bad chunk");
          if (this.size === 0) {
            this.state = S_TRAILER_START;
            continue;
          }
          this.bodyBytes += this.size;
          if (this.bodyBytes > this.maxBytes) return this.bad("too large");
          this.remaining = this.size;
          this.size = 0;
          this.digits = 0;
          this.state = S_DATA;
          continue;
        }
        case S_DATA_CR:
          if (buf[i++] !== 0x0d) return this.bad("bad chunk");
          this.state = S_DATA_LF;
          continue;
        case S_DATA_LF:
          if (buf[i++] !== 0x0a) return this.bad("bad chunk");
          this.state = S_SIZE;
          continue;
        case S_TRAILER_START: {
          // Each trailer line is a field, `token ":" value` (RFC 9112 7.1.2),
          // or the blank line that ends the body: a request line here is refused.
          const c = buf[i++]!;
          if (c === 0x0d) this.state = S_END_LF;
          else if (TCHAR[c] === 1) {
            this.trailerName = String.fromCharCode(c | 0x20);
            this.state = S_TRAILER_NAME;
          } else return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_TRAILER_NAME: {
          const c = buf[i++]!;
          if (TCHAR[c] === 1) {
            // `| 0x20` lower-cases letters; the forbidden names are letters and '-'.
            if (this.trailerName.length < 17) this.trailerName += String.fromCharCode(c | 0x20);
            else this.trailerName = "-";
          } else if (c === 0x3a /* : */) {
            if (TRAILER_FORBIDDEN.has(this.trailerName)) return this.bad("bad chunk");
            this.state = S_TRAILER;
          } else return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_TRAILER: {
          const c = buf[i++]!;
          if (c === 0x0d) this.state = S_TRAILER_LF;
          else if ((c < 0x20 && c !== 0x09) || c === 0x7f) return this.bad("bad chunk");
          if (++this.trailerBytes > this.maxTrailerBytes) return this.bad("bad chunk");
          continue;
        }
        case S_TRAILER_LF:
          if (buf[i++] !== 0x0a) return this.bad("bad chunk");
          this.state = S_TRAILER_START;
          continue;
        case S_END_LF:
          if (buf[i++] !== 0x0a) return this.bad("bad chunk");
          return i;
      }
    }
    return NEED_MORE;
  }

  /** After a complete extension: ";" starts the next, CR ends the size line; true when `c` was one. */
  private extEnd(c: number): boolean {
    if (c === 0x3b) this.state = S_EXT;
    else if (c === 0x0d) this.state = S_SIZE_LF;
    else return false;
    return true;
  }

  private bad(error: "bad chunk" | "too large"): number {
    this.error = error;
    return MALFORMED;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** Finds `name=value` in a Cookie header value. */
export function cookieValue(cookie: string | undefined, name: string): string | undefined {
  if (!cookie) return undefined;
  for (const part of cookie.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (trimOws(part.slice(0, eq)) === name) return trimOws(part.slice(eq + 1));
  }
  return undefined;
}

/** A complete small response with `Connection: close`, for errors produced by the proxy. */
export function errorResponse(status: number, close = true): Buffer {
  const text = STATUS_TEXT[status] ?? "Error";
  const body = `${status} ${text}\n`;
  return Buffer.from(
    `HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n` +
      `${close ? "connection: close\r\n" : ""}\r\n${body}`,
    "latin1",
  );
}

export const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** Methods a proxy may send again (RFC 9110 9.2.2). */
export const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
