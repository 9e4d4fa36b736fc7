/**
 * Per-listener counters kept as plain numbers on the hot path; `metrics.ts`
 * turns them into Prometheus metrics when scraped. Updating a prom-client
 * metric with labels costs a label hash per call; a Map increment does not.
 */

import { HEAD_FAULTS } from "./http1";

/** Latency buckets in seconds: sub-millisecond resolution where a proxy's overhead lives. */
export const LATENCY_BUCKETS_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

/**
 * Why the proxy refused a request itself, the client's doing or over a
 * limit: `hafleet_proxy_refused_total{reason}`. Every label of every metric
 * below comes from a closed set like this one (as Envoy's response flags).
 */
export const CLIENT_REFUSALS = [
  ...HEAD_FAULTS,
  "bare CR or LF in head",
  "head too large",
  "body too large",
  "bad chunk",
  "CONNECT",
  "head timeout",
  "body timeout",
] as const;
export type ClientRefusal = (typeof CLIENT_REFUSALS)[number];

/** Why an exchange failed on the backend's side before an answer started: `hafleet_proxy_backend_errors_total{reason}`. */
export const BACKEND_ERRORS = [
  ...HEAD_FAULTS,
  "bare CR or LF in response head",
  "response head too large",
  "101 without upgrade",
  "bad chunked response",
  "no backend available",
  "connect failed",
  "backend closed before answering",
  "server timeout",
  "total timeout",
] as const;
export type BackendError = (typeof BACKEND_ERRORS)[number];

/**
 * Why an exchange was cut after its answer had started (the client got part
 * of it, then a reset), or a tunnel was closed: `hafleet_proxy_aborted_total{reason}`.
 * Such exchanges are not counted in `hafleet_proxy_requests_total`.
 */
export const ABORTS = [
  "client timeout",
  "server timeout",
  "total timeout",
  "backend closed mid-answer",
  "bad response body",
  "bad request body",
  "tunnel idle",
] as const;
export type Abort = (typeof ABORTS)[number];

/** How a TCP stream ended: `hafleet_proxy_tcp_streams_total{end}`. */
export const TCP_ENDS = [
  "closed",
  "client closed",
  "idle timeout",
  "no backend available",
  "connect failed",
  "drain",
] as const;
export type TcpEnd = (typeof TCP_ENDS)[number];

export class ListenerStats {
  /** Answers sent whole, or refusals of the proxy's own, by status code (HTTP). */
  readonly byStatus = new Map<number, number>();
  /** Cumulative counts per bucket (last = +Inf), sum in seconds, count. */
  readonly buckets = new Float64Array(LATENCY_BUCKETS_S.length + 1);
  latencySumS = 0;
  latencyCount = 0;
  activeConnections = 0;
  connectionsTotal = 0;
  /** Connections refused by `limits.maxConnections`. */
  connectionsRefused = 0;
  readonly refused = new Map<ClientRefusal, number>();
  readonly backendErrors = new Map<BackendError, number>();
  readonly aborted = new Map<Abort, number>();
  readonly tcpEnds = new Map<TcpEnd, number>();

  constructor(
    readonly listener: string,
    readonly protocol: "http" | "tcp",
    readonly pool: string,
  ) {}

  countStatus(status: number): void {
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1);
  }

  countRefused(reason: ClientRefusal): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  countBackendError(reason: BackendError): void {
    this.backendErrors.set(reason, (this.backendErrors.get(reason) ?? 0) + 1);
  }

  countAborted(reason: Abort): void {
    this.aborted.set(reason, (this.aborted.get(reason) ?? 0) + 1);
  }

  countTcpEnd(end: TcpEnd): void {
    this.tcpEnds.set(end, (this.tcpEnds.get(end) ?? 0) + 1);
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
