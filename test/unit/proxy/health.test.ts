/**
 * Active health checks, outlier ejection and panic mode through the real
 * proxy and real backends. Scenarios are data: what each backend answers on
 * its n-th check or request, and the expected transitions and picks.
 */
import { createServer as createNetServer } from "node:net";
import { HealthChecker } from "../../../proxy/health";
import { Pool } from "../../../proxy/pool";
import { config, eventually, get, Harness, sleep, startBackend, startProxy, webConfig } from "./helpers";

const h = new Harness();
afterEach(() => h.closeAll());

describe("active health checks", () => {
  // Each row: the statuses a backend answers to its checks in order, rise,
  // fall, and the expected transitions as [check number (1-based), healthy].
  const rows: [string, number[], number, number, [number, boolean][]][] = [
    [
      "goes down after `fall` failures and up after `rise` successes",
      [200, 500, 500, 500, 200, 200, 200],
      2,
      3,
      [
        [4, false],
        [6, true],
      ],
    ],
    ["a failure streak shorter than `fall` changes nothing", [500, 500, 200, 500, 500, 200], 2, 3, []],
    [
      "a success streak shorter than `rise` keeps it down",
      [500, 200, 500, 200, 200],
      2,
      1,
      [
        [1, false],
        [5, true],
      ],
    ],
    [
      "statuses outside expectStatus count as failures",
      [302, 404, 404, 200],
      1,
      2,
      [
        [3, false],
        [4, true],
      ],
    ],
  ];
  it.each(rows)("%s", async (_name, answers, rise, fall, expected) => {
    const b = h.add(await startBackend("b"));
    let n = 0;
    b.handler = (req, res) => {
      if (req.url !== "/health") return res.end("x");
      const status = answers[n++] ?? 200;
      res.statusCode = status;
      res.end();
    };
    const cfg = config({
      listeners: [{ name: "l", protocol: "http", port: 1, pool: "p" }],
      pools: {
        p: {
          backends: [{ host: "127.0.0.1", port: b.port }],
          healthCheck: {
            type: "http",
            path: "/health",
            intervalMs: 100,
            timeoutMs: 90,
            rise,
            fall,
            expectStatus: [200, 399],
          },
        },
      },
    });
    const pool = new Pool("p", cfg.pools.p!);
    const transitions: [number, boolean][] = [];
    const setHealthy = pool.setHealthy.bind(pool);
    pool.setHealthy = (backend, healthy) => {
      transitions.push([n, healthy]);
      setHealthy(backend, healthy);
    };
    const checker = new HealthChecker(pool);
    h.add({ close: () => checker.stop() });
    checker.start();
    await eventually(() => n >= answers.length + 1, 20_000, "all scripted checks");
    checker.stop();
    expect(transitions).toEqual(expected);
  });

  it("tcp checks: a closed port is down, an open one up", async () => {
    const srv = createNetServer((s) => s.destroy());
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as { port: number }).port;
    h.add({ close: () => new Promise<void>((r) => srv.close(() => r())) });
    const cfg = config({
      listeners: [{ name: "l", protocol: "tcp", port: 1, pool: "p" }],
      pools: {
        p: {
          backends: [
            { host: "127.0.0.1", port, id: "open" },
            { host: "127.0.0.1", port: 1, id: "closed" },
          ],
          healthCheck: { type: "tcp", intervalMs: 100, timeoutMs: 90, fall: 1 },
        },
      },
    });
    const pool = new Pool("p", cfg.pools.p!);
    const checker = new HealthChecker(pool);
    h.add({ close: () => checker.stop() });
    expect(await checker.checkOnce(pool.byId("open")!)).toBe(true);
    expect(await checker.checkOnce(pool.byId("closed")!)).toBe(false);
  });

  it("the proxy stops sending to a backend its checks find down, and resumes when it recovers", async () => {
    const a = h.add(await startBackend("a"));
    const b = h.add(await startBackend("b"));
    let bHealthy = true;
    b.handler = (req, res) => {
      if (req.url === "/health") res.statusCode = bHealthy ? 200 : 503;
      res.end("b");
    };
    const cfg = webConfig([a, b], {
      healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 90, rise: 2, fall: 2 },
      panicThresholdPercent: 0,
    });
    const proxy = h.add(await startProxy(cfg, { healthChecks: true }));
    const pool = proxy.pools.get("web")!.pool;
    bHealthy = false;
    await eventually(() => !pool.byId(`127.0.0.1:${b.port}`)!.healthy, 20_000, "b down");
    const down = await Promise.all(Array.from({ length: 6 }, () => get(proxy.port("web"))));
    expect(down.map((r) => r.body)).toEqual(["a", "a", "a", "a", "a", "a"]);
    bHealthy = true;
    await eventually(() => pool.byId(`127.0.0.1:${b.port}`)!.healthy, 20_000, "b up");
    const up: string[] = [];
    for (let i = 0; i < 4; i++) up.push((await get(proxy.port("web"))).body);
    expect(up.sort()).toEqual(["a", "a", "b", "b"]);
  });
});

