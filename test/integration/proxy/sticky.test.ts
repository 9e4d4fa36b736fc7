/**
 * Sticky sessions over the shared session table on the emulator: a session
 * created through one proxy instance is honoured by a second instance; a
 * store that is down or slow falls back to consistent hashing, never to an
 * error.
 */

import { randomBytes } from "node:crypto";
import { createServer, type Socket } from "node:net";
import type { FleetConfig, ListenerConfig } from "../../../lib/core/config";
import { SessionTable } from "../../../lib/core/sessions";
import { StateStore } from "../../../lib/core/store";
import { ensureTables, type TableNames } from "../../../lib/core/tables";
import { hash32 } from "../../../proxy/hash";
import { Pool } from "../../../proxy/pool";
import type { ProxyServer } from "../../../proxy/server";
import { deadPort, get, Harness, startBackend, startProxy, webConfig } from "../../unit/proxy/helpers";

const h = new Harness();
afterEach(() => h.closeAll());

const suffix = randomBytes(4).toString("hex");
const tables: TableNames = {
  state: `proxy-sticky-state-${suffix}`,
  sessions: `proxy-sticky-sessions-${suffix}`,
};

beforeAll(async () => {
  const store = new StateStore({ tables });
  await ensureTables(store.client, tables);
  store.destroy();
});

function stickyConfig(ports: number[], weights?: number[]): FleetConfig {
  return webConfig(
    ports.map((port, i) => ({ port, id: `b${i}`, ...(weights ? { weight: weights[i] } : {}) })),
    {},
    { listener: { stickiness: { cookieName: "HAFLEET", ttlS: 600 } } },
  );
}

/**
 * A proxy whose session table is the emulator's (or `endpoint`'s). With a
 * working store the wait is generous, so that a busy machine never turns a
 * slow answer into a fallback (tests assert outcomes, not timing).
 */
async function proxyWithStore(cfg: FleetConfig, nodeId: string, endpoint?: string): Promise<ProxyServer> {
  const store = new StateStore({
    tables,
    ...(endpoint ? { aws: { endpoint, connectTimeoutMs: 200 } } : {}),
    // A working store gets retries and time; a failing one must fail fast.
    ...(endpoint ? { retry: { maxAttempts: 1 } } : { attemptTimeoutMs: 10_000 }),
  });
  h.add({ close: () => store.destroy() });
  return h.add(
    await startProxy(cfg, {
      sessions: (l: ListenerConfig) =>
        new SessionTable({
          store,
          fleetId: "sticky-test",
          listener: l.name,
          nodeId,
          ttlS: l.stickiness!.ttlS,
          deadlineMs: endpoint ? 300 : 20_000,
        }),
      sessionWaitMs: endpoint ? 300 : 20_000,
    }),
  );
}

/** The session key a Set-Cookie carries (what the table is keyed on, without the backend's hint). */
function cookieOf(setCookie: string | string[] | undefined): string {
  return sessionCookieOf(setCookie).key;
}

/** The whole cookie value (what a browser sends back), and its session key. */
function sessionCookieOf(setCookie: string | string[] | undefined): { value: string; key: string } {
  const line = Array.isArray(setCookie) ? setCookie[0] : setCookie;
  const m = /^HAFLEET=(([A-Za-z0-9_-]+)\.[0-9a-z]+);/.exec(line ?? "");
  if (!m) throw new Error(`no HAFLEET cookie in ${String(line)}`);
  return { value: m[1]!, key: m[2]! };
}

