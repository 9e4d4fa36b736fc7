/**
 * Timeouts are inactivity per direction (`clientMs`, `serverMs`, `tunnelMs`),
 * with an optional total (`requestMs`): what keeps moving is never cut, what
 * stalls is. Each row is a backend behaviour and a client behaviour, as data,
 * with what must come of them. Streams move a chunk every 20 ms against a
 * timeout of 1,000 ms, so a busy machine cannot make a moving stream look
 * stalled; stalls are waited for as events (the answer, the close).
 */
import { connect, createServer, type Socket } from "node:net";
import { eventually, Harness, startProxy, webConfig } from "./helpers";

const h = new Harness();
afterEach(() => h.closeAll());

/** How the backend behaves once it has read a request head. */
type BackendDoes =
  /** Answers chunked, one chunk every 20 ms, `chunks` chunks in all. */
  | { readonly stream: number }
  /** Answers with a head and one chunk, then says nothing more. */
  | "stall mid-answer"
  /** Never answers. */
  | "silent"
  /** Waits for a body of `length` bytes, then answers 200. */
  | { readonly body: number }
  /** Switches to an echo tunnel (101). */
  | "tunnel";

/** What the client sends after its head. */
type ClientDoes =
  /** Nothing more (a GET). */
  | "nothing"
  /** `n` body bytes, one every 20 ms. */
  | { readonly trickle: number }
  /** One body byte of the promised `body` bytes, then nothing. */
  | "stall body"
  /** Tunnel bytes every 20 ms, `n` times, then nothing. */
  | { readonly ping: number };

interface Row {
  readonly name: string;
  readonly timeouts: Record<string, number>;
  readonly backend: BackendDoes;
  readonly client: ClientDoes;
  /** What the client gets: a status, `complete` (the whole answer), `reset` (cut mid-answer), or `tunnel` (its pings back, then a close once idle). */
  readonly outcome:
    | { readonly status: number }
    | { readonly complete: number }
    | "reset"
    | { readonly tunnel: number };
}

const SLOW = { clientMs: 1000, serverMs: 1000, tunnelMs: 1000 };
const ROWS: readonly Row[] = [
  {
    name: "a download that keeps moving outlives serverMs and clientMs",
    timeouts: SLOW,
    backend: { stream: 110 },
    client: "nothing",
    outcome: { complete: 110 },
  },
  {
    name: "a download that keeps moving is cut at the optional total requestMs",
    timeouts: { ...SLOW, requestMs: 1000 },
    backend: { stream: 110 },
    client: "nothing",
    outcome: "reset",
  },
  {
    name: "a backend that stops mid-answer is cut after serverMs",
    timeouts: { ...SLOW, serverMs: 300 },
    backend: "stall mid-answer",
    client: "nothing",
    outcome: "reset",
  },
  {
    name: "a backend that never answers gets 504 after serverMs",
    timeouts: { ...SLOW, serverMs: 300 },
    backend: "silent",
    client: "nothing",
    outcome: { status: 504 },
  },
  {
    name: "a request body that keeps moving outlives clientMs",
    timeouts: SLOW,
    backend: { body: 110 },
    client: { trickle: 110 },
    outcome: { status: 200 },
  },
  {
    name: "a request body that stalls gets 408 after clientMs",
    timeouts: { ...SLOW, clientMs: 300 },
    backend: { body: 10 },
    client: "stall body",
    outcome: { status: 408 },
  },
  {
    name: "a tunnel that keeps moving outlives tunnelMs, then closes when idle",
    timeouts: SLOW,
    backend: "tunnel",
    client: { ping: 110 },
    outcome: { tunnel: 110 },
  },
];

