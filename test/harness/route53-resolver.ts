/**
 * Route 53's answers in local mode. The emulator stores records and health
 * checks but answers no DNS queries and runs no health checks, so this
 * resolver does both, as Route 53 would:
 *
 * 1. Every `pollMs` it reads the zone's records and the account's health
 *    checks from the emulator. A failed read keeps the last one.
 * 2. Every health check that a record refers to is probed every
 *    `healthCheckIntervalMs` (TCP through `tcpCheck`, HTTP and HTTPS with a
 *    GET). A check starts healthy and changes state after `FailureThreshold`
 *    consecutive opposite results, as Route 53's checkers do.
 * 3. `resolve` answers an A query from the last read, by the routing policy of
 *    the name's records: simple, weighted, failover, and alias records to
 *    names in the same zone (see `choose` and `recordHealthy`).
 *
 * What it leaves out: latency, geolocation, geoproximity, IP-based and
 * multivalue records (no answer), wildcard and CNAME records, health check
 * types other than TCP, HTTP and HTTPS (not probed: the record counts as
 * healthy, as it does for a check the emulator no longer has), and Route 53's
 * many checker regions: one local checker decides alone.
 */
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import {
  type HealthCheck,
  ListHealthChecksCommand,
  ListResourceRecordSetsCommand,
  type ResourceRecordSet,
  type Route53Client,
  type RRType,
} from "@aws-sdk/client-route-53";
import { route53Call } from "../../lib/core/dns";
import { Route53Error, SettingsError } from "../../lib/core/errors";
import { tcpConnect } from "./fabric";

/** Whether a TCP handshake with `ip:port` completes within `timeoutMs`. */
export type TcpCheck = (ip: string, port: number, timeoutMs: number) => Promise<boolean>;

export interface Route53ResolverOptions {
  /** A client pointed at the emulator; the resolver does not destroy it. */
  readonly route53: Route53Client;
  /** The hosted zone's id, bare or as `/hostedzone/<id>`. */
  readonly zoneId: string;
  /**
   * How a TCP health check reaches an address (the local fabric decides whether
   * a handshake with an instance would complete). Bounded by
   * `healthCheckTimeoutMs` whatever it does.
   * @default a plain TCP connect
   */
  readonly tcpCheck?: TcpCheck;
  /** How often the records and health checks are re-read from the emulator. @default 200 */
  readonly pollMs?: number;
  /**
   * Interval of the local health checkers, from the start of one probe to the
   * start of the next (later when a probe takes longer). Route 53 only offers
   * 10 or 30 s (the check's `RequestInterval`, ignored here); the local mode
   * checks faster.
   * @default 1000
   */
  readonly healthCheckIntervalMs?: number;
  /** A probe without a result by then is a failure. @default 500 */
  readonly healthCheckTimeoutMs?: number;
}

export interface Answer {
  readonly address: string;
  /** The TTL of the record that answered (for an alias, its target's). */
  readonly ttlS: number;
  /** The record that answered: its SetIdentifier, if any (for an alias, the target's record). */
  readonly setIdentifier?: string;
}

/** An A record as the resolver uses it; the name lower case, with the final dot. */
interface ARecord {
  readonly name: string;
  readonly policy: "simple" | "weighted" | "failover" | "other";
  readonly setIdentifier?: string;
  readonly weight: number;
  readonly failover?: string;
  readonly ttlS: number;
  readonly values: readonly string[];
  readonly healthCheckId?: string;
  readonly alias?: { readonly target: string; readonly evaluateTargetHealth: boolean };
}

interface CheckConfig {
  readonly type: string;
  /** IPAddress, else the FullyQualifiedDomainName. */
  readonly host: string;
  readonly port: number;
  readonly path: string;
  /** The Host header of HTTP(S) checks. */
  readonly hostName: string;
  /** The TLS server name of HTTPS checks, sent only when the check enables SNI. */
  readonly sni?: string;
  readonly failureThreshold: number;
  readonly inverted: boolean;
  readonly disabled: boolean;
}

