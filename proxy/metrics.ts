/**
 * Prometheus metrics of a proxy process, read from the plain counters the hot
 * path keeps (`stats.ts`, `pool.ts`) at scrape time. Each metric object gives
 * prom-client what its registry asks of a metric (`get()` and an aggregator),
 * so that the cluster primary can merge the workers' registries with
 * prom-client's `AggregatorRegistry`: counters, histograms and gauges of load
 * add up; `backend_up` takes the minimum (up only where every worker sees it
 * up); panic and config version take the maximum.
 */
import { type Metric, Registry } from "prom-client";
import type { ProxyServer } from "./server";
import { LATENCY_BUCKETS_S, type ListenerStats } from "./stats";

type Labels = Record<string, string | number>;
interface Value {
  value: number;
  labels: Labels;
  metricName?: string;
}
type Aggregator = "sum" | "min" | "max" | "first" | "omit" | "average";

/** A metric computed at scrape time, in the shape prom-client's registry reads. */
class Collected {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
    readonly aggregator: Aggregator,
    private readonly collect: () => Value[],
  ) {}

  get() {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: this.collect(),
    };
  }

  reset(): void {}
}

/** What the registry reads; the proxy of this process may be replaced (e.g. after a failed start). */
export interface MetricsSource {
  proxy(): ProxyServer | undefined;
}

