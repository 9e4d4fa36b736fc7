import { createHash, randomBytes } from "node:crypto";
import { connect, createServer as createNetServer } from "node:net";
import { config, deadPort, Harness, startEchoBackend, startProxy } from "./helpers";

const h = new Harness();
afterEach(() => h.closeAll());

function tcpConfig(ports: { port: number; id?: string }[], extra: Record<string, unknown> = {}) {
  return config({
    listeners: [
      { name: "raw", protocol: "tcp", port: 9000, bind: "127.0.0.1", pool: "p", ...(extra.listener ?? {}) },
    ],
    pools: {
      p: {
        backends: ports.map((p) => ({ host: "127.0.0.1", port: p.port, ...(p.id ? { id: p.id } : {}) })),
        healthCheck: { type: "tcp", intervalMs: 60_000, timeoutMs: 1000 },
      },
    },
    ...(extra.timeouts ? { timeouts: extra.timeouts } : {}),
  });
}

/** Sends `text` on a new connection and resolves with the first answer. */
function ask(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1");
    s.on("error", reject);
    s.on("close", () => resolve(""));
    s.on("data", (d) => {
      resolve(d.toString());
      s.destroy();
    });
    s.write(text);
  });
}

describe("tcp proxy", () => {
  it("joins each connection to a backend, round robin, bytes both ways", async () => {
    const a = h.add(await startEchoBackend("a"));
    const b = h.add(await startEchoBackend("b"));
    const proxy = h.add(await startProxy(tcpConfig([a, b])));
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) answers.push(await ask(proxy.port("raw"), `hi${i}`));
    expect(answers).toEqual(["a:hi0", "b:hi1", "a:hi2", "b:hi3"]);
  });

  it("carries a large transfer intact both ways to a slow reader (backpressure)", async () => {
    // A backend that sends 4 MiB of varied bytes, then the sha256 of what it received.
    const big = randomBytes(4 * 1024 * 1024);
    const srv = createNetServer((s) => {
      s.on("error", () => {});
      const hash = createHash("sha256");
      let got = 0;
      // Not reading for a while: the proxy's writes to this backend back up.
      s.pause();
      setTimeout(() => s.resume(), 300);
      s.on("data", (d: Buffer) => {
        hash.update(d);
        got += d.length;
        if (got === big.length) s.end(Buffer.concat([big, Buffer.from(hash.digest("hex"))]));
      });
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    h.add({ close: () => new Promise<void>((r) => srv.close(() => r())) });
    const proxy = h.add(await startProxy(tcpConfig([{ port: (srv.address() as { port: number }).port }])));
    const answer = await new Promise<Buffer>((resolve) => {
      const s = connect(proxy.port("raw"), "127.0.0.1");
      const chunks: Buffer[] = [];
      // Not reading for a while: the proxy's writes to this client back up.
      s.pause();
      setTimeout(() => s.resume(), 300);
      s.on("data", (d: Buffer) => chunks.push(d));
      s.on("end", () => {
        s.destroy();
        resolve(Buffer.concat(chunks));
      });
      s.write(big);
    });
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    expect(answer.length).toBe(big.length + 64);
    expect(sha(answer.subarray(0, big.length))).toBe(sha(big));
    expect(answer.subarray(big.length).toString()).toBe(sha(big));
  });

  it("pipes with node's own 'data' path too (client read buffers off)", async () => {
    const a = h.add(await startEchoBackend("a"));
    const proxy = h.add(await startProxy(tcpConfig([a]), { readBuffers: false }));
    expect(await ask(proxy.port("raw"), "plain")).toBe("a:plain");
  });

  it("retries a connect failure on another backend", async () => {
    const a = h.add(await startEchoBackend("a"));
    const proxy = h.add(await startProxy(tcpConfig([{ port: await deadPort(), id: "dead" }, a])));
    expect(await ask(proxy.port("raw"), "x")).toBe("a:x");
    expect(proxy.pools.get("p")!.pool.retriesTotal).toBe(1);
  });

  it("closes a connection idle for longer than idleMs", async () => {
    const a = h.add(await startEchoBackend("a"));
    const proxy = h.add(await startProxy(tcpConfig([a], { timeouts: { idleMs: 200 } })));
    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(proxy.port("raw"), "127.0.0.1");
      s.on("close", () => resolve(true));
      s.on("error", () => {});
    });
    expect(closed).toBe(true);
  });

  it("sticky without a session table: a client address always reaches the same backend", async () => {
    const bs = [
      h.add(await startEchoBackend("a")),
      h.add(await startEchoBackend("b")),
      h.add(await startEchoBackend("c")),
    ];
    const proxy = h.add(await startProxy(tcpConfig(bs, { listener: { stickiness: {} } })));
    const answers = new Set<string>();
    for (let i = 0; i < 6; i++) answers.add((await ask(proxy.port("raw"), "s")).split(":")[0]!);
    expect(answers.size).toBe(1);
  });
});