interface Checker {
  config: CheckConfig;
  healthy: boolean;
  /** Consecutive results opposite to `healthy`. */
  streak: number;
  timer: NodeJS.Timeout | undefined;
  probing: Promise<void> | undefined;
  removed: boolean;
}

/** Alias chains deeper than this get no answer (and a loop of aliases ends here). */
const MAX_ALIAS_DEPTH = 8;
/** Route 53's default FailureThreshold. */
const DEFAULT_FAILURE_THRESHOLD = 3;
const PROBED_TYPES = new Set(["TCP", "HTTP", "HTTPS"]);

export class Route53Resolver {
  private readonly zoneId: string;
  private readonly tcpCheck: TcpCheck;
  private readonly pollMs: number;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  /** A records by name, as last read. */
  private records = new Map<string, ARecord[]>();
  private readonly checkers = new Map<string, Checker>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private started = false;
  private stopped = false;

  constructor(private readonly o: Route53ResolverOptions) {
    this.zoneId = o.zoneId.split("/").pop() ?? o.zoneId;
    this.tcpCheck = o.tcpCheck ?? tcpConnect;
    this.pollMs = positive("pollMs", o.pollMs ?? 200);
    this.intervalMs = positive("healthCheckIntervalMs", o.healthCheckIntervalMs ?? 1000);
    this.timeoutMs = positive("healthCheckTimeoutMs", o.healthCheckTimeoutMs ?? 500);
  }