export function createProxyRegistry(source: MetricsSource): Registry {
  const registry = new Registry();
  const add = (
    name: string,
    help: string,
    type: "counter" | "gauge" | "histogram",
    aggregator: Aggregator,
    collect: () => Value[],
  ) => registry.registerMetric(new Collected(name, help, type, aggregator, collect) as unknown as Metric);
  const each = <T>(fn: (p: ProxyServer) => T[]): T[] => {
    const p = source.proxy();
    return p ? fn(p) : [];
  };

  add(
    "hafleet_proxy_requests_total",
    "HTTP answers sent whole, and the proxy's own error answers, by listener and status (cut answers: hafleet_proxy_aborted_total).",
    "counter",
    "sum",
    () =>
      each((p) =>
        [...p.stats.values()].flatMap((s) =>
          [...s.byStatus].map(([code, value]) => ({ value, labels: { listener: s.listener, code } })),
        ),
      ),
  );
  add(
    "hafleet_proxy_request_duration_seconds",
    "Time from a request head (TCP: connection) to the end of its answer, or its cut (TCP: close).",
    "histogram",
    "sum",
    () =>
      each((p) =>
        [...p.stats.values()].flatMap((s) => {
          const out: Value[] = [];
          let cumulative = 0;
          for (let i = 0; i <= LATENCY_BUCKETS_S.length; i++) {
            cumulative += s.buckets[i]!;
            const le = i < LATENCY_BUCKETS_S.length ? String(LATENCY_BUCKETS_S[i]) : "+Inf";
            out.push({
              value: cumulative,
              labels: { listener: s.listener, le },
              metricName: "hafleet_proxy_request_duration_seconds_bucket",
            });
          }
          out.push({
            value: s.latencySumS,
            labels: { listener: s.listener },
            metricName: "hafleet_proxy_request_duration_seconds_sum",
          });
          out.push({
            value: s.latencyCount,
            labels: { listener: s.listener },
            metricName: "hafleet_proxy_request_duration_seconds_count",
          });
          return out;
        }),
      ),
  );
  add("hafleet_proxy_active_connections", "Open client connections.", "gauge", "sum", () =>
    each((p) =>
      [...p.stats.values()].map((s) => ({ value: s.activeConnections, labels: { listener: s.listener } })),
    ),
  );
  add("hafleet_proxy_connections_total", "Client connections accepted.", "counter", "sum", () =>
    each((p) =>
      [...p.stats.values()].map((s) => ({ value: s.connectionsTotal, labels: { listener: s.listener } })),
    ),
  );
  add(
    "hafleet_proxy_connections_refused_total",
    "Client connections refused by limits.maxConnections.",
    "counter",
    "sum",
    () =>
      each((p) =>
        [...p.stats.values()].map((s) => ({ value: s.connectionsRefused, labels: { listener: s.listener } })),
      ),
  );
  const byReason = (
    name: string,
    help: string,
    label: string,
    pick: (s: ListenerStats) => Map<string, number>,
  ) =>
    add(name, help, "counter", "sum", () =>
      each((p) =>
        [...p.stats.values()].flatMap((s) =>
          [...pick(s)].map(([reason, value]) => ({
            value,
            labels: { listener: s.listener, [label]: reason },
          })),
        ),
      ),
    );
  byReason(
    "hafleet_proxy_refused_total",
    "Requests the proxy refused itself, the client's doing or over a limit, by reason.",
    "reason",
    (s) => s.refused,
  );
  byReason(
    "hafleet_proxy_backend_errors_total",
    "Exchanges that failed on the backend's side before an answer started (502, 503, 504), by reason.",
    "reason",
    (s) => s.backendErrors,
  );
  byReason(
    "hafleet_proxy_aborted_total",
    "Answers cut after they had started (the client got a reset), and tunnels closed when idle, by reason.",
    "reason",
    (s) => s.aborted,
  );
  byReason(
    "hafleet_proxy_tcp_streams_total",
    "TCP streams ended, by how they ended.",
    "end",
    (s) => s.tcpEnds,
  );
  const backends = (p: ProxyServer) =>
    [...p.pools.values()].flatMap(({ pool }) => pool.backends.map((b) => ({ pool, b })));
  add(
    "hafleet_proxy_backend_up",
    "1 when a backend is healthy (active checks) and not ejected (outlier detection).",
    "gauge",
    "min",
    () =>
      each((p) =>
        backends(p).map(({ pool, b }) => ({
          value: pool.backendUp(b) ? 1 : 0,
          labels: { pool: pool.name, backend: b.id },
        })),
      ),
  );
  add(
    "hafleet_proxy_backend_healthy",
    "Active health check state of a backend (1 healthy).",
    "gauge",
    "min",
    () =>
      each((p) =>
        backends(p).map(({ pool, b }) => ({
          value: b.healthy ? 1 : 0,
          labels: { pool: pool.name, backend: b.id },
        })),
      ),
  );
  add(
    "hafleet_proxy_backend_outstanding",
    "Requests (TCP: connections) in flight to a backend.",
    "gauge",
    "sum",
    () =>
      each((p) =>
        backends(p).map(({ pool, b }) => ({
          value: b.outstanding,
          labels: { pool: pool.name, backend: b.id },
        })),
      ),
  );
  add(
    "hafleet_proxy_backend_requests_total",
    "Requests (TCP: connections) sent to a backend.",
    "counter",
    "sum",
    () =>
      each((p) =>
        backends(p).map(({ pool, b }) => ({ value: b.requests, labels: { pool: pool.name, backend: b.id } })),
      ),
  );
  add("hafleet_proxy_ejections_total", "Outlier ejections of a backend.", "counter", "sum", () =>
    each((p) =>
      backends(p).map(({ pool, b }) => ({ value: b.ejections, labels: { pool: pool.name, backend: b.id } })),
    ),
  );
  add(
    "hafleet_proxy_retries_total",
    "Requests sent again to another backend after a connect failure.",
    "counter",
    "sum",
    () =>
      each((p) =>
        [...p.pools.values()].map(({ pool }) => ({ value: pool.retriesTotal, labels: { pool: pool.name } })),
      ),
  );
  add(
    "hafleet_proxy_pool_panic",
    "1 while a pool is in panic mode (too few healthy backends: sends to all).",
    "gauge",
    "max",
    () =>
      each((p) =>
        [...p.pools.values()].map(({ pool }) => {
          pool.members(); // brings the panic flag up to date
          return { value: pool.panic ? 1 : 0, labels: { pool: pool.name } };
        }),
      ),
  );
  add(
    "hafleet_proxy_sticky_fallbacks_total",
    "Sticky decisions made by consistent hashing because the session table failed or was slow.",
    "counter",
    "sum",
    () =>
      each((p) => {
        // Routers are kept per listener and TTL; a TTL change leaves two for one listener.
        const byListener = new Map<string, number>();
        for (const [key, r] of p.stickyRouters) {
          const listener = key.slice(0, key.lastIndexOf(":"));
          byListener.set(listener, (byListener.get(listener) ?? 0) + r.fallbacks);
        }
        return [...byListener].map(([listener, value]) => ({ value, labels: { listener } }));
      }),
  );
  add("hafleet_proxy_config_version", "Version of the fleet config in force.", "gauge", "max", () =>
    each((p) => [{ value: p.version, labels: {} }]),
  );
  return registry;
}
