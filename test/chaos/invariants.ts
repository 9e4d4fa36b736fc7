/**
 * The failover invariants a chaos run must keep, each a pure function of what
 * the run observed (`observation.ts`) and the bounds (`bounds.ts`), so each is
 * shown to fire on a hand-written observation that breaks it
 * (test/unit/chaos/invariants.test.ts).
 *
 * Samples are not atomic snapshots: each invariant only compares reads whose
 * order is known (one answered before the other was sent), or reads bracketed
 * by two reads that agree, so a race between the sampler and the fleet is
 * never reported as a violation.
 */
import type { ChaosBounds } from "./bounds";
import {
  backendHealthyAt,
  checkerDisturbed,
  downThroughout,
  eligibleThroughout,
  type LeaseSeen,
  liveAt,
  modeThroughout,
  type Observation,
  type PlanSeen,
  type RecordSeen,
  type StateSample,
} from "./observation";

export interface Violation {
  readonly invariant: InvariantName;
  /** Epoch ms of the sample that shows it. */
  readonly at: number;
  readonly message: string;
}

export type InvariantName =
  | "eip-follows-holder"
  | "fence-monotonic"
  | "dns-converges"
  | "dead-node-weight"
  | "leader-exists"
  | "sessions-stick";

export type Invariant = (o: Observation, b: ChaosBounds) => Violation[];

/** `+7.31s`: a time as the offset into the run's schedule. */
export function offset(o: Pick<Observation, "startedAt">, at: number): string {
  const s = (at - o.startedAt) / 1000;
  return `${s < 0 ? "-" : "+"}${Math.abs(s).toFixed(2)}s`;
}

const nodeOfInstance = (o: Observation) => new Map(o.nodes.map((n) => [n.instanceId, n.nodeId]));

/**
 * The Elastic IP is never on a node whose token is below the current holder's
 * once the holder's move has completed. The move of holder H under token T has
 * completed when its audit event (`vip-moved`, `vip-repaired`) says so, or when a
 * sample saw the address on H while H held T. A sample counts only when the
 * lease read before and after DescribeAddresses agree (H held T throughout).
 */
export const eipFollowsHolder: Invariant = (o) => {
  const out: Violation[] = [];
  const nodeOf = nodeOfInstance(o);
  const completed = new Map<string, number>();
  const complete = (key: string, at: number) => completed.set(key, Math.min(completed.get(key) ?? at, at));
  for (const e of o.events) {
    if ((e.kind === "vip-moved" || e.kind === "vip-repaired") && e.token !== undefined)
      complete(`${e.by}#${e.token}`, e.at);
  }
  const highest = new Map<string, number>();
  const reported = new Set<string>();
  for (const s of [...o.eip].sort((a, b) => a.readAt - b.readAt)) {
    for (const l of [s.before, s.after])
      if (l?.holder) highest.set(l.holder, Math.max(highest.get(l.holder) ?? 0, l.token));
    const held = sameHolding(s.before, s.after);
    if (!held) continue;
    const key = `${held.holder}#${held.token}`;
    const on = nodeOf.get(s.instanceId);
    if (on === held.holder) {
      complete(key, s.doneAt);
      continue;
    }
    const done = completed.get(key);
    if (on === undefined || done === undefined || done >= s.readAt || reported.has(`${key}>${on}`)) continue;
    reported.add(`${key}>${on}`);
    const theirs = highest.get(on);
    out.push({
      invariant: "eip-follows-holder",
      at: s.readAt,
      message:
        `the Elastic IP is on ${on} (${theirs === undefined ? "never held the lease" : `token ${theirs}`}) ` +
        `while ${held.holder} holds token ${held.token} and its move completed at ${offset(o, done)}`,
    });
  }
  return out;
};

function sameHolding(a: LeaseSeen | undefined, b: LeaseSeen | undefined): LeaseSeen | undefined {
  return a?.holder !== undefined && a.holder === b?.holder && a.token === b.token ? a : undefined;
}

/**
 * Every fenced record's token never goes backwards: of two reads of the same
 * record, the one sent after the other was answered never shows a lower token.
 */