  /** Reads the records and health checks (throws a `Route53Error` if it cannot), then polls and probes. */
  async start(): Promise<void> {
    if (this.started) throw new Error("Route53Resolver.start() was already called");
    this.started = true;
    try {
      await this.refresh();
    } catch (err) {
      this.started = false;
      throw err;
    }
    const loop = () => {
      if (this.stopped) return;
      this.polling = this.refresh()
        .catch(() => {
          // the emulator is briefly unreachable: keep the last records and checks
        })
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(loop, this.pollMs).unref();
        });
    };
    this.timer = setTimeout(loop, this.pollMs).unref();
  }

  /** Ends polling and probing; waits for a read or probe under way (probes end within the timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const c of this.checkers.values()) this.retire(c);
    await Promise.all([this.polling, ...[...this.checkers.values()].map((c) => c.probing)]);
  }

  /**
   * Route 53's answer to an A query for `name` (any case, final dot optional),
   * from the last read; undefined when the zone has no A record there (or only
   * records of a policy this resolver leaves out). `random` picks the weighted
   * record and the value of a record with several.
   */
  resolve(name: string, random: () => number = Math.random): Answer | undefined {
    return this.answer(normalize(name), random, 0);
  }

  /** The state of a health check that a record refers to; undefined for any other. */
  healthy(healthCheckId: string): boolean | undefined {
    return this.checkers.get(healthCheckId)?.healthy;
  }

  private answer(name: string, random: () => number, depth: number): Answer | undefined {
    if (depth > MAX_ALIAS_DEPTH) return undefined;
    const record = this.choose(name, random, depth);
    if (!record) return undefined;
    if (record.alias) return this.answer(record.alias.target, random, depth + 1);
    const address =
      record.values[Math.min(record.values.length - 1, Math.floor(random() * record.values.length))];
    if (address === undefined) return undefined;
    return {
      address,
      ttlS: record.ttlS,
      ...(record.setIdentifier !== undefined ? { setIdentifier: record.setIdentifier } : {}),
    };
  }

  /**
   * The record Route 53 answers with at `name`:
   * - simple: the record;
   * - weighted: among the healthy records, one with weight > 0 with probability
   *   weight / sum; if none has weight > 0, one of the healthy ones with equal
   *   probability; if no record is healthy, the same over all records (fail open);
   * - failover: PRIMARY if healthy, else SECONDARY if healthy, else PRIMARY.
   */
  private choose(name: string, random: () => number, depth: number): ARecord | undefined {
    const records = this.records.get(name) ?? [];
    const policy = policyOf(records);
    const healthy = (r: ARecord) => this.recordHealthy(r, depth);
    if (policy === "simple") return records[0];
    if (policy === "failover") {
      const primary = records.find((r) => r.failover === "PRIMARY");
      const secondary = records.find((r) => r.failover === "SECONDARY");
      if (primary && healthy(primary)) return primary;
      if (secondary && healthy(secondary)) return secondary;
      return primary ?? secondary;
    }
    if (policy === "weighted") {
      const up = records.filter(healthy);
      const pool = up.length > 0 ? up : records;
      const weighted = pool.filter((r) => r.weight > 0);
      if (weighted.length === 0) return pool[Math.floor(random() * pool.length)];
      let point = random() * weighted.reduce((sum, r) => sum + r.weight, 0);
      for (const r of weighted) {
        point -= r.weight;
        if (point < 0) return r;
      }
      return weighted[weighted.length - 1];
    }
    return undefined;
  }

  /**
   * A record is healthy when (no health check, or its check is healthy) and
   * (not an alias that evaluates target health, or its target is healthy).
   * A check the emulator does not have counts as healthy: Route 53 calls the
   * status of a deleted check unpredictable, and the emulator lets one go.
   */
  private recordHealthy(record: ARecord, depth: number): boolean {
    const checked = record.healthCheckId === undefined || this.healthy(record.healthCheckId) !== false;
    if (!checked) return false;
    return !record.alias?.evaluateTargetHealth || this.targetHealthy(record.alias.target, depth + 1);
  }

  /**
   * An alias target is healthy when Route 53 would find a healthy record there
   * without failing open: for a weighted name, a healthy record with weight > 0
   * (any healthy record when every weight is 0); for any other, any healthy record.
   */
  private targetHealthy(name: string, depth: number): boolean {
    if (depth > MAX_ALIAS_DEPTH) return false;
    const records = this.records.get(name) ?? [];
    const policy = policyOf(records);
    if (policy === "other") return false;
    const candidates =
      policy === "weighted" && records.some((r) => r.weight > 0)
        ? records.filter((r) => r.weight > 0)
        : records;
    return candidates.some((r) => this.recordHealthy(r, depth));
  }

  private async refresh(): Promise<void> {
    const [records, checks] = await Promise.all([this.readRecords(), this.readHealthChecks()]);
    this.records = records;
    if (this.stopped) return;
    const referenced = new Set<string>();
    for (const list of records.values())
      for (const r of list) if (r.healthCheckId) referenced.add(r.healthCheckId);
    for (const [id, checker] of this.checkers) {
      if (!referenced.has(id) || !checks.has(id)) {
        this.retire(checker);
        this.checkers.delete(id);
      }
    }
    for (const id of referenced) {
      const config = checks.get(id);
      if (!config) continue;
      const checker = this.checkers.get(id);
      if (checker) {
        checker.config = config;
        continue;
      }
      const fresh: Checker = {
        config,
        healthy: true,
        streak: 0,
        timer: undefined,
        probing: undefined,
        removed: false,
      };
      this.checkers.set(id, fresh);
      this.schedule(fresh, 0);
    }
  }

  private async readRecords(): Promise<Map<string, ARecord[]>> {
    const out = new Map<string, ARecord[]>();
    let start: { name?: string; type?: string; id?: string } = {};
    for (;;) {
      const page = await this.call("ListResourceRecordSets", () =>
        this.o.route53.send(
          new ListResourceRecordSetsCommand({
            HostedZoneId: this.zoneId,
            StartRecordName: start.name,
            StartRecordType: start.type as RRType | undefined,
            StartRecordIdentifier: start.id,
          }),
        ),
      );
      for (const r of page.ResourceRecordSets ?? []) {
        const record = toRecord(r);
        if (!record) continue;
        const list = out.get(record.name) ?? [];
        // A page that starts again at a record already read (see below) repeats it.
        if (!list.some((o) => o.setIdentifier === record.setIdentifier)) list.push(record);
        out.set(record.name, list);
      }
      if (!page.IsTruncated) return out;
      const next = { name: page.NextRecordName, type: page.NextRecordType, id: page.NextRecordIdentifier };
      // moto 5.2 gives no NextRecordIdentifier: a page boundary inside a set of
      // records with one name and type would start the same page again forever.
      if (next.name === start.name && next.type === start.type && next.id === start.id) {
        throw new Route53Error(
          "HAFLEET_ROUTE53",
          "ListResourceRecordSets",
          `zone ${this.zoneId}: paging does not advance past ${next.name} ${next.type}`,
          false,
        );
      }
      start = next;
    }
  }

  private async readHealthChecks(): Promise<Map<string, CheckConfig>> {
    const out = new Map<string, CheckConfig>();
    let marker: string | undefined;
    for (;;) {
      const page = await this.call("ListHealthChecks", () =>
        this.o.route53.send(new ListHealthChecksCommand({ Marker: marker })),
      );
      for (const check of page.HealthChecks ?? []) {
        const config = toCheckConfig(check);
        if (check.Id && config) out.set(check.Id, config);
      }
      if (!page.IsTruncated || !page.NextMarker || page.NextMarker === marker) return out;
      marker = page.NextMarker;
    }
  }

  private call<T>(operation: string, send: () => Promise<T>): Promise<T> {
    return route53Call(operation, send, `zone ${this.zoneId}`);
  }

  /** The next probe `delayMs` from now; one probe of a check at a time, so a slow one delays the next. */
  private schedule(checker: Checker, delayMs: number): void {
    if (this.stopped || checker.removed) return;
    checker.timer = setTimeout(() => {
      checker.timer = undefined;
      const startedAt = performance.now();
      checker.probing = this.probe(checker).finally(() => {
        checker.probing = undefined;
        this.schedule(checker, Math.max(0, this.intervalMs - (performance.now() - startedAt)));
      });
    }, delayMs).unref();
  }

  private retire(checker: Checker): void {
    checker.removed = true;
    if (checker.timer) clearTimeout(checker.timer);
    checker.timer = undefined;
  }

  private async probe(checker: Checker): Promise<void> {
    const config = checker.config;
    // Route 53 considers a disabled check healthy and stops probing it.
    if (config.disabled) {
      checker.healthy = true;
      checker.streak = 0;
      return;
    }
    // Through a promise, so that a check that throws counts as a failure.
    const ok = await within(
      this.timeoutMs,
      Promise.resolve().then(() => this.run(config)),
    );
    if (checker.removed) return;
    const result = config.inverted ? !ok : ok;
    if (result === checker.healthy) {
      checker.streak = 0;
    } else if (++checker.streak >= config.failureThreshold) {
      checker.healthy = result;
      checker.streak = 0;
    }
  }

  private run(config: CheckConfig): Promise<boolean> {
    if (config.type === "TCP") return this.tcpCheck(config.host, config.port, this.timeoutMs);
    return httpCheck(config, this.timeoutMs);
  }
}

