/**
 * The health checker: the control plane's second line of defence. Each run
 * (`runOnce`), one method per step:
 *
 * 1. Confirms it holds the `checker` lease (overlapping invocations are
 *    serialized by it); a run without it changes nothing.
 * 2. `gather`: reads the fleet's config, nodes, the fleet lease and the
 *    desired Elastic IP owners (`vip#`), and probes every node's `/healthz`
 *    with a timeout.
 * 3. `judgeAndMark`: judges each node (`failover.ts`) from its heartbeat, its
 *    damped probe results and, for the holder, the lease; marks gray failures
 *    failed and clears the mark after recovery, but never marks all nodes or a
 *    majority of the live ones (`planMarks`: a checker-side network fault
 *    would otherwise leave nobody who may lead). A mark lapses after its TTL
 *    in the node's own beats (`failover.markTtlMs`), so the checker renews the
 *    marks it keeps. These writes are fenced by the checker lease's token.
 * 4. `reconcileAddresses`: reconciles each Elastic IP with the `vip#` written
 *    by the current holder of the fleet lease: re-associates it when EC2 says
 *    otherwise. The checker never holds the fleet lease and never picks an
 *    owner itself.
 * 5. `planAndApplyDns`, with a weighted set in Route 53 (`dns`): plans its
 *    weights from the mode and the verdicts (`planDns`), records them fenced in
 *    `dns#<name>` with the checker lease's token, and only then sends the
 *    changed records in one ChangeResourceRecordSets batch. It never waits
 *    for propagation: the change id goes into `dns#`, and later runs ask
 *    about it (`confirmPending`) and record `syncedAt` once it is INSYNC. A
 *    checker that lost its lease has its `dns#` write refused and changes
 *    nothing in Route 53. The batch is a compare-and-swap against the records
 *    as this checker last read them, so what a paused one still sends is
 *    refused whole once the holder has changed those records; on a refusal
 *    the checker reads Route 53 again at once and plans from what is there.
 *
 * `runFor` loops runs every `intervalMs` until its time is up: sub-minute
 * checking from a once-a-minute schedule. In a Lambda it is given the
 * invocation's remaining time, and starts no run that could not finish
 * before the timeout minus a margin (`LAMBDA_MARGIN_MS`). No run waits for
 * Route 53 to propagate a change.
 */
import { z } from "zod";
import { type Clock, systemClock } from "./clock";
import { FAILOVER_DEFAULTS, type FleetConfig, NAME_PATTERN, NAME_RULE } from "./config";
import { ConfigStore } from "./config-store";
import type { WeightedRecord, WeightedRecords } from "./dns";
import type { ElasticIps } from "./elastic-ip";
import { FencedError, HafleetError, isHafleetError } from "./errors";
import { appendEvent } from "./events";
import {
  DNS_CONFIRM_FIRST_MS,
  DNS_CONFIRM_MAX_MS,
  type DnsNodeView,
  type Judgement,
  judgeNode,
  type LeaseView,
  type PlannedRecord,
  ProbeTracker,
  planDns,
  planEndpoints,
  planMarks,
  planRecordChanges,
  planVip,
  type Verdict,
  type VipDesired,
} from "./failover";
import { fencedPut } from "./fence";
import {
  HeartbeatMonitor,
  listNodes,
  NODE_GONE_AFTER_MS,
  type NodeRecord,
  setNodeFailed,
  staleAfterMs,
} from "./heartbeat";
import { DynamoLeaseStore, Lease, type LeaseRecord } from "./lease";
import type { StateStore } from "./store";
import { keys } from "./tables";
import { getVip, listVips } from "./vip";

export type LogFn = (
  level: "debug" | "info" | "warn" | "error",
  message: string,
  fields?: Record<string, unknown>,
) => void;

export interface HealthCheckerOptions {
  readonly store: StateStore;
  readonly fleetId: string;
  /** Holder id of the checker lease, e.g. the Lambda request id or `local-checker`. */
  readonly checkerId: string;
  readonly elasticIps: ElasticIps;
  /** Timeout of one probe of a node's `/healthz`. @default 1000 */
  readonly probeTimeoutMs?: number;
  /** Consecutive probe results that make a node up / down. @default 2 / 2 */
  readonly rise?: number;
  readonly fall?: number;
  /** The checker lease's length; must exceed a run's duration. @default 6000 */
  readonly checkerLeaseMs?: number;
  /** The fleet's weighted set in Route 53; without it the checker leaves DNS alone. */
  readonly dns?: CheckerDns;
  readonly clock?: Clock;
  readonly log?: LogFn;
}

/** A probe of a node's `/healthz` gives up after this long, unless `probeTimeoutMs` says otherwise. */
const DEFAULT_PROBE_TIMEOUT_MS = 1000;

/** How long before its Lambda's timeout an invocation stops starting runs: its lease is released and metrics flushed in it. */
export const LAMBDA_MARGIN_MS = 5000;

