import { AdminServer } from "../../../proxy/admin";
import { createProxyRegistry } from "../../../proxy/metrics";
import { deadPort, get, Harness, startBackend, startProxy, webConfig } from "./helpers";

const h = new Harness();
afterEach(() => h.closeAll());

/** Reads one sample from Prometheus text; undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
      return Number(line.split(" ").pop());
  }
  return undefined;
}

describe("admin server", () => {
  it("serves healthz, readyz with the role an agent sets, metrics, and POST /drain", async () => {
    const a = h.add(await startBackend("a"));
    const dead = await deadPort();
    const cfg = webConfig([a, { id: "dead", port: dead }], {
      outlier: { consecutiveFailures: 1, baseEjectionMs: 60_000, maxEjectionPercent: 50 },
    });
    const proxy = h.add(await startProxy(cfg, { version: 7 }));
    const registry = createProxyRegistry({ proxy: () => proxy });
    let drainCalls = 0;
    const admin = h.add(
      await AdminServer.start({
        port: 0,
        status: () => ({ configLoaded: true, configVersion: proxy.version, draining: proxy.draining }),
        metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
        drain: () => {
          drainCalls++;
          void proxy.drain();
        },
      }),
    );

    // Traffic: the dead backend fails one connect (retried on a), is ejected; a 404 from a.
    a.handler = (req, res) => {
      res.statusCode = req.url === "/missing" ? 404 : 200;
      res.end("a");
    };
    for (let i = 0; i < 3; i++) expect((await get(proxy.port("web"))).status).toBe(200);
    expect((await get(proxy.port("web"), "/missing")).status).toBe(404);

    expect((await get(admin.port, "/healthz")).status).toBe(200);
    const ready = await get(admin.port, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ ready: true, role: "none", configVersion: 7 });
    admin.setRole("active");
    expect(JSON.parse((await get(admin.port, "/readyz")).body).role).toBe("active");

    const m = await get(admin.port, "/metrics");
    expect(m.status).toBe(200);
    const text = m.body;
    expect(sample(text, "hafleet_proxy_requests_total", { listener: "web", code: "200" })).toBe(3);
    expect(sample(text, "hafleet_proxy_requests_total", { listener: "web", code: "404" })).toBe(1);
    expect(sample(text, "hafleet_proxy_request_duration_seconds_count", { listener: "web" })).toBe(4);
    expect(
      sample(text, "hafleet_proxy_request_duration_seconds_bucket", { listener: "web", le: "+Inf" }),
    ).toBe(4);
    expect(sample(text, "hafleet_proxy_retries_total", { pool: "web" })).toBe(1);
    expect(sample(text, "hafleet_proxy_ejections_total", { backend: "dead" })).toBe(1);
    expect(sample(text, "hafleet_proxy_backend_up", { backend: "dead" })).toBe(0);
    expect(sample(text, "hafleet_proxy_backend_up", { backend: `127.0.0.1:${a.port}` })).toBe(1);
    expect(sample(text, "hafleet_proxy_active_connections", { listener: "web" })).toBe(0);
    expect(sample(text, "hafleet_proxy_config_version")).toBe(7);

    expect((await get(admin.port, "/drain")).status).toBe(405);
    expect((await get(admin.port, "/drain", { method: "POST" })).status).toBe(202);
    expect(drainCalls).toBe(1);
    const notReady = await get(admin.port, "/readyz");
    expect(notReady.status).toBe(503);
    expect(JSON.parse(notReady.body)).toMatchObject({ ready: false, draining: true });
  });
});
