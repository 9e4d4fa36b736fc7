/**
 * Every way a connection ends (`close-patterns.ts`) leaves the proxy holding
 * nothing: the answer arrives, half-closed streams are carried through, and
 * the connection slot and the active-connections gauge return to 0 within
 * the lingering close (`timeouts.lingerMs`), whatever the client does.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import type { ProxyServer } from "../../../proxy/server";
import { type BackendKind, CLOSE_CASES, type CloseCase } from "./close-patterns";
import { config, eventually, get, Harness, startBackend, startProxy } from "./helpers";

const LINGER_MS = 300;
const h = new Harness();
afterEach(() => h.closeAll());

/** A raw backend of `kind`; `got` collects every byte it reads, all connections joined. */
async function rawBackend(
  kind: BackendKind,
): Promise<{ port: number; got: () => string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const chunks: Buffer[] = [];
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.on("data", (d: Buffer) => chunks.push(Buffer.from(d)));
    switch (kind) {
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
      case "http":
        throw new Error("'http' is node:http (startBackend)");
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    got: () => Buffer.concat(chunks).toString("latin1"),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function proxyFor(c: CloseCase, backendPort: number): Promise<ProxyServer> {
  const cfg = config({
    listeners: [{ name: "l", protocol: c.protocol, port: 1, bind: "127.0.0.1", pool: "p" }],
    pools: {
      p: {
        backends: [{ host: "127.0.0.1", port: backendPort }],
        healthCheck: { type: "tcp", intervalMs: 60_000, timeoutMs: 1000 },
      },
    },
    timeouts: { lingerMs: LINGER_MS, idleMs: 60_000, headMs: 60_000 },
  });
  return h.add(await startProxy(cfg));
}

/** Plays the client side of `c`; resolves with what it received once its part is over. */
function playClient(c: CloseCase, port: number): Promise<string> {
  return new Promise((resolve) => {
    // Half-open, so the client's own socket never answers the proxy's FIN by itself.
    const s = connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const got: Buffer[] = [];
    let ticker: NodeJS.Timeout | undefined;
    let done = false;
    const text = () => Buffer.concat(got).toString("latin1");
    const finish = () => {
      if (done) return;
      done = true;
      if (ticker) clearInterval(ticker);
      resolve(text());
      h.add({ close: () => void s.destroy() });
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

describe("connection lifecycle: every close pattern frees its slot", () => {
  it.each(CLOSE_CASES.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    const backend =
      c.backend === "http" ? h.add(await startBackend("b")) : h.add(await rawBackend(c.backend));
    const proxy = await proxyFor(c, backend.port);
    const port = proxy.port("l");
    const stats = proxy.stats.get("l")!;

    const got = await playClient(c, port);
    if (c.answer !== "") {
      const seen = got.split(c.answer).length - 1;
      if (c.times !== undefined) expect(seen).toBe(c.times);
      else expect(seen).toBeGreaterThanOrEqual(1);
    }
    if (c.backendGot !== undefined) {
      const raw = backend as { got?: () => string };
      await eventually(() => raw.got!() === c.backendGot, 10_000, `backend to get '${c.backendGot}'`);
    }
    // The client may still hold its socket open: the proxy must not.
    await eventually(() => proxy.gate.open === 0, 10_000, "the connection slot to be freed");
    expect(stats.activeConnections).toBe(0);
    if (c.protocol === "http") expect((await get(port)).status).toBe(200);
  });
});