/** The time an invocation has (a Lambda's). */
export interface RunBudget {
  /** Ms left before the invocation is ended, e.g. the Lambda context's `getRemainingTimeInMillis()`. */
  readonly remainingMs: () => number;
  /** Ms kept free at the end. @default LAMBDA_MARGIN_MS */
  readonly marginMs?: number;
}

export interface CheckerDns {
  readonly records: WeightedRecords;
  readonly zoneId: string;
  /** The weighted set's name, e.g. `lb.example.org`. */
  readonly name: string;
  /**
   * The fleet's shared Elastic IP (the lease holder's), whose record serves in
   * active-passive; a function, as it may need a lookup. @default none
   */
  readonly sharedAddress?: () => Promise<string | undefined>;
  /**
   * How long the checker trusts its view of the records (as read, with its
   * own accepted changes since) before it reads Route 53 again, which also
   * finds changes made behind its back. Route 53 allows 5 API requests a
   * second per account, so reading every run would limit an account to a
   * handful of fleets.
   * @default 30000
   */
  readonly rereadMs?: number;
  /**
   * Whether the checker creates a missing record (for the shared address or
   * a live node that is not leaving), or only changes and removes records. A
   * CDK stack creates every record with its Route 53 health check, so its
   * checker creates none: a record missing there was deleted by the stack
   * (`cdk destroy` deletes the records while the nodes still run), and one
   * made again would have no health check, keep a stack-created zone from
   * being deleted and outlive the stack (docs/architecture.md §5.2).
   * @default true
   */
  readonly createRecords?: boolean;
}

export interface DnsReportLine {
  /** The record's endpoint: a node's stable name (its id when it has none), or `active`. */
  readonly nodeId: string;
  readonly address: string;
  readonly weight: number;
  /** The weight in Route 53 before this run (undefined: no record yet). */
  readonly from: number | undefined;
  readonly reason: string;
}

export interface NodeReportLine {
  readonly nodeId: string;
  readonly verdict: Verdict;
  readonly reason: string;
  readonly heartbeat: string;
  readonly probe: string;
  readonly holder: boolean;
}

export interface VipReportLine {
  readonly allocationId: string;
  readonly action: "none" | "associate";
  readonly reason: string;
  readonly ok?: boolean;
}

export interface CheckReport {
  readonly ran: boolean;
  readonly skippedReason?: string;
  readonly token?: number;
  readonly nodes: NodeReportLine[];
  readonly vips: VipReportLine[];
  readonly marked: string[];
  readonly cleared: string[];
  /** Marks this run renewed (a later `untilSeq`), so that they do not lapse while the node still fails. */
  readonly renewed: string[];
  /** New marks and renewals this run withheld: they would mark all nodes or a majority (`planMarks`). */
  readonly withheld: string[];
  readonly reassociated: string[];
  /** The weighted set as planned by this run (empty without `dns`). */
  readonly dns: DnsReportLine[];
  /** Records whose weight or address this run changed in Route 53. */
  readonly weightChanges: number;
  /** Nodes this run took out of DNS (weight to 0) because they failed: a failover in active-active. */
  readonly outOfDns: string[];
  readonly errors: string[];
  readonly durationMs: number;
}

/** A Route 53 change not yet known to be INSYNC, and when to ask about it next (monotonic ms). */
interface PendingChange {
  readonly changeId: string;
  readonly askAtMs: number;
  readonly gapMs: number;
}

/** What step 2 gathered: the store as read at the start of the run, and a probe result per node. */
interface Gathered {
  readonly config: FleetConfig | undefined;
  readonly nodes: readonly NodeRecord[];
  readonly leaseView: LeaseView | undefined;
  readonly vips: readonly VipDesired[];
  /** Whether each of `nodes` answered its probe (same order). */
  readonly probes: readonly boolean[];
}

export class HealthChecker {
  readonly lease: Lease;
  private readonly o: HealthCheckerOptions;
  private readonly clock: Clock;
  private readonly leases: DynamoLeaseStore;
  private readonly config: ConfigStore;
  private readonly probes: ProbeTracker;
  private monitor: HeartbeatMonitor | undefined;
  private fleetLeaseSeen: { rvn: string; sinceMs: number } | undefined;
  /** Consecutive runs that found each node healthy: the ramp of its weight. */
  private readonly healthyRuns = new Map<string, number>();
  /** The plan last recorded in `dns#` by this checker. */
  private recordedPlan: string | undefined;
  /** The weighted set as last read from Route 53, with this checker's verified changes since. */
  private dnsView: { key: string; readAtMs: number; records: Map<string, WeightedRecord> } | undefined;
  /** The last change of the set not yet known INSYNC: this checker's, or its predecessor's from `dns#`. */
  private pendingChange: PendingChange | undefined;
  /** Whether `dns#` was read for a predecessor's pending change (once per checker). */
  private dnsItemRead = false;
  private readonly log: LogFn;

