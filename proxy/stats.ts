/**
 * Per-listener counters kept as plain numbers on the hot path; `metrics.ts`
 * turns them into Prometheus metrics when scraped. Updating a prom-client
 * metric with labels costs a label hash per call; a Map increment does not.
 */

/** Latency buckets in seconds: sub-millisecond resolution where a proxy's overhead lives. */
export const LATENCY_BUCKETS_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

export class ListenerStats {
  /** Answers by status code (HTTP) ; TCP counts connections under code 0. */
  readonly byStatus = new Map<number, number>();
  /** Cumulative counts per bucket (last = +Inf), sum in seconds, count. */
  readonly buckets = new Float64Array(LATENCY_BUCKETS_S.length + 1);
  latencySumS = 0;
  latencyCount = 0;
  activeConnections = 0;
  connectionsTotal = 0;
  /** Connections refused by `limits.maxConnections`. */
  connectionsRefused = 0;
  /** Requests refused by parsing or limits, by reason. */
  readonly refused = new Map<string, number>();

  constructor(
    readonly listener: string,
    readonly protocol: "http" | "tcp",
    readonly pool: string,
  ) {}

  countStatus(status: number): void {
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1);
  }

  countRefused(reason: string): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  observe(ms: number): void {
    const s = ms / 1000;
    this.latencySumS += s;
    this.latencyCount++;
    let i = 0;
    while (i < LATENCY_BUCKETS_S.length && s > LATENCY_BUCKETS_S[i]!) i++;
    this.buckets[i]!++;
  }
}
