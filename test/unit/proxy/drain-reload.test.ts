/**
 * Drain and hot reload keep every request: in-flight requests finish, and a
 * config change under load fails none.
 */
import { connect } from "node:net";
import {
  eventually,
  get,
  Harness,
  keepAliveAgent,
  type Reply,
  startBackend,
  startProxy,
  webConfig,
} from "./helpers";

const h = new Harness();
afterEach(() => h.closeAll());

describe("drain", () => {
  it("finishes in-flight requests (zero failed), refuses new connections, closes idle keep-alives", async () => {
    const a = h.add(await startBackend("a"));
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    a.handler = (req, res) => {
      if (req.url === "/slow") void gate.then(() => res.end("done"));
      else res.end("a");
    };
    const proxy = h.add(await startProxy(webConfig([a])));
    const port = proxy.port("web");

    // An idle keep-alive client connection: drain must close it.
    const idle = connect(port, "127.0.0.1");
    const idleClosed = new Promise<void>((r) => idle.on("close", () => r()));
    idle.on("error", () => {});
    idle.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    await new Promise((r) => idle.once("data", r));

    const agent = h.add(keepAliveAgent(20));
    const inFlight: Promise<Reply>[] = Array.from({ length: 10 }, () => get(port, "/slow", { agent }));
    await eventually(
      () => a.seen.filter((r) => r.url === "/slow").length === 10,
      20_000,
      "10 requests in flight",
    );

    const drained = proxy.drain();
    await idleClosed;
    await expect(get(port, "/")).rejects.toThrow(/ECONNREFUSED/);
    release();
    const replies = await Promise.all(inFlight);
    await drained;
    expect(replies.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(replies.map((r) => r.headers.connection)).toEqual(Array(10).fill("close"));
    expect(proxy.listeners.get("web")!.conns.size).toBe(0);
  });

  it("cuts what is still running at drainMs", async () => {
    const a = h.add(await startBackend("a"));
    a.handler = () => {}; // never answers
    const proxy = h.add(await startProxy(webConfig([a], {}, { timeouts: { drainMs: 200 } })));
    const pending = get(proxy.port("web"), "/hang").then(
      (r) => `status ${r.status}`,
      (err: Error) => err.message,
    );
    await eventually(() => a.seen.length === 1);
    await proxy.drain();
    expect(await pending).toMatch(/socket hang up|ECONNRESET/);
  });
});

describe("hot reload", () => {
  it("applies new backends, algorithm and timeouts under load with zero failed requests", async () => {
    const a = h.add(await startBackend("a"));
    const b = h.add(await startBackend("b"));
    const c = h.add(await startBackend("c"));
    const proxy = h.add(await startProxy(webConfig([a])));
    const port = proxy.port("web");
    const agent = h.add(keepAliveAgent(8));
    let stop = false;
    const failures: string[] = [];
    const served: { phase: number; body: string }[] = [];
    let phase = 1;
    const loop = async () => {
      while (!stop) {
        const p = phase;
        try {
          const r = await get(port, "/", { agent });
          if (r.status !== 200) failures.push(`status ${r.status}`);
          // A request that overlapped an apply belongs to no phase.
          served.push({ phase: phase === p ? p : 0, body: r.body });
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const loops = Array.from({ length: 6 }, loop);
    const count = (n: number) => served.filter((s) => s.phase === n).length;
    await eventually(() => count(1) >= 50, 20_000, "load in phase 1");

    // Phase 2: a removed, b and c added, another algorithm and timeouts.
    // Requests started while an apply runs belong to no phase (0).
    phase = 0;
    await proxy.apply(
      webConfig([b, c], { algorithm: "weighted-round-robin" }, { timeouts: { requestMs: 30_000 } }),
    );
    phase = 2;
    await eventually(() => count(2) >= 50, 20_000, "load in phase 2");
    // Phase 3: back to a only, consistent hashing.
    phase = 0;
    await proxy.apply(webConfig([a], { algorithm: "consistent-hash", hashKey: { source: "client-ip" } }));
    phase = 3;
    await eventually(() => count(3) >= 50, 20_000, "load in phase 3");
    stop = true;
    await Promise.all(loops);

    expect(failures).toEqual([]);
    // A request started after an apply resolved goes to the new backends only.
    expect(new Set(served.filter((s) => s.phase === 2).map((s) => s.body))).toEqual(new Set(["b", "c"]));
    expect(new Set(served.filter((s) => s.phase === 3).map((s) => s.body))).toEqual(new Set(["a"]));
    expect(proxy.version).toBe(2);
  });

  it("keeps the old config when a new listener cannot bind, and says which", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a])));
    const taken = proxy.port("web");
    const next = webConfig([a]);
    const bad = {
      ...next,
      listeners: [...next.listeners, { ...next.listeners[0]!, name: "other", port: taken }],
    };
    // `other` has no port override: it tries the port `web` already holds.
    await expect(proxy.apply(bad)).rejects.toThrow(
      /listener 'other' cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/,
    );
    expect(proxy.listeners.has("other")).toBe(false);
    expect((await get(taken)).status).toBe(200);
  });
});
