/**
 * The hostile corpus: request smuggling and framing attacks against the HTTP
 * proxy, written as data. Each case is what a client sends (one string per
 * write, possibly several requests), what the strict raw backend answers
 * (`raw-backend.ts`, one reply per request it reads), and the outcome: the
 * statuses the client gets and whether the proxy then closes, and exactly
 * the bytes the backend receives ("" when nothing may reach it).
 *
 * Every case names its class; where refusing (or how) is a choice that
 * proxies make differently, `follows` names the peer whose behaviour it
 * matches (`npm run corpus:peers` runs this corpus against HAProxy 2.6 and
 * nginx 1.22 and prints where each agrees), and `why` says why when it is
 * neither's. Run by `hostile-corpus.test.ts`.
 */
import type { RawReply } from "./raw-backend";

export type CaseClass =
  | "CL.TE"
  | "TE.CL"
  | "TE.TE"
  | "content-length"
  | "obs-fold"
  | "bare CR/LF"
  | "control bytes"
  | "chunk size"
  | "chunk extension"
  | "trailer"
  | "pipelining"
  | "version"
  | "header name"
  | "host"
  | "absolute-form"
  | "connection-named framing"
  | "response framing"
  | "response 1xx"
  | "response body rules"
  | "forwarded headers";

export type Peer = "HAProxy 2.6" | "nginx 1.22" | "HAProxy 2.6 and nginx 1.22" | "neither";

export interface Outcome {
  /** Status codes the client gets, in order, 1xx included. */
  readonly statuses: readonly number[];
  /** The proxy closes the client connection after them. */
  readonly closed: boolean;
  /** Every byte the backend receives, its connections joined in order. */
  readonly backend: string;
  /**
   * How many connections the backend gets, when the case is about reuse. A
   * pipelined request never takes the connection the answer before it came
   * on (see the late-answer case), so pipelined requests count one each.
   */
  readonly connections?: number;
  /** Exactly the bytes the client gets, when the case is about them. */
  readonly client?: string;
}

export interface HostileCase {
  readonly name: string;
  readonly cls: CaseClass;
  /** What the client sends, latin1; several strings are several writes. */
  readonly send: string | readonly string[];
  /** The backend's answers, one per request it reads in full (then `DEFAULT_REPLY`). */
  readonly replies?: readonly RawReply[];
  readonly expect: Outcome;
  /** Where the outcome is a choice: whose behaviour it matches. */
  readonly follows?: Peer;
  /** Why, when the choice is neither peer's or needs saying. */
  readonly why?: string;
  /** Final answers (counted from 0) that answer HEAD: no body however they are framed. */
  readonly headAnswers?: readonly number[];
  /** The listener's `trustedProxies` (the client is 127.0.0.1). */
  readonly trustedProxies?: readonly string[];
}

const CRLF = "\r\n";
/** A head: lines joined by CRLF, then the blank line. */
export const head = (...lines: string[]): string => `${lines.join(CRLF)}${CRLF}${CRLF}`;
const post = (...lines: string[]): string => head("POST / HTTP/1.1", "Host: a", ...lines);
const GET = head("GET / HTTP/1.1", "Host: a");
const GET_CLOSE = head("GET / HTTP/1.1", "Host: a", "Connection: close");

/**
 * The head the proxy sends for a request: its request line, the header lines
 * it keeps (in the client's order), then the forwarded headers it sets.
 */
export function fwd(
  line: string,
  kept: readonly string[],
  o: { host?: string | null; xff?: string; proto?: string; v10?: boolean } = {},
): string {
  const host = o.host === undefined ? "a" : o.host;
  return (
    `${line}${CRLF}${kept.map((l) => `${l}${CRLF}`).join("")}` +
    `x-forwarded-for: ${o.xff ?? "127.0.0.1"}${CRLF}x-forwarded-proto: ${o.proto ?? "http"}${CRLF}` +
    `${host === null ? "" : `x-forwarded-host: ${host}${CRLF}`}${o.v10 ? `connection: keep-alive${CRLF}` : ""}${CRLF}`
  );
}
const FWD_GET = fwd("GET / HTTP/1.1", ["Host: a"]);
const FWD_POST = (...kept: string[]) => fwd("POST / HTTP/1.1", ["Host: a", ...kept]);
const FWD_CHUNKED = FWD_POST("transfer-encoding: chunked");

/** Refused with `status` and closed; `backend` is what reached it first (the head of a body refused later). */
const refused = (status: number, backend = ""): Outcome => ({ statuses: [status], closed: true, backend });
/** Forwarded as exactly `backend`, answered `statuses`, the connection kept open unless `closed`. */
const forwarded = (backend: string, statuses: number[] = [200], closed = false): Outcome => ({
  statuses,
  closed,
  backend,
});