describe("sticky sessions across proxy instances", () => {
  it("a session created through one instance is honoured by a second whose hashing would pick otherwise", async () => {
    const backends = [
      h.add(await startBackend("x")),
      h.add(await startBackend("y")),
      h.add(await startBackend("z")),
    ];
    const ports = backends.map((b) => b.port);
    const one = await proxyWithStore(stickyConfig(ports), "node-one");
    // The second instance weighs z five times (a config change between the nodes, say):
    // consistent hashing there moves keys, so only the table can keep them where they are.
    const twoConfig = stickyConfig(ports, [1, 1, 5]);
    const two = await proxyWithStore(twoConfig, "node-two");

    // Thirty sessions through instance one. A new session gets the backend that
    // consistent hashing gives its random key, so they spread over x, y and z
    // (one backend left out: probability 3 x (2/3)^30, about 2e-5).
    const sessions: { key: string; backend: string }[] = [];
    for (let i = 0; i < 30; i++) {
      const r = await get(one.port("web"));
      expect(r.status).toBe(200);
      sessions.push({ key: cookieOf(r.headers["set-cookie"]), backend: r.body });
    }
    expect(new Set(sessions.map((s) => s.backend))).toEqual(new Set(["x", "y", "z"]));
    // Hashing at instance two would send some of them elsewhere (none: about 1e-6).
    const names: Record<string, string> = { b0: "x", b1: "y", b2: "z" };
    const hashedAtTwo = new Pool("web", twoConfig.pools.web!);
    const elsewhere = sessions.filter((s) => names[hashedAtTwo.hashPick(hash32(s.key))!.id] !== s.backend);
    expect(elsewhere.length).toBeGreaterThan(0);

    // Each returns through instance two with its key alone (no backend hint: only the table
    // knows), then with the cookie it is handed: same backend each time, and the hint once.
    for (const s of sessions) {
      const r = await get(two.port("web"), "/", { headers: { cookie: `other=1; HAFLEET=${s.key}` } });
      expect(r.body).toBe(s.backend);
      const cookie = sessionCookieOf(r.headers["set-cookie"]);
      expect(cookie.key).toBe(s.key);
      const again = await get(two.port("web"), "/", { headers: { cookie: `HAFLEET=${cookie.value}` } });
      expect(again.body).toBe(s.backend);
      expect(again.headers["set-cookie"]).toBeUndefined();
    }
    expect(one.stickyRouters.get("web:600")!.fallbacks).toBe(0);
    expect(two.stickyRouters.get("web:600")!.fallbacks).toBe(0);
  });

  it("moves a session whose backend is down, and another instance reads the move", async () => {
    const backends = [h.add(await startBackend("x")), h.add(await startBackend("y"))];
    const cfg = stickyConfig(backends.map((b) => b.port));
    const one = await proxyWithStore(cfg, "node-one");
    const two = await proxyWithStore(cfg, "node-two");
    const first = await get(one.port("web"));
    const key = cookieOf(first.headers["set-cookie"]);
    const other = first.body === "x" ? "y" : "x";
    // The backend goes down on instance one (as its health checks would decide).
    const pool = one.pools.get("web")!.pool;
    pool.setHealthy(pool.backends.find((b) => (first.body === "x" ? b.id === "b0" : b.id === "b1"))!, false);
    const moved = await get(one.port("web"), "/", { headers: { cookie: `HAFLEET=${key}` } });
    expect(moved.body).toBe(other);
    // Instance two still sees both backends healthy, and follows the stored move.
    const reader = new StateStore({ tables });
    h.add({ close: () => reader.destroy() });
    const table = new SessionTable({
      store: reader,
      fleetId: "sticky-test",
      listener: "web",
      nodeId: "reader",
      ttlS: 600,
    });
    const stored = await table.get(key);
    expect(stored?.backend).toBe(first.body === "x" ? "b1" : "b0");
    // An instance that has not cached the old mapping reads the move (a cached
    // one follows within the table's cacheMs).
    const viaTwo = await get(two.port("web"), "/", { headers: { cookie: `HAFLEET=${key}` } });
    expect(viaTwo.body).toBe(other);
  });
});