  constructor(options: HealthCheckerOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.leases = new DynamoLeaseStore(options.store, options.fleetId);
    this.config = new ConfigStore(options.store, options.fleetId);
    this.probes = new ProbeTracker(options.rise ?? 2, options.fall ?? 2);
    this.log = options.log ?? (() => {});
    const leaseMs = options.checkerLeaseMs ?? 6000;
    this.lease = new Lease(
      this.leases,
      { name: "checker", holderId: options.checkerId, leaseMs, pollMs: Math.min(500, leaseMs / 4) },
      this.clock,
    );
  }

  /** Starts contending for the checker lease in the background. */
  start(): void {
    this.lease.start();
  }

  /** Stops and hands the checker lease to the next invocation at once. */
  async stop(): Promise<void> {
    await this.lease.stop({ release: true });
  }

  /**
   * Starts, runs every `intervalMs` for `durationMs`, stops; returns every
   * run's report. With a `budget` (a Lambda's remaining time), it starts no run
   * that could not finish before the budget's end minus its margin, judged by
   * the longest run so far (at least one probe timeout): an invocation that
   * the Lambda kills mid-run keeps its lease until it expires and never
   * flushes its metrics.
   */
  async runFor(
    durationMs: number,
    intervalMs = 2000,
    signal?: AbortSignal,
    budget?: RunBudget,
  ): Promise<CheckReport[]> {
    const reports: CheckReport[] = [];
    const end = this.clock.nowMs() + durationMs;
    let longestMs = this.o.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
    this.start();
    try {
      // The first tick acquires a free or released lease; give it a moment.
      for (let i = 0; i < 20 && !this.lease.isLeader() && this.clock.nowMs() < end; i++)
        await this.clock.sleep(50, signal);
      while (this.clock.nowMs() < end && !signal?.aborted) {
        const leftMs = budget ? budget.remainingMs() - (budget.marginMs ?? LAMBDA_MARGIN_MS) : Infinity;
        if (leftMs < longestMs) {
          this.log(
            "info",
            `stopping: ${Math.max(0, Math.round(leftMs))} ms left, a run may take ${Math.round(longestMs)} ms`,
          );
          break;
        }
        const started = this.clock.nowMs();
        reports.push(await this.runOnce());
        longestMs = Math.max(longestMs, this.clock.nowMs() - started);
        const wait = Math.min(intervalMs - (this.clock.nowMs() - started), end - this.clock.nowMs());
        if (wait > 0) await this.clock.sleep(wait, signal);
      }
    } finally {
      await this.stop();
    }
    return reports;
  }

  async runOnce(): Promise<CheckReport> {
    const started = this.clock.nowMs();
    const token = this.lease.token;
    if (token === undefined) {
      const other = this.lease.observed?.holder;
      return {
        ran: false,
        skippedReason: `checker lease held by ${other ?? "nobody yet"}`,
        nodes: [],
        vips: [],
        marked: [],
        cleared: [],
        renewed: [],
        withheld: [],
        reassociated: [],
        dns: [],
        weightChanges: 0,
        outOfDns: [],
        errors: [],
        durationMs: 0,
      };
    }
    const errors: string[] = [];
    const seen = await this.gather(errors);
    const judged = await this.judgeAndMark(seen, token, errors);
    const addresses = await this.reconcileAddresses(seen, judged.lines, token, errors);
    const dns = await this.planAndApplyDns(seen, judged.lines, token, errors);
    for (const e of errors) this.log("error", e);
    return {
      ran: true,
      token,
      nodes: judged.lines,
      vips: addresses.vips,
      marked: judged.marked,
      cleared: judged.cleared,
      renewed: judged.renewed,
      withheld: judged.withheld,
      reassociated: addresses.reassociated,
      dns: dns.lines,
      weightChanges: dns.changed,
      outOfDns: dns.outOfDns,
      errors,
      durationMs: this.clock.nowMs() - started,
    };
  }

  /** Step 2: the config, the nodes, the fleet lease and `vip#` as the store has them, and a probe of every node. */
  private async gather(errors: string[]): Promise<Gathered> {
    const store = this.o.store;
    const [stored, nodes, fleetLease, vips] = await Promise.all([
      this.config.get().catch((err: unknown) => {
        errors.push(`config: ${String(err)}`);
        return undefined;
      }),
      listNodes(store, this.o.fleetId),
      this.leases.get("fleet"),
      listVips(store, this.o.fleetId),
    ]);
    const leaseView = this.judgeFleetLease(fleetLease);
    const probes = await Promise.all(nodes.map((n) => this.probe(n.adminUrl)));
    return { config: stored?.config, nodes, leaseView, vips, probes };
  }