/** A request whose length would swallow the next client's request on a shared backend connection. */
const CAPTURE = "POST /capture HTTP/1.1\r\nHost: a\r\nContent-Length: 90\r\n\r\n";
/** Whose refusal each control-byte case matches (from `npm run corpus:peers`). */
const CONTROL_FOLLOWS: Record<string, Pick<HostileCase, "follows" | "why">> = {
  "NUL in a value": { follows: "nginx 1.22", why: "HAProxy 2.6 forwards it" },
  "NUL in the target": { follows: "HAProxy 2.6 and nginx 1.22" },
  "DEL in a value": {
    follows: "neither",
    why: "RFC 9110 5.5: no field-vchar; llhttp refuses it, both peers forward it",
  },
  "a control byte in a name": { follows: "HAProxy 2.6 and nginx 1.22" },
  "a vertical tab in a value": {
    follows: "neither",
    why: "RFC 9110 5.5; llhttp refuses it, both peers forward it",
  },
  "a high byte in a name": { follows: "HAProxy 2.6", why: "no token; nginx forwards it" },
  "a control byte in the target": { follows: "HAProxy 2.6 and nginx 1.22" },
  "HTAB in the target": { follows: "HAProxy 2.6 and nginx 1.22" },
  "a high byte in the target": {
    follows: "HAProxy 2.6",
    why: "RFC 3986: a target is ASCII; llhttp refuses it too",
  },
};
/** Whose refusal each bad-target case matches. */
const TARGET_FOLLOWS: Record<string, Pick<HostileCase, "follows" | "why">> = {
  userinfo: { follows: "HAProxy 2.6 and nginx 1.22", why: "RFC 9110 4.2.4" },
  "another scheme": { follows: "HAProxy 2.6", why: "RFC 9112 3.2: nothing to forward; nginx forwards it" },
  "an empty authority": { follows: "nginx 1.22", why: "RFC 9110 4.2.1: an http URI has a host" },
  "authority-form outside CONNECT": { follows: "HAProxy 2.6 and nginx 1.22" },
  "a relative target": { follows: "HAProxy 2.6 and nginx 1.22" },
  "asterisk-form with GET": { follows: "nginx 1.22", why: "RFC 9112 3.2.4: OPTIONS only" },
};
/** Whose refusal each chunk-size case matches (both peers refuse the others). */
const NEITHER_CHUNK = "both peers forward it; llhttp refuses it, so a node backend reads the body otherwise";
const CHUNK_FOLLOWS: Record<string, Pick<HostileCase, "follows" | "why">> = {
  "a space after the size": { follows: "neither", why: NEITHER_CHUNK },
  "14 hex digits, leading zeros": {
    follows: "neither",
    why: "13 hex digits is the safe-integer bound here; both peers and llhttp accept leading zeros",
  },
  "a bare LF after the size": { follows: "neither", why: NEITHER_CHUNK },
  "a bare LF after the data": { follows: "neither", why: NEITHER_CHUNK },
};

const OK = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const CLOSE_OK = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
const SECOND = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";

