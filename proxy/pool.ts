/**
 * A pool of backends and everything that decides which of them may take a
 * request: active health (set by `health.ts`), passive outlier ejection, panic
 * mode, slow start, and the pool's balancer. Connections to backends live in
 * `upstream.ts`; a backend here only keeps its idle keep-alive list.
 *
 * Eligibility, in order:
 * 1. A backend with weight 0 takes nothing new.
 * 2. Healthy (active checks) and not ejected (outlier detection) backends form
 *    the set, unless fewer than `panicThresholdPercent` of the pool are in it:
 *    then the pool panics and uses every backend (Envoy's and ELB's rule: a
 *    probably-wrong health signal should not take the whole service down).
 * 3. The balancer picks in that set; a recovered or added backend's weight
 *    ramps from 10% to 100% over `slowStartMs` (consistent hashing excepted:
 *    its table must not move keys while weights ramp).
 *
 * Outlier detection: `consecutiveFailures` 5xx answers or connect failures in a
 * row eject a backend for `baseEjectionMs` x (times ejected), capped at
 * max(`baseEjectionMs`, 300 s) as Envoy's max_ejection_time, and never more than
 * `maxEjectionPercent` of the pool at once.
 */
import type { Logger } from "pino";
import { type BackendConfig, backendId, type PoolConfig } from "../lib/core/config";
import { type Balancer, createBalancer, Maglev, type Weighted } from "./balancer";
import { hash32 } from "./hash";

/** The longest ejection, unless `baseEjectionMs` is longer (Envoy's max_ejection_time default). */
export const MAX_EJECTION_MS = 300_000;
/** Where slow start begins, as a share of the weight (HAProxy's slowstart starts near 0; Envoy's min_weight_percent default is 10). */
export const SLOW_START_MIN = 0.1;

export interface IdleConnection {
  /** Monotonic ms at which the connection went idle. */
  idleSinceMs: number;
  destroy(): void;
}

export class Backend implements Weighted {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly zone: string | undefined;
  /** What a sticky session's cookie carries to name this backend: a hash of its id, base 36 (sticky.ts). */
  readonly hint: string;
  weight: number;
  effectiveWeight: number;
  outstanding = 0;
  current = 0;
  /** Active health: starts healthy (as HAProxy) so a restart serves at once; `fall` failures take it down. */
  healthy = true;
  /** Consecutive active-check results in the current direction. */
  checkStreak = 0;
  consecutiveFailures = 0;
  ejectedUntilMs = 0;
  ejections = 0;
  /** Monotonic ms when slow start began; -Infinity when not ramping. */
  slowStartAtMs = Number.NEGATIVE_INFINITY;
  /** Removed from the config by a reload: finish what is in flight, take nothing new. */
  removed = false;
  /** Idle keep-alive connections, most recently used last (LIFO keeps few sockets warm). */
  readonly idle: IdleConnection[] = [];
  /** Open upstream connections (idle or busy). */
  connections = 0;
  // Counters read by /metrics.
  requests = 0;
  failures = 0;

  constructor(config: BackendConfig) {
    this.id = backendId(config);
    this.host = config.host;
    this.port = config.port;
    this.zone = config.zone;
    this.hint = hash32(this.id).toString(36);
    this.weight = config.weight;
    this.effectiveWeight = config.weight;
  }

  get ejected(): boolean {
    return this.ejectedUntilMs > 0;
  }

  closeIdle(): void {
    for (const c of this.idle.splice(0)) c.destroy();
  }
}

export interface PoolOptions {
  readonly logger?: Logger;
  /** Monotonic milliseconds. @default performance.now */
  readonly now?: () => number;
}

export class Pool {
  readonly name: string;
  config: PoolConfig;
  backends: Backend[] = [];
  private byIdMap = new Map<string, Backend>();
  private balancer: Balancer<Backend>;
  private readonly hashFallback = new Maglev<Backend>();
  private set: Backend[] = [];
  /** Every backend with weight > 0 (the panic set and the sticky fallback's set). */
  private all: Backend[] = [];
  private version = 0;
  private dirty = true;
  /** Earliest moment something time-based changes (an ejection ends, slow start ends). */
  private nextChangeMs = Number.POSITIVE_INFINITY;
  private weighted = false;
  panic = false;
  /** Requests in flight through this pool, and retries among them (retry budget). */
  inFlight = 0;
  retriesInFlight = 0;
  retriesTotal = 0;
  ejectionsTotal = 0;
  private readonly logger: Logger | undefined;
  readonly now: () => number;