/** A raw backend doing `does` on every connection; `closed` counts connections that ended. */
async function backend(
  does: BackendDoes,
): Promise<{ port: number; closed: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let closed = 0;
  const server = createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => {
      sockets.delete(s);
      closed++;
    });
    let text = "";
    let answered = false;
    s.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      if (end < 0 || answered) {
        if (
          typeof does === "object" &&
          "body" in does &&
          end >= 0 &&
          !answered &&
          text.length - end - 4 >= does.body
        )
          answer();
        return;
      }
      if (does === "tunnel") {
        answered = true;
        s.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
        s.removeAllListeners("data");
        s.on("data", (x: Buffer) => s.write(x));
        return;
      }
      if (typeof does === "object" && "body" in does) {
        if (text.length - end - 4 >= does.body) answer();
        return;
      }
      answer();
    });
    const answer = () => {
      answered = true;
      if (does === "silent") return;
      if (typeof does === "object" && "body" in does) {
        s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        return;
      }
      s.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n");
      if (does === "stall mid-answer") return;
      let left = (does as { stream: number }).stream - 1;
      const t = setInterval(() => {
        if (s.destroyed) return clearInterval(t);
        if (left-- > 0) s.write("1\r\nx\r\n");
        else {
          clearInterval(t);
          s.write("0\r\n\r\n");
        }
      }, 20);
    };
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    closed: () => closed,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

interface Seen {
  readonly text: string;
  /** The connection ended with a reset (or an error) rather than a FIN after a whole answer. */
  readonly reset: boolean;
}

function play(row: Row, port: number): Promise<Seen> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    h.add({ close: () => void s.destroy() });
    let text = "";
    let reset = false;
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      if (timer) clearInterval(timer);
      resolve({ text, reset });
    };
    // Every request asks for Connection: close: the close is the event waited for.
    s.on("data", (d: Buffer) => {
      text += d.toString("latin1");
    });
    s.on("error", () => {
      reset = true;
    });
    s.on("close", done);
    s.on("connect", () => {
      const c = row.client;
      const close = "Connection: close\r\n";
      if (c === "nothing") s.write(`GET / HTTP/1.1\r\nHost: a\r\n${close}\r\n`);
      else if (c === "stall body")
        s.write(`POST / HTTP/1.1\r\nHost: a\r\n${close}Content-Length: 10\r\n\r\nx`);
      else if ("trickle" in c) {
        s.write(`POST / HTTP/1.1\r\nHost: a\r\n${close}Content-Length: ${c.trickle}\r\n\r\n`);
        let left = c.trickle;
        timer = setInterval(() => (left-- > 0 ? s.write("b") : clearInterval(timer)), 20);
      } else {
        s.write("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
        let left = c.ping;
        timer = setInterval(() => {
          if (left-- > 0) s.write("p");
          else clearInterval(timer);
        }, 20);
      }
    });
  });
}

describe("timeouts: inactivity per direction, an optional total", () => {
  it.each(ROWS.map((r) => [r.name, r] as const))("%s", async (_name, row) => {
    const b = h.add(await backend(row.backend));
    const proxy = h.add(
      await startProxy(webConfig([b], {}, { timeouts: { headMs: 60_000, ...row.timeouts } })),
    );
    const seen = await play(row, proxy.port("web"));
    const o = row.outcome;
    if (o === "reset") {
      expect(seen.text).toMatch(/^HTTP\/1\.1 200/);
      expect(seen.text).not.toMatch(/\r\n0\r\n\r\n$/);
    } else if ("status" in o) {
      expect(Number(seen.text.slice(9, 12))).toBe(o.status);
    } else if ("complete" in o) {
      expect(seen.text).toMatch(/\r\n0\r\n\r\n$/);
      expect(seen.text.split("1\r\nx\r\n").length - 1).toBe(o.complete);
    } else {
      expect(seen.text).toMatch(/^HTTP\/1\.1 101/);
      // Every ping came back, and then, idle, the proxy closed the tunnel.
      const after = seen.text.slice(seen.text.indexOf("\r\n\r\n") + 4);
      expect(after).toBe("p".repeat(o.tunnel));
    }
    if (typeof o === "object" && "status" in o && o.status >= 400) {
      // The backend connection of a refused exchange is closed, not kept.
      await eventually(() => b.closed() >= 1, 10_000, "the backend connection to close");
    }
  });
});