  /** The fleet lease as a waiter judges it: expired once the same rvn has been seen for longer than its leaseMs. */
  private judgeFleetLease(fleetLease: LeaseRecord | undefined): LeaseView | undefined {
    if (!fleetLease) return undefined;
    const now = this.clock.nowMs();
    if (this.fleetLeaseSeen?.rvn !== fleetLease.rvn)
      this.fleetLeaseSeen = { rvn: fleetLease.rvn, sinceMs: now };
    const expired = now - this.fleetLeaseSeen.sinceMs > fleetLease.leaseMs;
    return { holder: fleetLease.holder, token: fleetLease.token, expired };
  }

  /**
   * Step 3: a verdict per node (`judgeNode`) from its heartbeat, its damped
   * probes and, for the holder, the lease; gray failures marked failed, marks
   * of recovered nodes cleared, fenced by the checker lease. Never all nodes or
   * a majority of the live ones marked (`planMarks`): then the checker's own
   * view is the likelier fault. Kept marks are renewed once half their TTL is
   * used up (docs/architecture.md §4).
   */
  private async judgeAndMark(
    seen: Gathered,
    token: number,
    errors: string[],
  ): Promise<{
    lines: NodeReportLine[];
    marked: string[];
    cleared: string[];
    renewed: string[];
    withheld: string[];
  }> {
    const { nodes, leaseView } = seen;
    const guard = { name: "checker", holder: this.o.checkerId, token };
    const heartbeatMs = seen.config?.failover.heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs;
    this.monitor ??= new HeartbeatMonitor({ staleMs: staleAfterMs(heartbeatMs) }, this.clock);
    this.probes.forget(new Set(nodes.map((n) => n.nodeId)));
    const liveness = new Map(this.monitor.observe(nodes).map((l) => [l.nodeId, l]));
    const lines: NodeReportLine[] = [];
    const judgements: Judgement[] = [];
    for (const [i, node] of nodes.entries()) {
      const probe = this.probes.record(node.nodeId, seen.probes[i]!);
      const heartbeat = liveness.get(node.nodeId)?.state ?? "alive";
      const holder = leaseView?.holder === node.nodeId;
      const j = judgeNode({
        heartbeat,
        probe,
        isLeaseHolder: holder,
        leaseExpired: holder && !!leaseView?.expired,
        markedFailed: !!node.failed,
      });
      judgements.push(j);
      lines.push({ nodeId: node.nodeId, verdict: j.verdict, reason: j.reason, heartbeat, probe, holder });
    }
    // A mark's TTL in the node's own beats; renewed once half of it is used up.
    const failover = seen.config?.failover ?? FAILOVER_DEFAULTS;
    const beats = Math.max(2, Math.ceil(failover.markTtlMs / failover.heartbeatMs));
    const plan = planMarks(
      nodes.map((n, i) => ({
        nodeId: n.nodeId,
        mark: judgements[i]!.mark,
        markedFailed: !!n.failed,
        renewDue: !!n.failed && n.failed.untilSeq - n.seq <= beats / 2,
        live: lines[i]!.heartbeat !== "dead",
      })),
    );
    if (plan.reason) this.log("warn", `marks withheld: ${plan.reason}`, { token });
    const marked: string[] = [];
    const cleared: string[] = [];
    const renewed: string[] = [];
    for (const [i, node] of nodes.entries()) {
      const j = judgements[i]!;
      const mark = plan.marks.get(node.nodeId) ?? "keep";
      if (mark === "keep") continue;
      try {
        const untilSeq = node.seq + beats;
        if (mark === "renew" && node.failed) {
          const renewal = { ...node.failed, by: this.o.checkerId, token, untilSeq };
          await setNodeFailed(this.o.store, this.o.fleetId, node.nodeId, renewal, guard);
          renewed.push(node.nodeId);
          this.log("debug", `renewed the failed mark of ${node.nodeId} until its beat ${untilSeq}`, {
            token,
          });
          continue;
        }
        const failed =
          mark === "set"
            ? { by: this.o.checkerId, reason: j.reason, atMs: this.clock.wallMs(), token, untilSeq }
            : undefined;
        await setNodeFailed(this.o.store, this.o.fleetId, node.nodeId, failed, guard);
        (mark === "set" ? marked : cleared).push(node.nodeId);
        await appendEvent(this.o.store, this.o.fleetId, {
          lease: "checker",
          kind: mark === "set" ? "node-marked-failed" : "node-failed-cleared",
          by: this.o.checkerId,
          token,
          reason: `${node.nodeId}: ${j.reason}`,
          detail: { nodeId: node.nodeId, holder: lines[i]!.holder },
        });
        this.log(
          mark === "set" ? "warn" : "info",
          `${mark === "set" ? "marked failed" : "cleared failed mark of"} ${node.nodeId}: ${j.reason}`,
          { nodeId: node.nodeId, token },
        );
      } catch (err) {
        errors.push(`mark ${node.nodeId}: ${String(err)}`);
      }
    }
    // Consecutive healthy runs per node: the ramp of its weight in DNS.
    for (const line of lines) {
      const healthy = line.verdict === "healthy" || line.verdict === "recovered";
      this.healthyRuns.set(line.nodeId, healthy ? (this.healthyRuns.get(line.nodeId) ?? 0) + 1 : 0);
    }
    for (const id of this.healthyRuns.keys())
      if (!lines.some((l) => l.nodeId === id)) this.healthyRuns.delete(id);
    return { lines, marked, cleared, renewed, withheld: [...plan.withheld] };
  }