export const fenceMonotonic: Invariant = (o) => {
  interface Read {
    readonly record: string;
    readonly token: number;
    readonly sentAt: number;
    readonly doneAt: number;
  }
  const reads: Read[] = [];
  for (const s of o.state)
    for (const [record, token] of Object.entries(s.tokens))
      reads.push({ record, token, sentAt: s.at, doneAt: s.doneAt });
  for (const s of o.eip)
    for (const l of [s.before, s.after])
      if (l) reads.push({ record: "lease#fleet", token: l.token, sentAt: s.startedAt, doneAt: s.endedAt });
  const bySent = [...reads].sort((a, b) => a.sentAt - b.sentAt);
  const byDone = [...reads].sort((a, b) => a.doneAt - b.doneAt);
  const seen = new Map<string, Read>();
  const reported = new Set<string>();
  const out: Violation[] = [];
  let next = 0;
  for (const r of bySent) {
    // Every read answered before this one was sent is known to come before it.
    for (; next < byDone.length && byDone[next]!.doneAt < r.sentAt; next++) {
      const d = byDone[next]!;
      const best = seen.get(d.record);
      if (!best || d.token > best.token) seen.set(d.record, d);
    }
    const earlier = seen.get(r.record);
    if (!earlier || r.token >= earlier.token || reported.has(r.record)) continue;
    reported.add(r.record);
    out.push({
      invariant: "fence-monotonic",
      at: r.sentAt,
      message: `${r.record}: token ${r.token}, after token ${earlier.token} was read at ${offset(o, earlier.sentAt)}`,
    });
  }
  return out;
};

const planKey = (p: PlanSeen) => JSON.stringify([p.mode, p.syncedAt, p.weights]);

/**
 * The plan a state sample may be judged by: recorded in sync, and read the
 * same before and after the records (else a change landed between the reads).
 */
export function stablePlan(s: StateSample): PlanSeen | undefined {
  const plan = s.planBefore;
  if (!plan || !s.planAfter || plan.syncedAt === undefined) return undefined;
  return planKey(plan) === planKey(s.planAfter) ? plan : undefined;
}
const weightsKey = (p: PlanSeen) => JSON.stringify([p.mode, p.weights]);

/** The differences between a plan and the records, as `node-2 50 (want 0)`; empty when they agree. */
export function differences(plan: PlanSeen, records: Readonly<Record<string, RecordSeen>>): string[] {
  return Object.entries(plan.weights)
    .filter(([id, w]) => records[id]?.weight !== w.weight || records[id]?.address !== w.address)
    .map(([id, w]) => {
      const r = records[id];
      return r
        ? `${id} ${r.weight} at ${r.address} (want ${w.weight} at ${w.address})`
        : `${id} missing (want ${w.weight})`;
    });
}

/**
 * Route 53 weights converge to the latest plan: after every fault has healed,
 * within `convergeMs` a sample shows the plan in sync and Route 53 agreeing with
 * it; and at no time does Route 53 differ from a plan recorded in sync for
 * longer than `convergeMs`. A sample judges only when its reads of the plan
 * before and after the records agree and the plan says it was synced.
 */
export const dnsConverges: Invariant = (o, b) => {
  const out: Violation[] = [];
  let converged = false;
  let diverged: { since: number; key: string; reported: boolean } | undefined;
  for (const s of [...o.state].sort((x, y) => x.at - y.at)) {
    const plan = stablePlan(s);
    if (!plan) continue;
    const diff = differences(plan, s.records);
    if (diff.length === 0) {
      if (s.at >= o.healedAt) converged = true;
      diverged = undefined;
      continue;
    }
    const key = weightsKey(plan);
    if (diverged?.key !== key) diverged = { since: s.at, key, reported: false };
    if (!diverged.reported && s.doneAt - diverged.since > b.convergeMs) {
      diverged.reported = true;
      out.push({
        invariant: "dns-converges",
        at: s.at,
        message: `Route 53 has differed from the plan recorded in sync since ${offset(o, diverged.since)}: ${diff.join(", ")}`,
      });
    }
  }
  if (!converged) {
    const last = [...o.state].sort((x, y) => x.at - y.at).at(-1);
    const why = !last?.planBefore
      ? "no plan was recorded"
      : last.planBefore.syncedAt === undefined
        ? "the last plan was never synced"
        : `Route 53 differs: ${differences(last.planBefore, last.records).join(", ") || "(no stable sample)"}`;
    out.push({
      invariant: "dns-converges",
      at: o.endedAt,
      message: `Route 53 did not converge to the plan within ${b.convergeMs} ms of ${offset(o, o.healedAt)} (healed): ${why}`,
    });
  }
  return out;
};

/**
 * A dead node never keeps weight beyond the bound: in active-active, a node
 * whose process has been down for `deadWeightMs` has weight 0 in Route 53, as
 * long as the mode was active-active and the checker undisturbed all that time
 * and another node was healthy (else failing open is right).
 */