describe("outlier ejection", () => {
  it("ejects a backend after consecutive 5xx, sends it nothing while ejected, and takes it back after the period", async () => {
    const good = h.add(await startBackend("good"));
    const bad = h.add(await startBackend("bad"));
    let badFails = true;
    bad.handler = (_req, res) => {
      res.statusCode = badFails ? 500 : 200;
      res.end("bad");
    };
    const cfg = webConfig([good, bad], {
      outlier: { consecutiveFailures: 2, baseEjectionMs: 500, maxEjectionPercent: 50 },
    });
    const proxy = h.add(await startProxy(cfg));
    const port = proxy.port("web");
    // Round robin: good, bad(500), good, bad(500) -> ejected; then only good.
    const seq: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await get(port);
      seq.push(`${r.body}:${r.status}`);
    }
    expect(seq).toEqual([
      "good:200",
      "bad:500",
      "good:200",
      "bad:500",
      "good:200",
      "good:200",
      "good:200",
      "good:200",
    ]);
    const pool = proxy.pools.get("web")!.pool;
    expect(pool.ejectionsTotal).toBe(1);
    badFails = false;
    await sleep(600);
    const after = new Set<string>();
    for (let i = 0; i < 4; i++) after.add((await get(port)).body);
    expect([...after].sort()).toEqual(["bad", "good"]);
  });

  it("never ejects more than maxEjectionPercent: with one backend of two allowed, the second failing one stays", async () => {
    const x = h.add(await startBackend("x"));
    const y = h.add(await startBackend("y"));
    for (const b of [x, y]) {
      b.handler = (_req, res) => {
        res.statusCode = 502;
        res.end(b.name);
      };
    }
    const cfg = webConfig([x, y], {
      outlier: { consecutiveFailures: 1, baseEjectionMs: 60_000, maxEjectionPercent: 50 },
    });
    const proxy = h.add(await startProxy(cfg));
    for (let i = 0; i < 6; i++) await get(proxy.port("web"));
    const pool = proxy.pools.get("web")!.pool;
    expect(pool.backends.filter((b) => b.ejected)).toHaveLength(1);
    expect(pool.eligible()).toHaveLength(1);
  });
});

describe("panic mode", () => {
  it("sends to every backend when too few are healthy, as Envoy and ELB do", async () => {
    const bs = [
      h.add(await startBackend("a")),
      h.add(await startBackend("b")),
      h.add(await startBackend("c")),
    ];
    // b and c fail their health checks but still serve: the health signal is wrong.
    for (const b of bs) {
      b.handler = (req, res) => {
        if (req.url === "/health" && b.name !== "a") res.statusCode = 500;
        res.end(b.name);
      };
    }
    const cfg = webConfig(bs, {
      healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 90, fall: 1 },
      panicThresholdPercent: 50,
    });
    const proxy = h.add(await startProxy(cfg, { healthChecks: true }));
    const pool = proxy.pools.get("web")!.pool;
    await eventually(() => pool.backends.filter((b) => !b.healthy).length === 2, 20_000, "two down");
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add((await get(proxy.port("web"))).body);
    expect(pool.panic).toBe(true);
    expect([...seen].sort()).toEqual(["a", "b", "c"]);
  });
});