  /**
   * Step 4: each Elastic IP re-associated with the instance that the current
   * holder of the fleet lease recorded in `vip#`, when EC2 says otherwise, and
   * only toward a node this run did not judge failed.
   *
   * The lease and `vip#` gathered in step 2 are as old as the probes (a hung
   * node's takes the whole probe timeout), and a standby may have taken over
   * and moved the address meanwhile. So before any association both are read
   * again, strongly consistent, after EC2 was asked: a takeover after that
   * read is then seen in the store and followed, never undone. What remains is
   * a takeover between this re-read and AssociateAddress, which the new
   * holder's repair at its next heartbeat undoes (docs/architecture.md §6).
   */
  private async reconcileAddresses(
    seen: Gathered,
    lines: readonly NodeReportLine[],
    token: number,
    errors: string[],
  ): Promise<{ vips: VipReportLine[]; reassociated: string[] }> {
    const vips: VipReportLine[] = [];
    const reassociated: string[] = [];
    const failed = new Set(
      lines.filter((l) => l.verdict === "failed" || l.verdict === "gray-failure").map((l) => l.nodeId),
    );
    for (const gathered of seen.vips) {
      const allocationId = gathered.allocationId;
      try {
        const actual = await this.o.elasticIps.describe(allocationId);
        let desired: VipDesired | undefined = gathered;
        let plan = planVip(desired, seen.leaseView, actual.instanceId, failed.has(desired.owner));
        if (plan.action === "associate") {
          const [fleetLease, current] = await Promise.all([
            this.leases.get("fleet"),
            getVip(this.o.store, this.o.fleetId, allocationId),
          ]);
          desired = current;
          plan = planVip(
            desired,
            this.judgeFleetLease(fleetLease),
            actual.instanceId,
            !!desired && failed.has(desired.owner),
          );
        }
        if (plan.action === "none" || !desired || !this.lease.isLeader()) {
          vips.push({ allocationId, action: "none", reason: plan.reason });
          continue;
        }
        // One attempt, aborted at the checker lease's validity and recorded in its item first, as
        // the agent's moves are; its read-back ends with the holding (docs/architecture.md §6).
        const to = plan.instanceId;
        await this.lease.act(
          (h) => this.o.elasticIps.moveTo(allocationId, to, { signal: h.signal, verifySignal: h.ended }),
          { token, unfenced: true },
        );
        reassociated.push(allocationId);
        vips.push({ allocationId, action: "associate", reason: plan.reason, ok: true });
        await appendEvent(this.o.store, this.o.fleetId, {
          lease: "checker",
          kind: "vip-reconciled",
          by: this.o.checkerId,
          token,
          reason: plan.reason,
          detail: {
            allocationId,
            from: actual.instanceId,
            to: plan.instanceId,
            holderToken: desired.token,
          },
        });
        this.log("warn", `re-associated ${allocationId} with ${plan.instanceId}: ${plan.reason}`, { token });
      } catch (err) {
        errors.push(`vip ${allocationId}: ${String(err)}`);
        vips.push({
          allocationId,
          action: "associate",
          reason: String(err),
          ok: false,
        });
      }
    }
    return { vips, reassociated };
  }

  /**
   * Step 5, with a weighted set and a config: plans the set from the verdicts,
   * records the plan fenced in `dns#`, then makes Route 53 match in one
   * compare-and-swap batch (`WeightedRecords.apply`). A refused batch means
   * the set is not as this checker's view says (another checker's batch landed
   * since): it reads Route 53 again at once and plans once more from what is
   * there, in the same run.
   */
  private async planAndApplyDns(
    seen: Gathered,
    lines: readonly NodeReportLine[],
    token: number,
    errors: string[],
  ): Promise<{ lines: DnsReportLine[]; changed: number; outOfDns: string[] }> {
    const dns = this.o.dns;
    const config = seen.config;
    if (!dns || !config) return { lines: [], changed: 0, outOfDns: [] };
    const set = { zoneId: dns.zoneId, name: dns.name, ttlS: config.dns.ttlS };
    let report: DnsReportLine[] = [];
    try {
      const shared = await dns.sharedAddress?.();
      for (let attempt = 1; ; attempt++) {
        const current = await this.readDns(dns, set, token);
        const plan = this.planSet(config, seen.nodes, lines, current, shared, set.ttlS);
        report = plan.report;
        try {
          return await this.applyDnsPlan(dns, set, config, plan, current, token);
        } catch (err) {
          if (attempt > 1 || !isHafleetError(err, "HAFLEET_ROUTE53_CONFLICT")) throw err;
          this.dnsView = undefined;
          this.log("warn", `weights of ${set.name} changed behind this checker's back: reading them again`, {
            token,
            error: String(err),
          });
        }
      }
    } catch (err) {
      errors.push(`dns ${dns.name}: ${String(err)}`);
      return { lines: report, changed: 0, outOfDns: [] };
    }
  }