  constructor(name: string, config: PoolConfig, options: PoolOptions = {}) {
    this.name = name;
    this.config = config;
    this.logger = options.logger;
    this.now = options.now ?? (() => performance.now());
    this.balancer = createBalancer<Backend>(config.algorithm);
    this.update(config, false);
  }

  /**
   * Applies a new pool config, keeping the state (health, ejections, idle
   * connections) of backends whose id, host and port are unchanged. Removed
   * backends finish their requests and take no more.
   */
  update(config: PoolConfig, slowStartNew = true): void {
    const old = this.byIdMap;
    const next = new Map<string, Backend>();
    const list: Backend[] = [];
    const now = this.now();
    for (const bc of config.backends) {
      const id = backendId(bc);
      let b = old.get(id);
      if (!b || b.host !== bc.host || b.port !== bc.port) {
        b = new Backend(bc);
        if (slowStartNew && config.slowStartMs > 0) b.slowStartAtMs = now;
      }
      b.weight = bc.weight;
      list.push(b);
      next.set(id, b);
    }
    for (const [id, b] of old) {
      if (next.get(id) !== b) {
        b.removed = true;
        b.closeIdle();
      }
    }
    if (config.algorithm !== this.config.algorithm) this.balancer = createBalancer<Backend>(config.algorithm);
    this.config = config;
    this.backends = list;
    this.byIdMap = next;
    this.invalidate();
  }

  byId(id: string): Backend | undefined {
    return this.byIdMap.get(id);
  }

  /** Marks the eligible set for recomputation (health or ejection changed). */
  invalidate(): void {
    this.dirty = true;
  }

  /**
   * Picks a backend for a request; undefined when none may take it (every
   * backend down and panic disabled, or only `exclude` left).
   */
  pick(key: number, exclude?: Backend): Backend | undefined {
    const set = this.eligible();
    if (set.length === 0 || (set.length === 1 && set[0] === exclude)) return undefined;
    return this.balancer.pick(set, this.version, key, exclude, this.weighted);
  }

  /**
   * The backend that consistent hashing gives `key` in the current eligible
   * set, whatever the pool's algorithm: the sticky-session fallback, which two
   * nodes compute alike without talking to each other.
   */
  hashPick(key: number, exclude?: Backend): Backend | undefined {
    const set = this.eligible();
    if (set.length === 0 || (set.length === 1 && set[0] === exclude)) return undefined;
    return this.hashFallback.pick(set, this.version, key, exclude);
  }

  /** True when `b` may take new requests now. */
  isEligible(b: Backend): boolean {
    return this.eligible().includes(b);
  }

  /** The current eligible set (recomputed only when something changed). */
  eligible(): Backend[] {
    if (!this.dirty && this.nextChangeMs === Number.POSITIVE_INFINITY) return this.set;
    const now = this.now();
    if (this.dirty || now >= this.nextChangeMs) this.recompute(now);
    else if (this.weighted) this.applySlowStart(now);
    return this.set;
  }

  private recompute(now: number): void {
    this.dirty = false;
    this.nextChangeMs = Number.POSITIVE_INFINITY;
    const all: Backend[] = [];
    const up: Backend[] = [];
    for (const b of this.backends) {
      if (b.ejectedUntilMs > 0 && b.ejectedUntilMs <= now) {
        b.ejectedUntilMs = 0;
        b.consecutiveFailures = 0;
        if (this.config.slowStartMs > 0) b.slowStartAtMs = now;
        this.logger?.info({ pool: this.name, backend: b.id }, "backend returns from ejection");
      }
      if (b.ejectedUntilMs > 0) this.nextChangeMs = Math.min(this.nextChangeMs, b.ejectedUntilMs);
      if (b.weight === 0 || b.removed) continue;
      all.push(b);
      if (b.healthy && b.ejectedUntilMs === 0) up.push(b);
    }
    const panic = all.length > 0 && up.length * 100 < this.config.panicThresholdPercent * all.length;
    if (panic !== this.panic) {
      this.logger?.warn(
        { pool: this.name, healthy: up.length, total: all.length },
        panic ? "pool in panic mode: sending to every backend" : "pool leaves panic mode",
      );
    }
    this.panic = panic;
    const set = panic ? all : up;
    this.all = all;
    this.set = set;
    this.version++;
    this.applySlowStart(now);
  }

