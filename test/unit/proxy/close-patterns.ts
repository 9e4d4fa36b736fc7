/**
 * How connections end, written as data: what the client sends, how it
 * behaves afterwards, what the backend does, and what must come of it. Every
 * case ends with the proxy holding no connection (`maxConnections` slot and
 * active-connections gauge back to 0), whatever the client does. Run by
 * `lifecycle.test.ts`; the leak soak draws its mix from the same cases.
 */

/** What a backend does on each connection (`lifecycle.test.ts` builds them). */
export type BackendKind =
  /** node:http, answers 200 "ok" to each request. */
  | "http"
  /** Answers each request 200 with no length and closes (the body ends with the connection). */
  | "http-until-close"
  /** Echoes each read, prefixed with `echo:`. */
  | "tcp-echo"
  /** Reads until the proxy's FIN, then answers `got:<all bytes>` and closes. */
  | "tcp-answer-at-end"
  /** Sends `hello` and FIN at once, keeps reading; records what it reads. */
  | "tcp-fin-first"
  /** On the first bytes, answers `bye` and closes at once. */
  | "tcp-close-on-data"
  /** On the first bytes, resets the connection. */
  | "tcp-reset-on-data";

/**
 * After its writes, the client:
 * - `half-close`: shuts down its sending side (`shutdown(SHUT_WR)`), keeps reading;
 * - `keep sending`: sends a byte every few milliseconds and never closes;
 * - `fin after answer`: sends FIN once the proxy's FIN arrives;
 * - `idle`: does nothing more, never closes, never sends FIN;
 * - `reset`: resets the connection once the answer arrives;
 * - `write after FIN`: once the proxy's FIN arrives, sends `late` and FIN.
 */
export type ClientAfter =
  | "half-close"
  | "keep sending"
  | "fin after answer"
  | "idle"
  | "reset"
  | "write after FIN";

export interface CloseCase {
  readonly name: string;
  readonly protocol: "http" | "tcp";
  readonly backend: BackendKind;
  /** What the client writes, one string per write (latin1). */
  readonly send: readonly string[];
  readonly after: ClientAfter;
  /** The client must receive bytes containing this (`times` times, default once or more). */
  readonly answer: string;
  readonly times?: number;
  /** The backend must have received exactly this (cases about what reaches it). */
  readonly backendGot?: string;
}

const GET_CLOSE = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
const GET = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

export const CLOSE_CASES: readonly CloseCase[] = [
  // ---- the proxy closes while the client still sends (issue: the slot was never freed)
  {
    name: "Connection: close, the client keeps sending",
    protocol: "http",
    backend: "http",
    send: [GET_CLOSE],
    after: "keep sending",
    answer: "HTTP/1.1 200",
  },
  {
    name: "HTTP/1.0 POST with a trailing CRLF, FIN after the answer",
    protocol: "http",
    backend: "http",
    send: ["POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nab\r\n"],
    after: "fin after answer",
    answer: "HTTP/1.1 200",
  },
  {
    name: "a request pipelined after Connection: close, client idle",
    protocol: "http",
    backend: "http",
    send: [GET_CLOSE + GET],
    after: "idle",
    answer: "HTTP/1.1 200",
  },
  {
    name: "the backend closes first (body until close), the client keeps sending",
    protocol: "http",
    backend: "http-until-close",
    send: [GET],
    after: "keep sending",
    answer: "until-close",
  },
  {
    name: "a refused request, the client keeps sending",
    protocol: "http",
    backend: "http",
    send: ["GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
    after: "keep sending",
    answer: "HTTP/1.1 400",
  },
  {
    name: "the client resets after its answer",
    protocol: "http",
    backend: "http",
    send: [GET],
    after: "reset",
    answer: "HTTP/1.1 200",
  },
  {
    name: "tcp: the backend closes while the client sends",
    protocol: "tcp",
    backend: "tcp-close-on-data",
    send: ["hi"],
    after: "keep sending",
    answer: "bye",
  },
  {
    name: "tcp: the backend resets while the client sends",
    protocol: "tcp",
    backend: "tcp-reset-on-data",
    send: ["hi"],
    after: "keep sending",
    answer: "",
  },
  {
    name: "tcp: the client resets",
    protocol: "tcp",
    backend: "tcp-echo",
    send: ["hi"],
    after: "reset",
    answer: "echo:hi",
  },
  // ---- half-close: a client's FIN ends only its side (issue: no answer came)
  {
    name: "HTTP/1.1 GET, then shutdown(SHUT_WR): answered",
    protocol: "http",
    backend: "http",
    send: [GET],
    after: "half-close",
    answer: "HTTP/1.1 200",
  },
  {
    name: "HTTP/1.0 GET, then shutdown(SHUT_WR): answered",
    protocol: "http",
    backend: "http",
    send: ["GET / HTTP/1.0\r\n\r\n"],
    after: "half-close",
    answer: "HTTP/1.1 200",
  },
  {
    name: "two pipelined GETs, then shutdown(SHUT_WR): both answered",
    protocol: "http",
    backend: "http",
    send: [GET + GET],
    after: "half-close",
    answer: "HTTP/1.1 200",
    times: 2,
  },
  {
    name: "POST with a body, then shutdown(SHUT_WR): answered",
    protocol: "http",
    backend: "http",
    send: ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"],
    after: "half-close",
    answer: "HTTP/1.1 200",
  },
  {
    name: "tcp: bytes, then shutdown(SHUT_WR): the backend's answer after the FIN arrives",
    protocol: "tcp",
    backend: "tcp-answer-at-end",
    send: ["hello"],
    after: "half-close",
    answer: "got:hello",
    backendGot: "hello",
  },
  {
    name: "tcp: the backend's FIN first, the client's bytes after it still arrive",
    protocol: "tcp",
    backend: "tcp-fin-first",
    send: [],
    after: "write after FIN",
    answer: "hello",
    backendGot: "late",
  },
];
