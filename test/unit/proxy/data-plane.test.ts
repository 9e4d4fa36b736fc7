/**
 * `/healthz` exercises the data plane: real listeners on loopback, one of
 * them killed, and the admin server's answer; worker states as the cluster
 * primary hands them in (main.test.ts runs a real cluster).
 */
import { AdminServer } from "../../../proxy/admin";
import { DataPlaneHealth, type DataPlaneView, WORKER_STALE_MS } from "../../../proxy/data-plane";
import type { ProxyServer } from "../../../proxy/server";
import { config, deadPort, get, Harness, startBackend, startProxy } from "./helpers";

const h = new Harness();
afterEach(() => h.closeAll());

async function twoListeners(): Promise<ProxyServer> {
  const a = h.add(await startBackend("a"));
  const cfg = config({
    listeners: [
      { name: "web", protocol: "http", port: 8080, bind: "127.0.0.1", pool: "web" },
      { name: "raw", protocol: "tcp", port: 8081, bind: "127.0.0.1", pool: "web" },
    ],
    pools: { web: { backends: [{ host: "127.0.0.1", port: a.port }] } },
  });
  return h.add(await startProxy(cfg));
}

async function adminFor(health: DataPlaneHealth): Promise<AdminServer> {
  return h.add(
    await AdminServer.start({
      port: 0,
      status: () => ({ configLoaded: true, configVersion: 1, draining: false }),
      metrics: async () => ({ contentType: "text/plain", body: "" }),
      drain: () => {},
      health: () => health.check(),
    }),
  );
}

describe("the data plane's health", () => {
  it("is healthy while every listener accepts; a listener whose server is gone turns /healthz 503, naming it", async () => {
    const proxy = await twoListeners();
    const view = (): DataPlaneView => ({ draining: false, listeners: proxy.listenerStates() });
    const admin = await adminFor(new DataPlaneHealth(view, { cacheMs: 0 }));
    const ok = await get(admin.port, "/healthz");
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({
      alive: true,
      healthy: true,
      problems: [],
      listeners: [
        { name: "web", ok: true },
        { name: "raw", ok: true },
      ],
    });
    await proxy.listeners.get("raw")!.close();
    const bad = await get(admin.port, "/healthz");
    expect(bad.status).toBe(503);
    expect(JSON.parse(bad.body)).toMatchObject({
      alive: true,
      healthy: false,
      problems: ["listener 'raw' does not listen"],
    });
  });

  it("connects to each listener: one bound where nothing accepts is unhealthy", async () => {
    const port = await deadPort();
    const health = new DataPlaneHealth(
      () => ({ draining: false, listeners: [{ name: "web", address: { address: "127.0.0.1", port } }] }),
      { cacheMs: 0 },
    );
    const report = await health.check();
    expect(report.healthy).toBe(false);
    expect(report.problems).toEqual([
      `listener 'web' on 127.0.0.1:${port} accepts no connection: ECONNREFUSED`,
    ]);
  });

  it("a wildcard bind is probed on loopback", async () => {
    const proxy = await twoListeners();
    const port = proxy.port("web");
    const health = new DataPlaneHealth(() => ({
      draining: false,
      listeners: [{ name: "web", address: { address: "0.0.0.0", port } }],
    }));
    expect(await health.check()).toMatchObject({
      healthy: true,
      listeners: [{ name: "web", address: `127.0.0.1:${port}`, ok: true }],
    });
  });

  it("keeps a result for cacheMs, and checks at the same moment share one probe", async () => {
    const proxy = await twoListeners();
    let views = 0;
    const health = new DataPlaneHealth(
      () => {
        views++;
        return { draining: false, listeners: proxy.listenerStates() };
      },
      { cacheMs: 60_000 },
    );
    await Promise.all([health.check(), health.check(), health.check()]);
    await health.check();
    expect(views).toBe(1);
  });

  it("a draining node closes its listeners on purpose: healthy, nothing probed", async () => {
    const health = new DataPlaneHealth(() => ({
      draining: true,
      listeners: [{ name: "web", address: undefined }],
    }));
    expect(await health.check()).toMatchObject({ healthy: true, draining: true, problems: [] });
  });

  // Worker states as the cluster primary hands them in; each row one way a cluster fails.
  const live = { name: "web", address: { address: "127.0.0.1", port: 0 } };
  const CLUSTER: [string, NonNullable<DataPlaneView["workers"]>, string[]][] = [
    [
      "every worker answered recently",
      {
        expected: 2,
        running: [
          { pid: 11, answeredMsAgo: 10, listeners: [live] },
          { pid: 12, answeredMsAgo: 900, listeners: [live] },
        ],
      },
      [],
    ],
    [
      "a worker that stopped answering",
      {
        expected: 2,
        running: [
          { pid: 11, answeredMsAgo: 10, listeners: [live] },
          { pid: 12, answeredMsAgo: WORKER_STALE_MS + 500, listeners: [live] },
        ],
      },
      [`worker 12 has not answered for ${WORKER_STALE_MS + 500} ms`],
    ],
    [
      "a worker short",
      { expected: 2, running: [{ pid: 11, answeredMsAgo: 10, listeners: [live] }] },
      ["1 of 2 workers running"],
    ],
    [
      "a worker whose listener closed",
      {
        expected: 2,
        running: [
          { pid: 11, answeredMsAgo: 10, listeners: [live] },
          { pid: 12, answeredMsAgo: 10, listeners: [{ name: "web", address: undefined }] },
        ],
      },
      ["listener 'web' of worker 12 does not listen"],
    ],
  ];
  it.each(CLUSTER)("in a cluster, %s", async (_name, workers, problems) => {
    const proxy = await twoListeners();
    const shared = proxy.listenerStates().filter((l) => l.name === "web");
    const withPort = {
      expected: workers.expected,
      running: workers.running.map((w) => ({
        ...w,
        listeners: w.listeners.map((l) => (l.address ? shared[0]! : l)),
      })),
    };
    const report = await new DataPlaneHealth(() => ({
      draining: false,
      listeners: shared,
      workers: withPort,
    })).check();
    expect(report.problems).toEqual(problems);
    expect(report.healthy).toBe(problems.length === 0);
  });
});