/**
 * A client's stub resolver cache: keeps an answer for its TTL, as a client that
 * honours the TTL does (whether the address still works or not). No answer is
 * not cached: the next call asks again.
 */
export class CachingStub {
  private cached: { readonly answer: Answer; readonly fetchedAtMs: number } | undefined;

  /** `now` in milliseconds, monotonic. @default performance.now */
  constructor(
    private readonly resolver: Route53Resolver,
    private readonly name: string,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The cached address until `ttlS` has passed since it was fetched, then a fresh answer. */
  address(): string | undefined {
    const nowMs = this.now();
    if (this.cached && nowMs - this.cached.fetchedAtMs < this.cached.answer.ttlS * 1000) {
      return this.cached.answer.address;
    }
    const answer = this.resolver.resolve(this.name);
    this.cached = answer ? { answer, fetchedAtMs: nowMs } : undefined;
    return answer?.address;
  }

  /** Drops the cached answer, as a client that restarts does. */
  forget(): void {
    this.cached = undefined;
  }
}

/** Route 53 names are lower case and end with a dot; the emulator keeps names as written. */
function normalize(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith(".") ? lower : `${lower}.`;
}

function toRecord(r: ResourceRecordSet): ARecord | undefined {
  if (r.Type !== "A" || !r.Name) return undefined;
  const other =
    r.Region || r.GeoLocation || r.GeoProximityLocation || r.MultiValueAnswer || r.CidrRoutingConfig;
  const policy = other ? "other" : r.Failover ? "failover" : r.Weight !== undefined ? "weighted" : "simple";
  return {
    name: normalize(r.Name),
    policy,
    ...(r.SetIdentifier !== undefined ? { setIdentifier: r.SetIdentifier } : {}),
    weight: r.Weight ?? 0,
    ...(r.Failover ? { failover: r.Failover } : {}),
    ttlS: r.TTL ?? 0,
    values: (r.ResourceRecords ?? []).flatMap((v) => (v.Value ? [v.Value] : [])),
    ...(r.HealthCheckId ? { healthCheckId: r.HealthCheckId } : {}),
    ...(r.AliasTarget?.DNSName
      ? {
          alias: {
            target: normalize(r.AliasTarget.DNSName),
            evaluateTargetHealth: r.AliasTarget.EvaluateTargetHealth === true,
          },
        }
      : {}),
  };
}

/** The policy of the records at one name; Route 53 allows one per name and type, "other" otherwise. */
function policyOf(records: readonly ARecord[]): ARecord["policy"] {
  const first = records[0]?.policy ?? "other";
  return records.every((r) => r.policy === first) ? first : "other";
}

/** The settings of a check this resolver probes; undefined for other types. */
function toCheckConfig(check: HealthCheck): CheckConfig | undefined {
  const c = check.HealthCheckConfig;
  const type = c?.Type ?? "";
  const host = c?.IPAddress ?? c?.FullyQualifiedDomainName;
  if (!c || !PROBED_TYPES.has(type) || !host) return undefined;
  const port = c.Port ?? (type === "HTTPS" ? 443 : 80);
  return {
    type,
    host,
    port,
    path: c.ResourcePath ? (c.ResourcePath.startsWith("/") ? c.ResourcePath : `/${c.ResourcePath}`) : "/",
    hostName: c.FullyQualifiedDomainName ?? host,
    ...(c.EnableSNI && c.FullyQualifiedDomainName ? { sni: c.FullyQualifiedDomainName } : {}),
    failureThreshold: c.FailureThreshold ?? DEFAULT_FAILURE_THRESHOLD,
    inverted: c.Inverted === true,
    disabled: c.Disabled === true,
  };
}

/** `result`, or false when it is late or fails: a probe never outlives its timeout. */
function within(timeoutMs: number, result: Promise<boolean>): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    result.then(
      (ok) => {
        clearTimeout(timer);
        resolve(ok === true);
      },
      () => {
        clearTimeout(timer);
        resolve(false);
      },
    );
  });
}

/**
 * An HTTP(S) check: GET on a new connection, healthy on a 2xx or 3xx status
 * within the timeout (redirects are not followed). HTTPS does not verify the
 * certificate, as Route 53's checkers do not.
 */
function httpCheck(config: CheckConfig, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const tls = config.type === "HTTPS";
    const options = {
      host: config.host,
      port: config.port,
      path: config.path,
      method: "GET",
      agent: false as const,
      headers: { host: config.hostName, connection: "close" },
    };
    const req = tls
      ? httpsRequest({
          ...options,
          rejectUnauthorized: false,
          ...(config.sni ? { servername: config.sni } : {}),
        })
      : httpRequest(options);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      req.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    req.once("response", (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done(status >= 200 && status < 400);
    });
    req.once("error", () => done(false));
    req.end();
  });
}

function positive(prop: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new SettingsError(`\`${prop}\` must be a positive number of milliseconds, got ${value}`);
  }
  return value;
}