  /**
   * The weighted set planned from the verdicts (`planDns`) against `current`,
   * and the records to change or remove (`planRecordChanges`). Its endpoints
   * are the nodes' stable names (`planEndpoints`): of a name's nodes, the
   * newer live one stands for it, so a replacement takes over its record, and
   * a node gone for `NODE_GONE_AFTER_MS` stands for none (docs/architecture.md §5.2).
   */
  private planSet(
    config: FleetConfig,
    nodes: readonly NodeRecord[],
    lines: readonly NodeReportLine[],
    current: ReadonlyMap<string, WeightedRecord>,
    shared: string | undefined,
    ttlS: number,
  ): {
    planned: PlannedRecord[];
    report: DnsReportLine[];
    changes: WeightedRecord[];
    removes: WeightedRecord[];
    views: DnsNodeView[];
  } {
    const wallMs = this.clock.wallMs();
    const live = (n: NodeRecord) => lines.find((l) => l.nodeId === n.nodeId)?.heartbeat !== "dead";
    const endpoints = planEndpoints(
      nodes.map((n) => ({
        nodeId: n.nodeId,
        name: n.name,
        startedAtMs: n.startedAtMs,
        live: live(n),
        gone: !live(n) && wallMs - n.heartbeatAtMs > NODE_GONE_AFTER_MS,
      })),
    );
    const views: DnsNodeView[] = [];
    for (const [endpoint, nodeId] of endpoints) {
      const n = nodes.find((x) => x.nodeId === nodeId)!;
      views.push({
        nodeId: endpoint,
        ...(nodeId !== endpoint ? { heldBy: nodeId } : {}),
        live: live(n),
        address: n.publicIp,
        verdict: lines.find((l) => l.nodeId === nodeId)?.verdict ?? "suspect",
        healthyRuns: this.healthyRuns.get(nodeId) ?? 0,
        leaving: n.drain || n.role === "draining" || n.role === "stopped",
      });
    }
    const all = planDns(config.failover.mode, views, current, shared, config.dns);
    const { planned, writes, removes } = planRecordChanges(
      all,
      views,
      current,
      new Set(endpoints.keys()),
      ttlS,
      this.o.dns?.createRecords ?? true,
    );
    const report = planned.map((p) => ({ ...p, from: current.get(p.nodeId)?.weight }));
    return { planned: [...planned], report, changes: [...writes], removes: [...removes], views };
  }

