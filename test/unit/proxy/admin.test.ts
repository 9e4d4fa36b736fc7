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

const TOKEN = "0123456789abcdef0123456789abcdef";
const BEARER = { authorization: `Bearer ${TOKEN}` };

/** Who may change state: each row a request to POST /drain and the answer it gets. */
const DRAIN_AUTH: ReadonlyArray<{ name: string; headers: Record<string, string>; status: number }> = [
  { name: "no authorization header", headers: {}, status: 401 },
  { name: "a wrong token", headers: { authorization: `Bearer ${TOKEN.replace("0", "1")}` }, status: 401 },
  { name: "a prefix of the token", headers: { authorization: `Bearer ${TOKEN.slice(0, 8)}` }, status: 401 },
  { name: "the token with another scheme", headers: { authorization: `Basic ${TOKEN}` }, status: 401 },
  { name: "the token in a query-like header", headers: { "x-admin-token": TOKEN }, status: 401 },
  { name: "the right token", headers: BEARER, status: 202 },
  {
    name: "the right token, scheme in lower case",
    headers: { authorization: `bearer ${TOKEN}` },
    status: 202,
  },
];

describe("admin token", () => {
  it.each(DRAIN_AUTH)("POST /drain with $name answers $status; reads need no token", async (row) => {
    let drainCalls = 0;
    const admin = h.add(
      await AdminServer.start({
        port: 0,
        token: TOKEN,
        status: () => ({ configLoaded: true, configVersion: 1, draining: drainCalls > 0 }),
        metrics: async () => ({ contentType: "text/plain", body: "" }),
        drain: () => {
          drainCalls++;
        },
      }),
    );
    const res = await get(admin.port, "/drain", { method: "POST", headers: row.headers });
    expect(res.status).toBe(row.status);
    expect(drainCalls).toBe(row.status === 202 ? 1 : 0);
    if (row.status === 401) expect(res.headers["www-authenticate"]).toBe("Bearer");
    for (const path of ["/healthz", "/readyz", "/metrics"])
      expect([200, 503]).toContain((await get(admin.port, path)).status);
  });
});

describe("admin server", () => {
  it("refuses every state change when started without a token", async () => {
    let drainCalls = 0;
    const admin = h.add(
      await AdminServer.start({
        port: 0,
        status: () => ({ configLoaded: true, configVersion: 1, draining: false }),
        metrics: async () => ({ contentType: "text/plain", body: "" }),
        drain: () => {
          drainCalls++;
        },
      }),
    );
    for (const headers of [{}, BEARER]) {
      const refused = await get(admin.port, "/drain", { method: "POST", headers });
      expect(refused.status).toBe(403);
      expect(JSON.parse(refused.body).error).toContain("--admin-token-file");
    }
    expect(drainCalls).toBe(0);
    expect((await get(admin.port, "/readyz")).status).toBe(200);
  });

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
        token: TOKEN,
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
    expect((await get(admin.port, "/drain", { method: "POST", headers: BEARER })).status).toBe(202);
    expect(drainCalls).toBe(1);
    const notReady = await get(admin.port, "/readyz");
    expect(notReady.status).toBe(503);
    expect(JSON.parse(notReady.body)).toMatchObject({ ready: false, draining: true });
  });
});
