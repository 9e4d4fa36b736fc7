/**
 * Samples a local fleet's state straight from the emulator (never through a
 * fault proxy) while a chaos run goes on: the shared Elastic IP between two
 * reads of the fleet lease, often; the fenced items, the checker's plan and
 * the weighted set in Route 53 (the plan read before and after the records),
 * less often; the session table, once a second. A read that fails is skipped:
 * the invariants never need every sample, only ordered ones.
 */
import { type DnsPlan, listDnsPlans, WeightedRecords } from "../../lib/core/dns";
import { DynamoLeaseStore } from "../../lib/core/lease";
import { keys } from "../../lib/core/tables";
import type { LocalFleet } from "../harness/local-fleet";
import type { EipSample, LeaseSeen, PlanSeen, RecordSeen, SessionSample, StateSample } from "./observation";

export interface SamplerPeriods {
  /** The Elastic IP and the lease. @default 50 */
  readonly eipMs?: number;
  /** Items, plan and records. @default 250 */
  readonly stateMs?: number;
  /** The session table. @default 1000 */
  readonly sessionsMs?: number;
}

export class Sampler {
  readonly eip: EipSample[] = [];
  readonly state: StateSample[] = [];
  readonly sessions: SessionSample[] = [];
  /** Reads that failed (the emulator was slow or busy). */
  failures = 0;
  private readonly stop = new AbortController();
  private loops: Promise<void>[] = [];
  private readonly leases: DynamoLeaseStore;
  private readonly records: WeightedRecords;

  constructor(
    private readonly fleet: LocalFleet,
    private readonly periods: SamplerPeriods = {},
  ) {
    this.leases = new DynamoLeaseStore(fleet.store, fleet.fleetId);
    this.records = new WeightedRecords({ route53: fleet.route53 });
  }

  start(): void {
    this.loops = [
      this.every(this.periods.eipMs ?? 50, () => this.sampleEip()),
      this.every(this.periods.stateMs ?? 250, () => this.sampleState()),
      this.every(this.periods.sessionsMs ?? 1000, () => this.sampleSessions()),
    ];
  }

  async end(): Promise<void> {
    this.stop.abort();
    await Promise.all(this.loops);
  }

  /** The latest state sample, or undefined before the first. */
  get last(): StateSample | undefined {
    return this.state.at(-1);
  }

  private async every(periodMs: number, sample: () => Promise<void>): Promise<void> {
    const signal = this.stop.signal;
    while (!signal.aborted) {
      const started = Date.now();
      await sample().catch(() => {
        this.failures++;
      });
      const wait = periodMs - (Date.now() - started);
      if (wait > 0) await new Promise<void>((r) => setTimeout(r, wait));
    }
  }

  private async lease(): Promise<LeaseSeen | undefined> {
    const l = await this.leases.get("fleet");
    return l ? { holder: l.holder, token: l.token } : undefined;
  }

  private async sampleEip(): Promise<void> {
    const startedAt = Date.now();
    const before = await this.lease();
    const readAt = Date.now();
    const a = await this.fleet.elasticIps.describe(this.fleet.elasticIp.allocationId);
    const doneAt = Date.now();
    const after = await this.lease();
    this.eip.push({
      startedAt,
      endedAt: Date.now(),
      readAt,
      doneAt,
      before,
      after,
      instanceId: a.instanceId,
    });
  }

  private async sampleState(): Promise<void> {
    const f = this.fleet;
    const pk = keys.fleet(f.fleetId);
    const at = Date.now();
    const [leases, nodes, vips, before] = await Promise.all([
      f.store.query("state", pk, { prefix: "lease#" }),
      f.store.query("state", pk, { prefix: "node#" }),
      f.store.query("state", pk, { prefix: "vip#" }),
      this.plan(),
    ]);
    const now = f.zone
      ? await this.records.read({ zoneId: f.zone.zoneId, name: f.dnsName, ttlS: f.ttlS })
      : new Map();
    const after = await this.plan();
    const doneAt = Date.now();
    const tokens: Record<string, number> = {};
    for (const l of leases) tokens[String(l.sk)] = Number(l.token);
    for (const v of vips) tokens[String(v.sk)] = Number(v.fenceToken);
    for (const n of nodes) if (n.failed) tokens[`${String(n.sk)} failed`] = Number(n.failed.token);
    if (before) tokens[keys.dns(f.dnsName)] = before.token;
    const fleetLease = leases.find((l) => l.sk === keys.lease("fleet"));
    const records: Record<string, RecordSeen> = {};
    for (const r of now.values()) records[r.nodeId] = { address: r.address, weight: r.weight };
    this.state.push({
      at,
      doneAt,
      lease: fleetLease
        ? {
            holder: typeof fleetLease.holder === "string" ? fleetLease.holder : undefined,
            token: Number(fleetLease.token),
          }
        : undefined,
      tokens,
      planBefore: before,
      planAfter: after,
      records,
    });
  }

  private async plan(): Promise<PlanSeen | undefined> {
    const plans = await listDnsPlans(this.fleet.store, this.fleet.fleetId);
    const p: DnsPlan | undefined = plans.find((x) => x.name === this.fleet.dnsName);
    return p ? { mode: p.mode, token: p.token, syncedAt: p.syncedAt, weights: p.weights } : undefined;
  }

  private async sampleSessions(): Promise<void> {
    const at = Date.now();
    // The local fleet's one listener, `web`, is the sticky one.
    const items = await this.fleet.store.query("sessions", keys.sessions(this.fleet.fleetId, "web"));
    this.sessions.push({
      at,
      mappings: Object.fromEntries(items.map((i) => [String(i.sk), String(i.backend)])),
    });
  }
}