describe("sticky sessions when the store fails", () => {
  // Rows: how the store fails. Either way: every request answered 200, and a
  // session key always reaches the same backend (consistent hashing).
  const rows: [string, () => Promise<string>][] = [
    ["unreachable (connection refused)", async () => `http://127.0.0.1:${await deadPort()}`],
    [
      "slow (accepts, never answers)",
      async () => {
        const sockets = new Set<Socket>();
        const srv = createServer((s) => {
          sockets.add(s);
          s.on("error", () => {});
        });
        await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
        h.add({
          close: () =>
            new Promise<void>((r) => {
              for (const s of sockets) s.destroy();
              srv.close(() => r());
            }),
        });
        return `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
      },
    ],
  ];
  it.each(rows)("store %s: falls back to consistent hashing, never an error", async (_name, endpoint) => {
    const backends = [
      h.add(await startBackend("x")),
      h.add(await startBackend("y")),
      h.add(await startBackend("z")),
    ];
    const cfg = stickyConfig(backends.map((b) => b.port));
    const down = await proxyWithStore(cfg, "node-down", await endpoint());
    const alsoDown = await proxyWithStore(cfg, "node-down-2", await endpoint());
    const first = await get(down.port("web"));
    expect(first.status).toBe(200);
    const { key, value } = sessionCookieOf(first.headers["set-cookie"]);
    for (const cookie of [key, value]) {
      for (const p of [down, alsoDown, down]) {
        const r = await get(p.port("web"), "/", { headers: { cookie: `HAFLEET=${cookie}` } });
        expect(r.status).toBe(200);
        expect(r.body).toBe(first.body);
      }
    }
    expect(down.stickyRouters.get("web:600")!.fallbacks).toBeGreaterThan(0);
  });

  it("sessions created while the store worked keep their backend at a node that cannot reach it", async () => {
    // The node that takes over after a failover starts with a cold cache; if the
    // store is slow then, hashing decides, and must agree with the stored mappings.
    const backends = [
      h.add(await startBackend("x")),
      h.add(await startBackend("y")),
      h.add(await startBackend("z")),
    ];
    const cfg = stickyConfig(backends.map((b) => b.port));
    const up = await proxyWithStore(cfg, "node-up");
    const cut = await proxyWithStore(cfg, "node-cut", `http://127.0.0.1:${await deadPort()}`);
    for (let i = 0; i < 20; i++) {
      const first = await get(up.port("web"));
      const key = cookieOf(first.headers["set-cookie"]);
      const again = await get(cut.port("web"), "/", { headers: { cookie: `HAFLEET=${key}` } });
      expect(again.status).toBe(200);
      expect(again.body).toBe(first.body);
    }
    expect(cut.stickyRouters.get("web:600")!.fallbacks).toBe(20);
  });

  it("a session keeps its backend at a node that cannot reach the store, where hashing would move it: the cookie's hint", async () => {
    const backends = [
      h.add(await startBackend("x")),
      h.add(await startBackend("y")),
      h.add(await startBackend("z")),
    ];
    const ports = backends.map((b) => b.port);
    const up = await proxyWithStore(stickyConfig(ports), "node-up");
    // The node that cannot reach the store weighs z five times: hashing there moves keys.
    const cutConfig = stickyConfig(ports, [1, 1, 5]);
    const cut = await proxyWithStore(cutConfig, "node-cut", `http://127.0.0.1:${await deadPort()}`);
    const names: Record<string, string> = { b0: "x", b1: "y", b2: "z" };
    const hashedAtCut = new Pool("web", cutConfig.pools.web!);
    const sessions: { key: string; value: string; backend: string }[] = [];
    for (let i = 0; i < 30; i++) {
      const r = await get(up.port("web"));
      sessions.push({ ...sessionCookieOf(r.headers["set-cookie"]), backend: r.body });
    }
    const elsewhere = sessions.filter((s) => names[hashedAtCut.hashPick(hash32(s.key))!.id] !== s.backend);
    expect(elsewhere.length).toBeGreaterThan(0); // none: about 1e-6
    for (const s of sessions) {
      const r = await get(cut.port("web"), "/", { headers: { cookie: `HAFLEET=${s.value}` } });
      expect(r.status).toBe(200);
      expect(r.body).toBe(s.backend);
      expect(r.headers["set-cookie"]).toBeUndefined();
    }
    expect(cut.stickyRouters.get("web:600")!.fallbacks).toBe(30);
  });
});