export const CORPUS: readonly HostileCase[] = [
  // ---- CL.TE: the front reads Content-Length, the back Transfer-Encoding ----
  {
    name: "Content-Length then Transfer-Encoding",
    cls: "CL.TE",
    send: `${post("Content-Length: 6", "Transfer-Encoding: chunked")}0\r\n\r\nG`,
    expect: refused(400),
    follows: "nginx 1.22",
    why: "RFC 9112 6.1 lets a server refuse both; forwarding one of them is what HAProxy does",
  },
  {
    name: "Transfer-Encoding then Content-Length",
    cls: "CL.TE",
    send: `${post("Transfer-Encoding: chunked", "Content-Length: 6")}0\r\n\r\nG`,
    expect: refused(400),
    follows: "nginx 1.22",
  },
  {
    name: "both, with a request hidden after the last chunk",
    cls: "CL.TE",
    send: `${post("Content-Length: 40", "Transfer-Encoding: chunked")}0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n`,
    expect: refused(400),
    follows: "nginx 1.22",
  },
  // ---- TE.CL: the front reads Transfer-Encoding, the back Content-Length ----
  {
    name: "classic TE.CL, a request inside the chunk",
    cls: "TE.CL",
    send: `${post("Content-Length: 4", "Transfer-Encoding: chunked")}2b\r\nGET /admin HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n\r\n0\r\n\r\n`,
    expect: refused(400),
    follows: "nginx 1.22",
  },
  {
    name: "both in HTTP/1.0",
    cls: "TE.CL",
    send: head("POST / HTTP/1.0", "Transfer-Encoding: chunked", "Content-Length: 3"),
    expect: refused(400),
    follows: "nginx 1.22",
  },
  // ---- TE.TE: one side does not see the Transfer-Encoding ----
  {
    name: "Transfer-Encoding: xchunked",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: xchunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "nginx answers 501",
  },
  {
    name: "Transfer-Encoding with leading whitespace (OWS) is chunked",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: \t chunked")}3\r\nabc\r\n0\r\n\r\n`,
    expect: forwarded(`${FWD_CHUNKED}3\r\nabc\r\n0\r\n\r\n`),
    follows: "HAProxy 2.6",
    why: "RFC 9110 5.5: leading whitespace is not part of a value; nginx answers 501",
  },
  {
    name: "Transfer-Encoding: CHUNKED (case) is chunked, sent on in lower case",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: CHUNKED")}0\r\n\r\n`,
    expect: forwarded(`${FWD_CHUNKED}0\r\n\r\n`),
  },
  {
    name: "Transfer-Encoding: chunked, identity",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: chunked, identity")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "nginx answers 501",
  },
  {
    name: "Transfer-Encoding: identity",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: identity")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "nginx answers 501",
  },
  {
    name: "Transfer-Encoding: gzip, chunked",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: gzip, chunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "no coding but chunked is decoded here; the peers answer 422 (HAProxy) and 501 (nginx)",
  },
  {
    name: "Transfer-Encoding<TAB>: chunked",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding\t: chunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "Transfer-Encoding<SP>: chunked",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding : chunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "Transfer-Encoding twice",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "Transfer-Encoding chunked, then identity",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: chunked", "Transfer-Encoding: identity")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "Transfer-Encoding followed by a vertical tab",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: chunked\x0b")}0\r\n\r\n`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "nginx answers 501",
  },
  {
    name: "Transfer-Encoding folded onto the next line",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding:", " chunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "nginx 1.22",
  },
  {
    name: "Transfer-Encoding in a trailer",
    cls: "TE.TE",
    send: `${post("Transfer-Encoding: chunked")}0\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: refused(400, ""),
    follows: "HAProxy 2.6",
    why: "RFC 9110 6.5.1; llhttp refuses it too; nginx forwards it",
  },
  {
    name: "Transfer-Encoding in HTTP/1.0",
    cls: "TE.TE",
    send: `${head("POST / HTTP/1.0", "Transfer-Encoding: chunked")}0\r\n\r\n`,
    expect: refused(400),
    follows: "nginx 1.22",
    why: "RFC 9112 6.1: faulty framing in a 1.0 message",
  },
  {
    name: "Transfer_Encoding (underscore) is a plain header: no body",
    cls: "TE.TE",
    send: `${post("Transfer_Encoding: chunked")}0\r\n\r\n`,
    // The "0" line is then the next request, refused; the backend never sees it.
    expect: forwarded(FWD_POST("Transfer_Encoding: chunked"), [200, 400], true),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "a valid token, so no framing header: both peers forward it without a body too",
  },
  // ---- Content-Length ----
  ...(
    [
      ["a plus sign", "+5"],
      ["a minus sign", "-1"],
      ["a space inside", "3 3"],
      ["hex", "0x10"],
      ["no value", ""],
      ["an overflow", "99999999999999999999"],
      ["a list", "3, 3"],
      ["a semicolon", "3;"],
    ] as const
  ).map(
    ([what, v]): HostileCase => ({
      name: `Content-Length with ${what}`,
      cls: "content-length",
      send: `${post(`Content-Length: ${v}`)}abc`,
      expect: refused(400),
      // HAProxy takes a list of equal values as one (RFC 9110 8.6 allows it).
      follows: what === "a list" ? "nginx 1.22" : "HAProxy 2.6 and nginx 1.22",
    }),
  ),
  {
    name: "Content-Length twice, same value",
    cls: "content-length",
    send: `${post("Content-Length: 3", "Content-Length: 3")}abc`,
    expect: refused(400),
    follows: "nginx 1.22",
    why: "RFC 9112 6.3 allows either; llhttp refuses it, so a node backend would too",
  },
  {
    name: "Content-Length twice, different values",
    cls: "content-length",
    send: `${post("Content-Length: 3", "Content-Length: 4")}abcd`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "Content-Length followed by a tab",
    cls: "content-length",
    send: `${post("Content-Length: 3\t")}abc`,
    expect: refused(400),
    follows: "nginx 1.22",
    why: "OWS to RFC 9110, but llhttp refuses it (found by the differential fuzz); HAProxy accepts it",
  },
  {
    name: "Content-Length with spaces around the value",
    cls: "content-length",
    send: `${post("Content-Length:   3  ")}abc`,
    expect: forwarded(`${FWD_POST("Content-Length:   3  ")}abc`),
  },
  {
    name: "Content-Length over the body limit",
    cls: "content-length",
    send: post("Content-Length: 20000000"),
    expect: refused(413),
    follows: "nginx 1.22",
    why: "limits.maxBodyBytes; HAProxy has no body limit and waits for the body",
  },
  {
    name: "Content-Length: 0 followed by a request",
    cls: "content-length",
    send: `${post("Content-Length: 0")}${GET}`,
    expect: forwarded(`${FWD_POST("Content-Length: 0")}${FWD_GET}`, [200, 200]),
  },
  {
    name: "bytes after a body are the next request, never part of it",
    cls: "content-length",
    send: `${post("Content-Length: 3")}abc${GET}`,
    expect: forwarded(`${FWD_POST("Content-Length: 3")}abc${FWD_GET}`, [200, 200]),
  },
  // ---- obs-fold ----
  {
    name: "a folded header",
    cls: "obs-fold",
    send: head("GET / HTTP/1.1", "Host: a", "X-A: 1", " 2"),
    expect: refused(400),
    follows: "nginx 1.22",
    why: "RFC 9112 5.2 allows refusing or unfolding; refusing leaves nothing to disagree on",
  },
  {
    name: "a folded Content-Length",
    cls: "obs-fold",
    send: `${post("Content-Length:", " 3")}abc`,
    expect: refused(400),
    follows: "nginx 1.22",
  },
  {
    name: "whitespace before the first header",
    cls: "obs-fold",
    send: head("GET / HTTP/1.1", " Host: a"),
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  // ---- bare CR and LF: never a line end here, refused at once ----
  ...(
    [
      ["LF LF ending the head", "GET / HTTP/1.1\nHost: a\n\n"],
      ["CRLF LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n"],
      ["LF CRLF ending the head", "GET / HTTP/1.1\r\nHost: a\n\r\n"],
      ["a bare LF inside, CRLFCRLF after", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"],
      ["a bare LF ending the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n"],
      ["a bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"],
      ["a bare CR ending a line", "GET / HTTP/1.1\r\nHost: a\r\rX: b\r\n\r\n"],
      ["a leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"],
      [
        "a request smuggled behind LF LF",
        "GET / HTTP/1.1\r\nHost: a\n\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
      ],
    ] as const
  ).map(
    ([what, send]): HostileCase => ({
      name: what,
      cls: "bare CR/LF",
      send,
      expect: refused(400),
      ...(what.includes("bare CR")
        ? { follows: "HAProxy 2.6 and nginx 1.22" as const }
        : {
            follows: "neither" as const,
            why: "both peers take a bare LF as a line end, as RFC 9112 2.2 allows; llhttp refuses it, so a backend may read the head otherwise",
          }),
    }),
  ),
  {
    name: "empty lines before the request line are skipped",
    cls: "bare CR/LF",
    send: `\r\n\r\n${GET}`,
    expect: forwarded(FWD_GET),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "RFC 9112 2.2",
  },
  // ---- control bytes ----
  ...(
    [
      ["NUL in a value", head("GET / HTTP/1.1", "Host: a", "X: a\x00b")],
      ["NUL in the target", head("GET /a\x00b HTTP/1.1", "Host: a")],
      ["DEL in a value", head("GET / HTTP/1.1", "Host: a", "X: a\x7fb")],
      ["a control byte in a name", head("GET / HTTP/1.1", "Host: a", "X\x01Y: b")],
      ["a vertical tab in a value", head("GET / HTTP/1.1", "Host: a", "X: \x0bb")],
      ["a high byte in a name", head("GET / HTTP/1.1", "Host: a", "X\xe9: b")],
      ["a control byte in the target", head("GET /a\x01 HTTP/1.1", "Host: a")],
      ["HTAB in the target", head("GET /a\tb HTTP/1.1", "Host: a")],
      ["a high byte in the target", head("GET /caf\xe9 HTTP/1.1", "Host: a")],
    ] as const
  ).map(
    ([what, send]): HostileCase => ({
      name: what,
      cls: "control bytes",
      send,
      expect: refused(400),
      ...CONTROL_FOLLOWS[what],
    }),
  ),
  {
    name: "obs-text in a value is forwarded as it came",
    cls: "control bytes",
    send: head("GET / HTTP/1.1", "Host: a", "X: caf\xe9 \xff"),
    expect: forwarded(fwd("GET / HTTP/1.1", ["Host: a", "X: caf\xe9 \xff"])),
  },
  // ---- chunk sizes ----
  ...(
    [
      ["an overflowing size", "fffffffffffffffff\r\na\r\n0\r\n\r\n"],
      ["a 0x prefix", "0x5\r\nabcde\r\n0\r\n\r\n"],
      ["a negative size", "-5\r\nabcde\r\n0\r\n\r\n"],
      ["a space before the size", " 5\r\nabcde\r\n0\r\n\r\n"],
      ["a space after the size", "5 \r\nabcde\r\n0\r\n\r\n"],
      ["an empty size line", "\r\nabcde\r\n0\r\n\r\n"],
      ["a size that is not hex", "g\r\nabcde\r\n0\r\n\r\n"],
      ["14 hex digits, leading zeros", "00000000000005\r\nabcde\r\n0\r\n\r\n"],
      ["data not followed by CRLF", "5\r\nabcdeXX0\r\n\r\n"],
      ["data longer than its size", "3\r\nabcde\r\n0\r\n\r\n"],
      ["a bare LF after the size", "5\nabcde\r\n0\r\n\r\n"],
      ["a bare LF after the data", "5\r\nabcde\n0\r\n\r\n"],
    ] as const
  ).map(
    ([what, body]): HostileCase => ({
      name: `chunked body with ${what}`,
      cls: "chunk size",
      send: `${post("Transfer-Encoding: chunked")}${body}`,
      expect: refused(400, ""),
      ...(CHUNK_FOLLOWS[what] ?? { follows: "HAProxy 2.6 and nginx 1.22" }),
    }),
  ),
  {
    name: "upper-case hex sizes",
    cls: "chunk size",
    send: `${post("Transfer-Encoding: chunked")}A\r\n0123456789\r\n0\r\n\r\n`,
    expect: forwarded(`${FWD_CHUNKED}A\r\n0123456789\r\n0\r\n\r\n`),
  },
  // ---- chunk extensions: RFC 9112 7.1.1, without the optional whitespace llhttp refuses ----
  ...(
    [
      ["a control byte", "5;a=b\x01\r\nabcde\r\n0\r\n\r\n"],
      ["a space before ';'", "5 ;a=b\r\nabcde\r\n0\r\n\r\n"],
      ["a space after ';'", "5; a=b\r\nabcde\r\n0\r\n\r\n"],
      ["an unterminated quoted value", '5;a="b\r\nabcde\r\n0\r\n\r\n'],
      ["an empty extension", "5;\r\nabcde\r\n0\r\n\r\n"],
      ["a value that is not a token", "5;a=b@c\r\nabcde\r\n0\r\n\r\n"],
    ] as const
  ).map(
    ([what, body]): HostileCase => ({
      name: `chunk extension with ${what}`,
      cls: "chunk extension",
      send: `${post("Transfer-Encoding: chunked")}${body}`,
      expect: refused(400, ""),
      follows: "neither",
      why: "both peers forward these; llhttp refuses them, so a node backend would read the body otherwise",
    }),
  ),
  {
    name: "chunk extensions, token and quoted, forwarded as they came",
    cls: "chunk extension",
    send: `${post("Transfer-Encoding: chunked")}5;a=b;c="d;\\"e"\r\nabcde\r\n0;last\r\n\r\n`,
    expect: forwarded(`${FWD_CHUNKED}5;a=b;c="d;\\"e"\r\nabcde\r\n0;last\r\n\r\n`),
  },
  // ---- trailers ----
  {
    name: "a trailer field is forwarded",
    cls: "trailer",
    send: `${post("Transfer-Encoding: chunked")}0\r\nX-Sum: 1\r\n\r\n`,
    expect: forwarded(`${FWD_CHUNKED}0\r\nX-Sum: 1\r\n\r\n`),
  },
  ...(
    [
      ["a request line", "0\r\nGET /admin HTTP/1.1\r\n\r\n"],
      ["a space before the colon", "0\r\nX-Sum : 1\r\n\r\n"],
      ["Content-Length", "0\r\nContent-Length: 5\r\n\r\n"],
      ["Host", "0\r\nHost: b\r\n\r\n"],
      ["a folded line", "0\r\nX-Sum: 1\r\n 2\r\n\r\n"],
    ] as const
  ).map(
    ([what, body]): HostileCase => ({
      name: `a trailer that is ${what}`,
      cls: "trailer",
      send: `${post("Transfer-Encoding: chunked")}${body}`,
      expect: refused(400, ""),
      ...(what === "a folded line"
        ? {
            follows: "neither" as const,
            why: "RFC 9112 7.1.2: trailer lines are fields; both peers forward it",
          }
        : {
            follows: "HAProxy 2.6" as const,
            why: "RFC 9112 7.1.2, RFC 9110 6.5.1; nginx forwards it (HAProxy answers 400, or 502 once it sent the head on)",
          }),
    }),
  ),
  // ---- pipelining ----
  {
    name: "two requests in one write",
    cls: "pipelining",
    send: `${head("GET /1 HTTP/1.1", "Host: a")}${head("GET /2 HTTP/1.1", "Host: a")}`,
    expect: forwarded(
      `${fwd("GET /1 HTTP/1.1", ["Host: a"])}${fwd("GET /2 HTTP/1.1", ["Host: a"])}`,
      [200, 200],
    ),
  },
  {
    name: "three requests, the last asks to close",
    cls: "pipelining",
    send: `${GET}${GET}${GET_CLOSE}`,
    expect: forwarded(`${FWD_GET}${FWD_GET}${FWD_GET}`, [200, 200, 200], true),
  },
  {
    name: "a request after a chunked body, one write",
    cls: "pipelining",
    send: `${post("Transfer-Encoding: chunked")}3\r\nabc\r\n0\r\n\r\n${GET}`,
    expect: forwarded(`${FWD_CHUNKED}3\r\nabc\r\n0\r\n\r\n${FWD_GET}`, [200, 200]),
  },
  {
    name: "a good request, then a bad one",
    cls: "pipelining",
    send: `${GET}${head("GET / HTTP/1.1", "Host: a", "Bad Name: x")}`,
    expect: forwarded(FWD_GET, [200, 400], true),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "a bad request, then a good one: nothing reaches the backend",
    cls: "pipelining",
    send: `${head("GET / HTTP/1.1", "Host: a", "Bad Name: x")}${GET}`,
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "a request split over three writes",
    cls: "pipelining",
    send: ["GET / HT", "TP/1.1\r\nHost: a\r", "\n\r\n"],
    expect: forwarded(FWD_GET),
  },
  // ---- versions ----
  {
    name: "HTTP/0.9 request line",
    cls: "version",
    send: "GET /\r\n\r\n",
    expect: refused(400),
    follows: "HAProxy 2.6",
    why: "nginx answers HTTP/0.9; llhttp reads it as 0.9 too",
  },
  {
    name: "HTTP/2 connection preface",
    cls: "version",
    send: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    expect: refused(505),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "505 says why; HAProxy closes without an answer, nginx answers 400",
  },
  {
    name: "HTTP/1.2",
    cls: "version",
    send: head("GET / HTTP/1.2", "Host: a"),
    expect: refused(505),
    follows: "neither",
    why: "both peers read it as 1.1 (RFC 9112 2.3 says SHOULD); llhttp refuses it, and so does this proxy",
  },
  {
    name: "HTTP/2.0",
    cls: "version",
    send: head("GET / HTTP/2.0", "Host: a"),
    expect: refused(505),
    follows: "nginx 1.22",
  },
  {
    name: "a space after the version",
    cls: "version",
    send: head("GET / HTTP/1.1 ", "Host: a"),
    expect: refused(400),
    follows: "HAProxy 2.6",
  },
  {
    name: "lower-case version",
    cls: "version",
    send: head("GET / http/1.1", "Host: a"),
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "two spaces in the request line",
    cls: "version",
    send: head("GET  / HTTP/1.1", "Host: a"),
    expect: refused(400),
    follows: "neither",
    why: "RFC 9112 3: one SP; both peers and llhttp accept more, but a reader that splits on SP sees an empty target",
  },
  // ---- header names ----
  ...(
    [
      ["a space before the colon", "Content-Length : 3"],
      ["a tab before the colon", "Content-Length\t: 3"],
      ["an empty name", ": x"],
      ["a name with '('", "X(a): b"],
      ["a name with '@'", "X@a: b"],
      ["no colon", "garbage"],
    ] as const
  ).map(
    ([what, line]): HostileCase => ({
      name: `a header with ${what}`,
      cls: "header name",
      send: `${post(line)}abc`,
      expect: refused(400),
      // nginx skips a line whose name is no token, and goes on.
      follows:
        what.includes("before the colon") || what.includes("empty")
          ? "HAProxy 2.6 and nginx 1.22"
          : "HAProxy 2.6",
    }),
  ),
  {
    name: "a colon inside a value",
    cls: "header name",
    send: head("GET / HTTP/1.1", "Host: a", "X: a:b"),
    expect: forwarded(fwd("GET / HTTP/1.1", ["Host: a", "X: a:b"])),
  },
  // ---- Host ----
  {
    name: "Host twice",
    cls: "host",
    send: head("GET / HTTP/1.1", "Host: a", "Host: b"),
    expect: refused(400),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "Host twice, other case",
    cls: "host",
    send: head("GET / HTTP/1.1", "Host: a", "host: a"),
    expect: refused(400),
    follows: "nginx 1.22",
  },
  {
    name: "no Host in HTTP/1.1",
    cls: "host",
    send: head("GET / HTTP/1.1"),
    expect: refused(400),
    follows: "nginx 1.22",
    why: "RFC 9112 3.2: a server must answer 400",
  },
  {
    name: "no Host in HTTP/1.0",
    cls: "host",
    send: head("GET / HTTP/1.0"),
    expect: forwarded(fwd("GET / HTTP/1.0", [], { host: null, v10: true }), [200], true),
  },
  // ---- absolute-form (RFC 9112 3.2.2) ----
  {
    name: "absolute-form whose authority differs from Host",
    cls: "absolute-form",
    send: head("GET http://b.example/x?y HTTP/1.1", "Host: a"),
    expect: forwarded(fwd("GET /x?y HTTP/1.1", ["host: b.example"], { host: "b.example" })),
    follows: "nginx 1.22",
    why: "RFC 9112 3.2.2: a proxy sends Host from the target; HAProxy 2.6 refuses a mismatch with 400, also safe",
  },
  {
    name: "absolute-form https with a port and no path",
    cls: "absolute-form",
    send: head("GET https://b:8443 HTTP/1.1", "Host: a"),
    expect: forwarded(fwd("GET / HTTP/1.1", ["host: b:8443"], { host: "b:8443" })),
    follows: "nginx 1.22",
  },
  {
    name: "absolute-form in HTTP/1.0 without Host",
    cls: "absolute-form",
    send: head("GET http://b/x HTTP/1.0"),
    expect: forwarded(fwd("GET /x HTTP/1.0", ["host: b"], { host: "b", v10: true }), [200], true),
  },
  ...(
    [
      ["userinfo", "http://user:pw@b/x"],
      ["another scheme", "ftp://b/x"],
      ["an empty authority", "http:///x"],
      ["authority-form outside CONNECT", "b:80"],
      ["a relative target", "x/y"],
      ["asterisk-form with GET", "*"],
    ] as const
  ).map(
    ([what, target]): HostileCase => ({
      name: `a target with ${what}`,
      cls: "absolute-form",
      send: head(`GET ${target} HTTP/1.1`, "Host: a"),
      expect: refused(400),
      ...TARGET_FOLLOWS[what],
    }),
  ),
  {
    name: "OPTIONS * is forwarded",
    cls: "absolute-form",
    send: head("OPTIONS * HTTP/1.1", "Host: a"),
    expect: forwarded(fwd("OPTIONS * HTTP/1.1", ["Host: a"])),
    follows: "HAProxy 2.6",
  },
  {
    name: "CONNECT",
    cls: "absolute-form",
    send: head("CONNECT b:443 HTTP/1.1", "Host: b:443"),
    expect: refused(501),
    follows: "nginx 1.22",
    why: "no tunnels, and 501 says so (nginx answers 400); HAProxy forwards it",
  },
  // ---- Connection naming framing headers (requests) ----
  {
    name: "Connection: content-length keeps the length of a body hiding a request",
    cls: "connection-named framing",
    send: `${post("Connection: content-length", `Content-Length: ${CAPTURE.length}`)}${CAPTURE}`,
    expect: forwarded(`${FWD_POST(`Content-Length: ${CAPTURE.length}`)}${CAPTURE}`),
    why: "Connection cannot remove framing (neither peer acts on such a token)",
  },
  {
    name: "Connection: transfer-encoding keeps chunked",
    cls: "connection-named framing",
    send: `${post("Connection: transfer-encoding", "Transfer-Encoding: chunked")}3\r\nabc\r\n0\r\n\r\n`,
    expect: forwarded(`${FWD_CHUNKED}3\r\nabc\r\n0\r\n\r\n`),
  },
  {
    name: "Connection: host keeps Host",
    cls: "connection-named framing",
    send: head("GET / HTTP/1.1", "Connection: host", "Host: a"),
    expect: forwarded(FWD_GET),
  },
  {
    name: "Connection removes the other headers it names",
    cls: "connection-named framing",
    send: head("GET / HTTP/1.1", "Host: a", "Connection: x-secret", "X-Secret: 1", "X-Kept: 2"),
    expect: forwarded(fwd("GET / HTTP/1.1", ["Host: a", "X-Kept: 2"])),
  },
  // ---- answers: framing from the backend ----
  {
    name: "an answer with Connection: content-length keeps its length",
    cls: "response framing",
    send: `${GET}${GET}`,
    replies: ["HTTP/1.1 200 OK\r\nConnection: content-length\r\ncontent-length: 2\r\n\r\nok", SECOND],
    expect: { ...forwarded(`${FWD_GET}${FWD_GET}`, [200, 200]), connections: 2, client: `${OK}${SECOND}` },
  },
  {
    name: "an answer with Connection: transfer-encoding stays chunked",
    cls: "response framing",
    send: GET,
    replies: [
      "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
    expect: {
      ...forwarded(FWD_GET),
      client: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    },
  },
  {
    name: "two answers to one request: the extra one reaches no client",
    cls: "response framing",
    send: `${GET}${GET}`,
    replies: [`${OK}HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil`, SECOND],
    expect: { ...forwarded(`${FWD_GET}${FWD_GET}`, [200, 200]), connections: 2, client: `${OK}${SECOND}` },
  },
  {
    // The late answer lands on the connection just as the next request would
    // reuse it: a pipelined request is read in the same turn as the end of
    // the answer before it, before the late bytes can be read. HAProxy's
    // `http-reuse safe` gave no client the late answer in 10 tries.
    name: "a late second answer on a connection reaches no client, pipelined or not",
    cls: "response framing",
    send: `${GET}${GET}`,
    replies: [
      { writes: [OK, { afterMs: 5, data: "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil" }] },
      { writes: [{ afterMs: 40, data: SECOND }] },
    ],
    expect: { ...forwarded(`${FWD_GET}${FWD_GET}`, [200, 200]), connections: 2, client: `${OK}${SECOND}` },
    follows: "HAProxy 2.6",
  },
  {
    name: "an answer with Content-Length and chunked",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"],
    expect: refused(502, FWD_GET),
    follows: "neither",
    why: "RFC 9112 6.1 lets a proxy keep chunked and drop the length, as both peers do; a bad answer here",
  },
  {
    name: "an answer with two different lengths",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"],
    expect: refused(502, FWD_GET),
    follows: "HAProxy 2.6",
  },
  {
    name: "an answer with the same length twice goes on with one",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok"],
    expect: { ...forwarded(FWD_GET), client: OK },
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "RFC 9110 8.6 allows one value repeated; a strict client (llhttp) refuses two lines",
  },
  {
    name: "an answer with Transfer-Encoding: xchunked",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\n\r\nok"],
    expect: refused(502, FWD_GET),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "an answer without a length is closed after",
    cls: "response framing",
    send: GET,
    replies: [{ writes: ["HTTP/1.1 200 OK\r\n\r\nuntil close"], close: true }],
    expect: {
      ...forwarded(FWD_GET, [200], true),
      client: "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close",
    },
  },
  {
    name: "an answer with a bad chunk",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"],
    expect: refused(502, FWD_GET),
    follows: "HAProxy 2.6 and nginx 1.22",
    why: "nginx cuts the answer",
  },
  {
    name: "an answer with a request line as its trailer",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nGET / HTTP/1.1\r\n\r\n"],
    expect: refused(502, FWD_GET),
    follows: "HAProxy 2.6",
  },
  {
    name: "an answer head with bare LF line ends",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\ncontent-length: 2\n\nok"],
    expect: refused(502, FWD_GET),
    follows: "neither",
    why: "both peers take LF as a line end (RFC 9112 2.2 allows it)",
  },
  {
    name: "an answer head over 64 KiB, in one write",
    cls: "response framing",
    send: GET,
    replies: [`HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(66 * 1024)}\r\ncontent-length: 2\r\n\r\nok`],
    expect: refused(502, FWD_GET),
    follows: "HAProxy 2.6 and nginx 1.22",
  },
  {
    name: "a folded answer header",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 2\r\n\r\nok"],
    expect: refused(502, FWD_GET),
    follows: "nginx 1.22",
    why: "RFC 9112 5.2; HAProxy unfolds it",
  },
  {
    name: "a status line that is not one",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nok"],
    expect: refused(502, FWD_GET),
    follows: "neither",
    why: "both peers pass it on",
  },
  {
    name: "101 nobody asked for",
    cls: "response framing",
    send: GET,
    replies: ["HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"],
    expect: refused(502, FWD_GET),
    follows: "HAProxy 2.6",
  },
  // ---- answers: 1xx ----
  {
    name: "100 Continue, then the answer",
    cls: "response 1xx",
    send: `${post("Expect: 100-continue", "Content-Length: 2")}hi`,
    replies: [`HTTP/1.1 100 Continue\r\n\r\n${OK}`],
    expect: {
      ...forwarded(`${FWD_POST("Expect: 100-continue", "Content-Length: 2")}hi`, [100, 200]),
      client: `HTTP/1.1 100 Continue\r\n\r\n${OK}`,
    },
    follows: "HAProxy 2.6",
    why: "nginx answers 100 itself and forwards the backend's too",
  },
  {
    name: "103 Early Hints, then the answer",
    cls: "response 1xx",
    send: GET,
    replies: [`HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n${OK}`],
    expect: {
      ...forwarded(FWD_GET, [103, 200]),
      client: `HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n${OK}`,
    },
  },
  {
    name: "no 1xx reaches an HTTP/1.0 client",
    cls: "response 1xx",
    send: head("GET / HTTP/1.0"),
    replies: [`HTTP/1.1 100 Continue\r\n\r\n${OK}`],
    expect: {
      ...forwarded(fwd("GET / HTTP/1.0", [], { host: null, v10: true }), [200], true),
      client: CLOSE_OK,
    },
    follows: "neither",
    why: "RFC 9110 15.2: a server must not send a 1xx to an HTTP/1.0 client; both peers forward it",
  },
  // ---- answers: which have a body ----
  {
    name: "an answer to HEAD has no body whatever its length says",
    cls: "response body rules",
    send: `${head("HEAD / HTTP/1.1", "Host: a")}${GET}`,
    replies: ["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", SECOND],
    expect: {
      ...forwarded(`${fwd("HEAD / HTTP/1.1", ["Host: a"])}${FWD_GET}`, [200, 200]),
      connections: 2,
      client: `HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n${SECOND}`,
    },
    headAnswers: [0],
  },
  {
    name: "a body sent anyway after an answer to HEAD is dropped with the connection",
    cls: "response body rules",
    send: `${head("HEAD / HTTP/1.1", "Host: a")}${GET}`,
    replies: ["HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil", SECOND],
    expect: {
      ...forwarded(`${fwd("HEAD / HTTP/1.1", ["Host: a"])}${FWD_GET}`, [200, 200]),
      connections: 2,
      client: `HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n${SECOND}`,
    },
    headAnswers: [0],
  },
  {
    name: "a 204 with a body: the body is dropped with the connection",
    cls: "response body rules",
    send: `${GET}${GET}`,
    replies: ["HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil", SECOND],
    expect: {
      ...forwarded(`${FWD_GET}${FWD_GET}`, [204, 200]),
      connections: 2,
      client: `HTTP/1.1 204 No Content\r\n\r\n${SECOND}`,
    },
  },
  {
    name: "a 304 has no body whatever its length says",
    cls: "response body rules",
    send: `${GET}${GET}`,
    replies: ["HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n", SECOND],
    expect: {
      ...forwarded(`${FWD_GET}${FWD_GET}`, [304, 200]),
      connections: 2,
      client: `HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n${SECOND}`,
    },
  },
  // ---- forwarded headers ----
  {
    name: "a client's forwarded headers are replaced or removed",
    cls: "forwarded headers",
    send: head(
      "GET / HTTP/1.1",
      "Host: a",
      "X-Forwarded-For: 10.6.6.6",
      "X-Real-IP: 10.6.6.6",
      "Forwarded: for=10.6.6.6",
      "X-Forwarded-Host: evil",
      "X-Forwarded-Proto: https",
      "X-Forwarded-Port: 443",
    ),
    expect: forwarded(FWD_GET),
  },
  {
    // CGI, PHP, WSGI and Rack read X_Forwarded_For and X-Forwarded-For as one
    // variable (HTTP_X_FORWARDED_FOR), so the underscore spelling would
    // smuggle the client's value past the one the proxy sets. nginx drops every
    // name with an underscore (underscores_in_headers off); HAProxy forwards
    // them. hafleet drops only the spellings of the names it sets or removes;
    // all three forward the request.
    name: "underscore spellings of forwarded headers are removed too",
    cls: "forwarded headers",
    follows: "HAProxy 2.6 and nginx 1.22",
    send: head(
      "GET / HTTP/1.1",
      "Host: a",
      "X_Forwarded_For: 10.6.6.6",
      "x_real_ip: 10.6.6.6",
      "X-Forwarded_Host: evil",
      "X_Forwarded-Proto: https",
      "X_FORWARDED_PORT: 443",
      "Keep_Alive: 1",
    ),
    expect: forwarded(fwd("GET / HTTP/1.1", ["Host: a", "Keep_Alive: 1"])),
  },
  {
    name: "a trusted proxy's forwarded headers are believed, X-Forwarded-For appended to",
    cls: "forwarded headers",
    send: head(
      "GET / HTTP/1.1",
      "Host: a",
      "X-Forwarded-For: 198.51.100.7",
      "X-Real-IP: 10.6.6.6",
      "X-Forwarded-Host: shop.example",
      "X-Forwarded-Proto: https",
    ),
    trustedProxies: ["127.0.0.0/8"],
    expect: forwarded(
      fwd("GET / HTTP/1.1", ["Host: a"], {
        xff: "198.51.100.7, 127.0.0.1",
        proto: "https",
        host: "shop.example",
      }),
    ),
  },
];
