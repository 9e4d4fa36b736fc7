/**
 * How connections end, written as data: what the client sends, how it
 * behaves afterwards, what the backend does, and what must come of it. Every
 * case ends with the proxy holding no connection (`maxConnections` slot and
 * active-connections gauge back to 0), whatever the client does. Each case
 * is run by the proxy's lifecycle test, and the leak soak (`soak.ts`) plays
 * them mixed, by the thousand; the backends and the client player are here.
 */
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";

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
    // The backend's close is a reset when the client's bytes lie unread in its
    // buffer, which may overtake its `bye`: only the freed slot is certain.
    name: "tcp: the backend closes while the client sends",
    protocol: "tcp",
    backend: "tcp-close-on-data",
    send: ["hi"],
    after: "keep sending",
    answer: "",
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

export interface ClosePatternBackend {
  readonly port: number;
  /** Every byte a raw backend read, its connections joined ("" for `http`). */
  got(): string;
  /** Closes the connections it holds (the proxy's pooled keep-alive ones too). */
  dropConnections(): void;
  close(): Promise<void>;
}

/** A backend of `kind` on loopback; `got` collects every byte it reads, all connections joined (raw kinds). */
export async function closeBackend(kind: BackendKind): Promise<ClosePatternBackend> {
  const sockets = new Set<Socket>();
  const chunks: Buffer[] = [];
  if (kind === "http") return httpBackend();
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.on("data", (d: Buffer) => chunks.push(Buffer.from(d)));
    switch (kind as Exclude<BackendKind, "http">) {
      case "http-until-close":
        s.once("data", () => s.end("HTTP/1.1 200 OK\r\n\r\nuntil-close"));
        break;
      case "tcp-echo":
        s.on("data", (d: Buffer) => s.write(`echo:${d.toString("latin1")}`));
        s.on("end", () => s.end());
        break;
      case "tcp-answer-at-end":
        s.on("end", () => s.end(`got:${Buffer.concat(chunks).toString("latin1")}`));
        break;
      case "tcp-fin-first":
        s.end("hello");
        break;
      case "tcp-close-on-data":
        s.once("data", () => {
          s.write("bye");
          s.destroy();
        });
        break;
      case "tcp-reset-on-data":
        s.once("data", () => s.resetAndDestroy());
        break;
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    got: () => Buffer.concat(chunks).toString("latin1"),
    dropConnections: () => {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** node:http answering 200 `ok` to every request (its parser is llhttp, as strict as backends get). */
async function httpBackend(): Promise<ClosePatternBackend> {
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    got: () => "",
    dropConnections: () => server.closeAllConnections(),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/**
 * Plays the client side of `c`; resolves with what it received once its part
 * is over. Its socket stays as the case left it (an idle client never closes)
 * until `close`.
 */
export function playClient(
  c: CloseCase,
  port: number,
  host = "127.0.0.1",
): Promise<{ readonly received: string; close(): void }> {
  return new Promise((resolve) => {
    // Half-open, so the client's own socket never answers the proxy's FIN by itself.
    const s = connect({ port, host, allowHalfOpen: true });
    const got: Buffer[] = [];
    let ticker: NodeJS.Timeout | undefined;
    let done = false;
    const text = () => Buffer.concat(got).toString("latin1");
    const finish = () => {
      if (done) return;
      done = true;
      if (ticker) clearInterval(ticker);
      resolve({ received: text(), close: () => void s.destroy() });
    };
    s.on("error", () => {});
    s.on("data", (d: Buffer) => {
      got.push(d);
      if (c.after === "reset" && text().includes(c.answer)) {
        s.resetAndDestroy();
        finish();
      }
    });
    s.on("end", () => {
      if (c.after === "fin after answer") s.end();
      if (c.after === "write after FIN") s.end("late");
      if (c.after !== "keep sending") finish();
    });
    s.on("close", finish);
    s.on("connect", () => {
      for (const part of c.send) s.write(part, "latin1");
      if (c.after === "half-close") s.end();
      if (c.after === "keep sending") {
        // Bounded: at most 2,000 bytes, one every 5 ms; the proxy must reset it long before.
        let left = 2000;
        ticker = setInterval(() => {
          if (--left < 0 || s.destroyed) return finish();
          s.write("x");
        }, 5);
      }
    });
  });
}