  private applySlowStart(now: number): void {
    const ms = this.config.slowStartMs;
    let weighted = false;
    for (const b of this.set) {
      const elapsed = now - b.slowStartAtMs;
      if (ms > 0 && elapsed < ms && this.config.algorithm !== "consistent-hash") {
        b.effectiveWeight = b.weight * (SLOW_START_MIN + ((1 - SLOW_START_MIN) * elapsed) / ms);
        weighted = true;
        this.nextChangeMs = Math.min(this.nextChangeMs, b.slowStartAtMs + ms);
      } else b.effectiveWeight = b.weight;
    }
    this.weighted = weighted;
  }

  /** Active health result, already filtered by rise/fall (see `health.ts`). */
  setHealthy(b: Backend, healthy: boolean): void {
    if (b.healthy === healthy) return;
    b.healthy = healthy;
    if (healthy && this.config.slowStartMs > 0) b.slowStartAtMs = this.now();
    if (!healthy) b.closeIdle();
    this.logger?.warn({ pool: this.name, backend: b.id, healthy }, healthy ? "backend up" : "backend down");
    this.invalidate();
  }

  /** A response below 500 from `b`. */
  reportSuccess(b: Backend): void {
    b.consecutiveFailures = 0;
  }

  /** A 5xx answer or a failed connect to `b`: may eject it. */
  reportFailure(b: Backend): void {
    b.failures++;
    const o = this.config.outlier;
    if (++b.consecutiveFailures < o.consecutiveFailures || b.ejectedUntilMs > 0 || b.removed) return;
    const eligibleCount = this.backends.filter((x) => x.weight > 0 && !x.removed).length;
    const ejectedNow = this.backends.filter((x) => x.ejectedUntilMs > 0).length;
    if ((ejectedNow + 1) * 100 > o.maxEjectionPercent * eligibleCount) return;
    b.ejections++;
    this.ejectionsTotal++;
    const periodMs = Math.min(o.baseEjectionMs * b.ejections, Math.max(o.baseEjectionMs, MAX_EJECTION_MS));
    b.ejectedUntilMs = this.now() + periodMs;
    b.consecutiveFailures = 0;
    b.closeIdle();
    this.logger?.warn(
      { pool: this.name, backend: b.id, periodMs, ejections: b.ejections },
      "backend ejected",
    );
    this.invalidate();
  }

  /** A retry may start when retries in flight stay within `budgetPercent` of requests in flight (Envoy's retry budget), at least one. */
  retryAllowed(budgetPercent: number): boolean {
    if (budgetPercent <= 0) return false;
    return this.retriesInFlight < Math.max(1, Math.floor((this.inFlight * budgetPercent) / 100));
  }

  /**
   * Takes one more attempt for an exchange, if `maxAttempts` and the retry
   * budget allow; counts it. The first retry of an exchange puts it among the
   * retries in flight (the exchange takes it out when it ends).
   */
  beginRetry(
    state: { attempts: number; isRetry: boolean },
    maxAttempts: number,
    budgetPercent: number,
  ): boolean {
    if (state.attempts >= maxAttempts || !(state.isRetry || this.retryAllowed(budgetPercent))) return false;
    state.attempts++;
    if (!state.isRetry) {
      state.isRetry = true;
      this.retriesInFlight++;
    }
    this.retriesTotal++;
    return true;
  }

  /** Backends not ejected and healthy, for /metrics. */
  backendUp(b: Backend): boolean {
    return b.healthy && b.ejectedUntilMs === 0;
  }

  /** Every backend with weight > 0 that is configured now. */
  members(): readonly Backend[] {
    this.eligible();
    return this.all;
  }

  /** Closes idle connections that sat longer than `idleMs`. */
  sweepIdle(now: number, idleMs: number): void {
    for (const b of this.backends) {
      const idle = b.idle;
      // LIFO: the oldest idle connections are at the front.
      let n = 0;
      while (n < idle.length && now - idle[n]!.idleSinceMs >= idleMs) n++;
      if (n > 0) for (const c of idle.splice(0, n)) c.destroy();
    }
  }

  close(): void {
    for (const b of this.backends) b.closeIdle();
  }
}
