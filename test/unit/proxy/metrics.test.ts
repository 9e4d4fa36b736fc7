/**
 * `/metrics` says who failed: a client's bad request, a backend's bad answer
 * and an answer cut half way each land in their own metric, with labels from
 * closed sets (`stats.ts`), TCP streams are not HTTP answers, and the
 * active-connections gauge is 0 once every socket is gone. Each row is a
 * client's bytes, the backend's answer, and the samples that must follow.
 */
import { connect } from "node:net";
import { HEAD_FAULTS } from "../../../proxy/http1";
import { createProxyRegistry } from "../../../proxy/metrics";
import { ABORTS, BACKEND_ERRORS, CLIENT_REFUSALS, TCP_ENDS } from "../../../proxy/stats";
import { config, eventually, Harness, raw, startEchoBackend, startProxy, webConfig } from "./helpers";
import { type RawReply, startRawBackend } from "./raw-backend";

const h = new Harness();
afterEach(() => h.closeAll());

function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

const GET = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

interface Row {
  readonly name: string;
  readonly send: string;
  readonly replies: readonly RawReply[];
  /** Samples (name and labels, as Prometheus prints them) that must be 1. */
  readonly one: readonly string[];
  /** Samples that must be absent. */
  readonly none: readonly string[];
}

const ROWS: readonly Row[] = [
  {
    name: "a client's two lengths are a refusal, not a backend error",
    send: "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    replies: [],
    one: [
      'hafleet_proxy_refused_total{listener="web",reason="repeated content-length"}',
      'hafleet_proxy_requests_total{listener="web",code="400"}',
    ],
    none: ['hafleet_proxy_backend_errors_total{listener="web",reason="repeated content-length"}'],
  },
  {
    name: "a backend's bad length is a backend error, not a refusal",
    send: GET,
    replies: ["HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"],
    one: [
      'hafleet_proxy_backend_errors_total{listener="web",reason="bad content-length"}',
      'hafleet_proxy_requests_total{listener="web",code="502"}',
    ],
    none: ['hafleet_proxy_refused_total{listener="web",reason="bad content-length"}'],
  },
  {
    name: "an answer cut by the backend half way is aborted, not a 200",
    send: GET,
    replies: [{ writes: ["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"], close: true }],
    one: ['hafleet_proxy_aborted_total{listener="web",reason="backend closed mid-answer"}'],
    none: ['hafleet_proxy_requests_total{listener="web",code="200"}'],
  },
  {
    name: "an answer that stalls past serverMs is aborted, not a 200",
    send: GET,
    replies: [{ writes: ["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"] }],
    one: ['hafleet_proxy_aborted_total{listener="web",reason="server timeout"}'],
    none: ['hafleet_proxy_requests_total{listener="web",code="200"}'],
  },
];

describe("metrics", () => {
  it.each(ROWS.map((r) => [r.name, r] as const))("%s", async (_name, row) => {
    const b = h.add(await startRawBackend(row.replies));
    const proxy = h.add(await startProxy(webConfig([b], {}, { timeouts: { serverMs: 300 } })));
    const registry = createProxyRegistry({ proxy: () => proxy });
    await raw(proxy.port("web"), row.send);
    await eventually(() => proxy.gate.open === 0, 10_000, "the connection to close");
    const got = samples(await registry.metrics());
    for (const s of row.one) expect([s, got.get(s)]).toEqual([s, 1]);
    for (const s of row.none) expect([s, got.get(s)]).toEqual([s, undefined]);
    expect(got.get('hafleet_proxy_active_connections{listener="web"}')).toBe(0);
  });

  it("a TCP stream is counted by how it ended, never as an HTTP status", async () => {
    const echo = h.add(await startEchoBackend("e"));
    const proxy = h.add(
      await startProxy(
        config({
          listeners: [{ name: "raw", protocol: "tcp", port: 1, bind: "127.0.0.1", pool: "p" }],
          pools: { p: { backends: [{ host: "127.0.0.1", port: echo.port }], healthCheck: { type: "tcp" } } },
        }),
      ),
    );
    const registry = createProxyRegistry({ proxy: () => proxy });
    await new Promise<void>((resolve) => {
      const s = connect(proxy.port("raw"), "127.0.0.1");
      s.on("data", () => s.end());
      s.on("close", () => resolve());
      s.write("hi");
    });
    await eventually(() => proxy.gate.open === 0, 10_000, "the stream to end");
    const text = await registry.metrics();
    expect(text).not.toMatch(/hafleet_proxy_requests_total\{listener="raw"/);
    const got = samples(text);
    const ends = [...got].filter(([k]) => k.startsWith('hafleet_proxy_tcp_streams_total{listener="raw"'));
    expect(ends.reduce((n, [, v]) => n + v, 0)).toBe(1);
    expect(got.get('hafleet_proxy_active_connections{listener="raw"}')).toBe(0);
  });

  it("every reason label comes from its closed set", async () => {
    // Traffic of every kind above, then each reason printed must be one of its set.
    const b = h.add(await startRawBackend(["HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"]));
    const proxy = h.add(await startProxy(webConfig([b])));
    const registry = createProxyRegistry({ proxy: () => proxy });
    await raw(proxy.port("web"), GET);
    await raw(proxy.port("web"), "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    await raw(proxy.port("web"), "BREW /pot HTTP/3.0\r\n\r\n");
    const sets: Record<string, readonly string[]> = {
      hafleet_proxy_refused_total: CLIENT_REFUSALS,
      hafleet_proxy_backend_errors_total: BACKEND_ERRORS,
      hafleet_proxy_aborted_total: ABORTS,
      hafleet_proxy_tcp_streams_total: TCP_ENDS,
    };
    let seen = 0;
    for (const key of samples(await registry.metrics()).keys()) {
      const name = key.slice(0, key.indexOf("{"));
      const set = sets[name];
      if (!set) continue;
      const label = /(?:reason|end)="([^"]*)"/.exec(key)![1]!;
      expect([name, set.includes(label)]).toEqual([name, true]);
      seen++;
    }
    expect(seen).toBeGreaterThanOrEqual(3);
    expect(CLIENT_REFUSALS).toEqual(expect.arrayContaining([...HEAD_FAULTS]));
  });
});