  /** Records the plan fenced in `dns#`, then sends its changes as one compare-and-swap batch against `current`. */
  private async applyDnsPlan(
    dns: CheckerDns,
    set: { zoneId: string; name: string; ttlS: number },
    config: FleetConfig,
    { planned, report, changes, removes, views }: ReturnType<HealthChecker["planSet"]>,
    current: ReadonlyMap<string, WeightedRecord>,
    token: number,
  ): Promise<{ lines: DnsReportLine[]; changed: number; outOfDns: string[] }> {
    // The plan as `dns#` records it: with the change id while Route 53 propagates it, `syncedAt`
    // once a run found it INSYNC. Written when it changed, and by a fresh checker even when
    // Route 53 is already right: a draining node reads it to know when no new answer names it.
    const plan = JSON.stringify([
      set,
      config.failover.mode,
      planned.map((p) => [p.nodeId, p.address, p.weight, p.heldBy]),
    ]);
    if (changes.length === 0 && removes.length === 0) {
      if (this.recordedPlan !== plan) {
        // A change its predecessor left propagating is this checker's to confirm: until then
        // Route 53 has the records, but not every name server serves them.
        if (!this.dnsItemRead) this.pendingChange ??= await this.pendingInDns(set.name);
        this.dnsItemRead = true;
        const pending = this.pendingChange;
        await this.recordDns(
          set,
          config,
          planned,
          token,
          pending ? { changeId: pending.changeId } : { syncedAt: this.clock.wallMs() },
        );
        this.recordedPlan = plan;
      }
      await this.confirmPending(dns, set, config, planned, token);
      return { lines: report, changed: 0, outOfDns: [] };
    }
    this.recordedPlan = undefined;
    await this.recordDns(set, config, planned, token);
    // Unknown until the batch is answered: a failed one makes the next run read Route 53 again.
    const view = this.dnsView;
    this.dnsView = undefined;
    const sent = await dns.records.apply(set, changes, current, removes);
    if (view) {
      for (const c of changes) view.records.set(c.nodeId, { ...c, ttlS: set.ttlS });
      for (const r of removes) view.records.delete(r.nodeId);
      this.dnsView = view;
    }
    // Never waited for: later runs ask about it (`confirmPending`).
    this.dnsItemRead = true;
    this.pendingChange =
      sent.insync || !sent.changeId
        ? undefined
        : {
            changeId: sent.changeId,
            askAtMs: this.clock.nowMs() + DNS_CONFIRM_FIRST_MS,
            gapMs: DNS_CONFIRM_FIRST_MS,
          };
    await this.recordDns(
      set,
      config,
      planned,
      token,
      this.pendingChange ? { changeId: this.pendingChange.changeId } : { syncedAt: this.clock.wallMs() },
    );
    this.recordedPlan = plan;
    const moved = report.filter((r) => changes.some((c) => c.nodeId === r.nodeId));
    // A failover, as opposed to a drain or a mode switch: a serving node's weight to 0 on a bad verdict.
    const outOfDns = moved
      .filter((r) => r.weight === 0 && (r.from ?? 0) > 0)
      .map((r) => views.find((v) => v.nodeId === r.nodeId))
      .filter((v) => v !== undefined && !v.leaving && v.verdict !== "healthy" && v.verdict !== "recovered")
      .map((v) => v!.nodeId);
    const summary = [
      ...moved.map((r) => `${r.nodeId} ${r.from ?? "new"} -> ${r.weight}`),
      ...removes.map(
        (r) => `${r.nodeId} removed (no node of that name for ${NODE_GONE_AFTER_MS / 60_000} min)`,
      ),
    ].join(", ");
    this.log(moved.some((r) => r.weight === 0) ? "warn" : "info", `weights of ${set.name}: ${summary}`, {
      token,
    });
    await appendEvent(this.o.store, this.o.fleetId, {
      lease: "checker",
      kind: "weights-changed",
      by: this.o.checkerId,
      token,
      reason: [
        ...moved.map((r) => `${r.nodeId}: ${r.reason}`),
        ...removes.map((r) => `${r.nodeId}: stale, no known node stands for it`),
      ].join("; "),
      detail: {
        name: set.name,
        mode: config.failover.mode,
        changes: moved.map((r) => ({
          nodeId: r.nodeId,
          from: r.from ?? null,
          to: r.weight,
          address: r.address,
        })),
        ...(removes.length > 0
          ? { removed: removes.map((r) => ({ nodeId: r.nodeId, weight: r.weight, address: r.address })) }
          : {}),
      },
    });
    return { lines: report, changed: changes.length, outOfDns };
  }

  /**
   * The weighted set: this checker's view while it is fresh and it has held
   * the lease throughout (another checker may have changed the set meanwhile),
   * else read from Route 53.
   */
  private async readDns(
    dns: CheckerDns,
    set: { zoneId: string; name: string; ttlS: number },
    token: number,
  ): Promise<Map<string, WeightedRecord>> {
    const key = `${token} ${set.zoneId} ${set.name}`;
    const view = this.dnsView;
    if (view && view.key === key && this.clock.nowMs() - view.readAtMs < (dns.rereadMs ?? 30_000)) {
      return view.records;
    }
    this.dnsView = undefined;
    const records = await dns.records.read(set);
    this.dnsView = { key, readAtMs: this.clock.nowMs(), records };
    return records;
  }

  /** A change that `dns#` names and does not call synced: a predecessor's, still propagating when it stopped. */
  private async pendingInDns(name: string): Promise<PendingChange | undefined> {
    const item = await this.o.store.get("state", { pk: keys.fleet(this.o.fleetId), sk: keys.dns(name) });
    if (typeof item?.changeId !== "string" || item.syncedAt !== undefined) return undefined;
    return { changeId: item.changeId, askAtMs: this.clock.nowMs(), gapMs: DNS_CONFIRM_FIRST_MS };
  }

  /**
   * Asks Route 53 about the pending change once it is due (one GetChange), and
   * records `syncedAt` when it is INSYNC; otherwise asks again after twice the
   * last gap. The plan is Route 53's already (this run had no change to send).
   */
  private async confirmPending(
    dns: CheckerDns,
    set: { zoneId: string; name: string; ttlS: number },
    config: FleetConfig,
    planned: readonly PlannedRecord[],
    token: number,
  ): Promise<void> {
    const pending = this.pendingChange;
    if (!pending || this.clock.nowMs() < pending.askAtMs) return;
    if (await dns.records.isInSync(pending.changeId)) {
      await this.recordDns(set, config, planned, token, { syncedAt: this.clock.wallMs() });
      this.pendingChange = undefined;
      this.log("info", `weights of ${set.name} in sync (change ${pending.changeId})`, { token });
      return;
    }
    const gapMs = Math.min(2 * pending.gapMs, DNS_CONFIRM_MAX_MS);
    this.pendingChange = { ...pending, askAtMs: this.clock.nowMs() + gapMs, gapMs };
  }