export const deadNodeWeight: Invariant = (o, b) => {
  const out: Violation[] = [];
  const reported = new Set<string>();
  for (const s of o.state) {
    const from = s.at - b.deadWeightMs;
    if (!modeThroughout(o.happenings, o.initialMode, "active-active", from, s.at)) continue;
    if (checkerDisturbed(o.happenings, from, s.at, b)) continue;
    for (const { nodeId } of o.nodes) {
      const w = s.records[nodeId]?.weight ?? 0;
      if (w === 0 || reported.has(nodeId) || !downThroughout(o.happenings, nodeId, from, s.at)) continue;
      const other = o.nodes.some(
        (m) => m.nodeId !== nodeId && eligibleThroughout(o.happenings, m.nodeId, from, s.at, b),
      );
      if (!other) continue;
      reported.add(nodeId);
      out.push({
        invariant: "dead-node-weight",
        at: s.at,
        message: `${nodeId} has been down since ${offset(o, downSince(o, nodeId, s.at))} and still has weight ${w} in Route 53 (bound ${b.deadWeightMs} ms)`,
      });
    }
  }
  return out;
};

function downSince(o: Observation, node: string, t: number): number {
  let since = t;
  for (const e of [...o.happenings].sort((a, b) => b.at - a.at)) {
    if (e.at > t || !("node" in e) || e.node !== node) continue;
    if (e.kind === "start" || e.kind === "resume") break;
    if (e.kind === "kill" || e.kind === "exit" || e.kind === "pause") since = e.at;
  }
  return since;
}

/**
 * No leaderless fleet while an eligible node lives: every read of the fleet
 * lease in a stretch of `leaderlessMs` shows no live holder (none, or one whose
 * process is down or cut off from the store), while some node was eligible all
 * that stretch, is a violation.
 */
export const leaderExists: Invariant = (o, b) => {
  const reads: { at: number; lease: LeaseSeen | undefined }[] = [];
  for (const s of o.state) reads.push({ at: s.at, lease: s.lease });
  for (const s of o.eip) {
    reads.push({ at: s.startedAt, lease: s.before });
    reads.push({ at: s.endedAt, lease: s.after });
  }
  reads.sort((x, y) => x.at - y.at);
  const out: Violation[] = [];
  let since: number | undefined;
  let reported = false;
  for (const r of reads) {
    const holder = r.lease?.holder;
    if (holder !== undefined && liveAt(o.happenings, holder, r.at)) {
      since = undefined;
      reported = false;
      continue;
    }
    since ??= r.at;
    if (reported || r.at - since < b.leaderlessMs) continue;
    const eligible = o.nodes.filter((n) =>
      eligibleThroughout(o.happenings, n.nodeId, r.at - b.leaderlessMs, r.at, b),
    );
    if (eligible.length === 0) continue;
    reported = true;
    out.push({
      invariant: "leader-exists",
      at: r.at,
      message:
        `no live leader since ${offset(o, since)} (lease: ${holder ? `${holder}, not live` : "no holder"}, ` +
        `token ${r.lease?.token ?? "none"}) while ${eligible.map((n) => n.nodeId).join(", ")} could lead (bound ${b.leaderlessMs} ms)`,
    });
  }
  return out;
};

/**
 * No sticky session is reassigned while its backend is healthy: neither a
 * mapping in the session table nor a client's answers move to another backend
 * while the one before was up.
 */
export const sessionsStick: Invariant = (o) => {
  const out: Violation[] = [];
  const mapped = new Map<string, string>();
  const reported = new Set<string>();
  for (const s of [...o.sessions].sort((a, b) => a.at - b.at)) {
    for (const [key, backend] of Object.entries(s.mappings)) {
      const before = mapped.get(key);
      mapped.set(key, backend);
      if (before === undefined || before === backend || !backendHealthyAt(o.happenings, before, s.at))
        continue;
      if (reported.has(key)) continue;
      reported.add(key);
      out.push({
        invariant: "sessions-stick",
        at: s.at,
        message: `session ${key.slice(0, 8)}… moved from ${before} (healthy) to ${backend} in the session table`,
      });
    }
  }
  const last = new Map<number, string>();
  for (const a of [...o.answers].sort((x, y) => x.at - y.at)) {
    const before = last.get(a.client);
    last.set(a.client, a.backend);
    if (before === undefined || before === a.backend || !backendHealthyAt(o.happenings, before, a.at))
      continue;
    if (reported.has(`client ${a.client}`)) continue;
    reported.add(`client ${a.client}`);
    out.push({
      invariant: "sessions-stick",
      at: a.at,
      message: `sticky client ${a.client} was answered by ${a.backend} after ${before} (healthy)`,
    });
  }
  return out;
};

export const INVARIANTS: Readonly<Record<InvariantName, Invariant>> = {
  "eip-follows-holder": eipFollowsHolder,
  "fence-monotonic": fenceMonotonic,
  "dns-converges": dnsConverges,
  "dead-node-weight": deadNodeWeight,
  "leader-exists": leaderExists,
  "sessions-stick": sessionsStick,
};

/** Every invariant's violations, in time order. */
export function checkInvariants(o: Observation, b: ChaosBounds): Violation[] {
  return Object.values(INVARIANTS)
    .flatMap((check) => check(o, b))
    .sort((x, y) => x.at - y.at);
}