  /**
   * Records the planned set fenced in `dns#` (refused once the lease moved on),
   * with the change that made Route 53 match it while that is propagating
   * (`changeId`), or `syncedAt` once it is INSYNC.
   */
  private async recordDns(
    set: { zoneId: string; name: string; ttlS: number },
    config: FleetConfig,
    planned: readonly PlannedRecord[],
    token: number,
    sync: { readonly syncedAt?: number; readonly changeId?: string } = {},
  ): Promise<void> {
    if (!this.lease.isLeader())
      throw new FencedError(keys.dns(set.name), token, "the checker lease ran out during the run");
    // The desired weights, fenced: refused unless this checker still holds the lease with this token.
    await fencedPut(this.o.store, {
      fleetId: this.o.fleetId,
      sk: keys.dns(set.name),
      token,
      attrs: {
        kind: "dns",
        zoneId: set.zoneId,
        name: set.name,
        ttlS: set.ttlS,
        mode: config.failover.mode,
        weights: Object.fromEntries(
          planned.map((p) => [
            p.nodeId,
            { address: p.address, weight: p.weight, ...(p.heldBy ? { nodeId: p.heldBy } : {}) },
          ]),
        ),
        by: this.o.checkerId,
        at: this.clock.wallMs(),
        ...(sync.syncedAt !== undefined ? { syncedAt: sync.syncedAt } : {}),
        ...(sync.changeId !== undefined ? { changeId: sync.changeId } : {}),
      },
      lease: { name: "checker", holder: this.o.checkerId },
    });
  }

  private async probe(adminUrl: string): Promise<boolean> {
    if (!adminUrl) return false;
    try {
      const res = await fetch(`${adminUrl}/healthz`, {
        signal: AbortSignal.timeout(this.o.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS),
      });
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  }
}

/** What one invocation of the checker Lambda is asked to do. */
export interface CheckerInvocation {
  readonly fleetId: string;
  readonly runForMs: number;
  readonly intervalMs: number;
}

const DirectEvent = z.strictObject({
  fleetId: z.string().regex(NAME_PATTERN, NAME_RULE).optional(),
  runForMs: z.int().min(0).max(900_000).optional(),
  intervalMs: z.int().min(200).max(60_000).optional(),
});
const ScheduledEvent = z.looseObject({ source: z.literal("aws.events"), "detail-type": z.string() });

/**
 * Validates an invocation: an EventBridge scheduled event (settings from the
 * environment) or a direct one (`{fleetId?, runForMs?, intervalMs?}`).
 * Throws `HAFLEET_EVENT_INVALID` naming the bad field; nothing runs then.
 */
export function parseCheckerInvocation(
  event: unknown,
  env: NodeJS.ProcessEnv,
  remainingMs: number,
): CheckerInvocation {
  const fail = (message: string): never => {
    throw new HafleetError("HAFLEET_EVENT_INVALID", `invalid health-checker invocation: ${message}`);
  };
  let direct: z.infer<typeof DirectEvent> = {};
  if (!ScheduledEvent.safeParse(event).success) {
    const parsed = DirectEvent.safeParse(event ?? {});
    if (!parsed.success) {
      fail(parsed.error.issues.map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`).join("; "));
    } else direct = parsed.data;
  }
  const fleetId = direct.fleetId ?? env.HAFLEET_FLEET_ID;
  if (!fleetId) return fail("fleetId: missing (set HAFLEET_FLEET_ID or pass fleetId)");
  const envRun = env.HAFLEET_CHECKER_RUN_FOR_MS ? Number(env.HAFLEET_CHECKER_RUN_FOR_MS) : undefined;
  const envInterval = env.HAFLEET_CHECKER_INTERVAL_MS ? Number(env.HAFLEET_CHECKER_INTERVAL_MS) : undefined;
  const intervalMs = direct.intervalMs ?? envInterval ?? 2000;
  if (!Number.isFinite(intervalMs) || intervalMs < 200)
    fail(`HAFLEET_CHECKER_INTERVAL_MS: must be at least 200, got ${intervalMs}`);
  // Stop before the Lambda's timeout, so the lease is released and metrics are flushed.
  const wanted = direct.runForMs ?? envRun ?? 55_000;
  if (!Number.isFinite(wanted) || wanted < 0)
    fail(`HAFLEET_CHECKER_RUN_FOR_MS: must be at least 0, got ${wanted}`);
  return { fleetId, intervalMs, runForMs: Math.max(0, Math.min(wanted, remainingMs - LAMBDA_MARGIN_MS)) };
}
