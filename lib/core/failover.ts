/**
 * Failover decisions as pure functions: what the health checker concludes
 * from the signals it gathered, and what it should change. No I/O here, so the
 * rules are tested as tables (test/unit/core/failover.test.ts).
 *
 * docs/architecture.md §4: a node is failed only when at least two independent signals agree
 * (heartbeat, direct probe, lease), or when its lease has expired. The one
 * exception is the gray failure: a node whose agent keeps heartbeating (and,
 * if active, renewing) while probes of its proxy fail. Its own signals cannot
 * be trusted to say so, so the checker marks it failed in `node#`; its agent
 * then releases the lease and stops contending until the mark is cleared.
 */
import type { WeightedRecord } from "./dns";
import { type Liveness, startedAfter } from "./heartbeat";

export type ProbeState = "up" | "down" | "unknown";

export interface NodeSignals {
  readonly heartbeat: Liveness;
  /** Damped probe state (rise/fall) of the node's health endpoint. */
  readonly probe: ProbeState;
  readonly isLeaseHolder: boolean;
  /** For the holder: the checker saw its lease record stay unchanged for longer than leaseMs. */
  readonly leaseExpired: boolean;
  readonly markedFailed: boolean;
}

export type Verdict = "healthy" | "suspect" | "failed" | "gray-failure" | "recovered";

export interface Judgement {
  readonly verdict: Verdict;
  readonly reason: string;
  /** Set or clear the node's `failed` mark. */
  readonly mark: "set" | "clear" | "keep";
}

export function judgeNode(s: NodeSignals): Judgement {
  if (s.isLeaseHolder && s.leaseExpired) {
    return { verdict: "failed", reason: "its lease expired (no renewal seen for leaseMs)", mark: "keep" };
  }
  if (s.heartbeat === "dead" && s.probe === "down") {
    return { verdict: "failed", reason: "heartbeat and probe agree it is down", mark: "keep" };
  }
  if (s.probe === "down" && s.heartbeat !== "dead") {
    if (s.markedFailed)
      return { verdict: "failed", reason: "probe still failing; already marked failed", mark: "keep" };
    return {
      verdict: "gray-failure",
      reason: s.isLeaseHolder
        ? "probes fail while its heartbeat and lease look alive (a gray failure, or a crash the heartbeat has not shown yet)"
        : "probes fail while its heartbeat looks alive: it must not be promoted",
      mark: "set",
    };
  }
  if (s.markedFailed) {
    if (s.probe === "up" && s.heartbeat === "alive") {
      return { verdict: "recovered", reason: "probe and heartbeat healthy again", mark: "clear" };
    }
    return { verdict: "failed", reason: "marked failed and not yet healthy on both signals", mark: "keep" };
  }
  if (s.heartbeat === "dead")
    return { verdict: "suspect", reason: "heartbeat stale but probe answers", mark: "keep" };
  if (s.heartbeat === "suspect") return { verdict: "suspect", reason: "heartbeat late", mark: "keep" };
  return { verdict: "healthy", reason: "heartbeat fresh, probe not failing", mark: "keep" };
}

/** A node's judgement as the mark rule sees it. */
export interface MarkCandidate {
  readonly nodeId: string;
  /** What `judgeNode` asks for its mark. */
  readonly mark: Judgement["mark"];
  /** It carries a mark that still holds. */
  readonly markedFailed: boolean;
  /** Its mark has used up half its TTL: renew it now if it is kept. */
  readonly renewDue: boolean;
  /** Its heartbeat is not dead: a node that could hold the lease, and that a mark would keep from it. */
  readonly live: boolean;
}

/** What to write to a node's mark: a new one, a later `untilSeq` on the one it has, no mark, or nothing. */
export type MarkAction = "set" | "renew" | "clear" | "keep";

export interface MarkPlan {
  readonly marks: ReadonlyMap<string, MarkAction>;
  /** Nodes whose new mark or renewal the rule withheld. */
  readonly withheld: readonly string[];
  readonly reason?: string;
}

/**
 * docs/architecture.md §4: the checker never marks all nodes or a majority of
 * the live ones (those whose heartbeat is not dead). When that many look gray
 * at once, the checker's own view is the likelier fault (its network to the
 * nodes, as in `planWeights`), and marking them would make the holder step
 * down with nobody left who may take over. Such a run sets no new mark; it
 * still clears marks of recovered nodes. Marks carry a TTL (`FailedMark`) and
 * are renewed while they are kept, unless the kept marks alone are already
 * that many: then they are left to lapse.
 */
export function planMarks(candidates: readonly MarkCandidate[]): MarkPlan {
  const marks = new Map<string, MarkAction>();
  for (const c of candidates)
    marks.set(c.nodeId, c.mark === "keep" && c.markedFailed && c.renewDue ? "renew" : c.mark);
  const live = candidates.filter((c) => c.live);
  const tooMany = (n: number) => 2 * n > live.length;
  const kept = live.filter((c) => c.markedFailed && c.mark !== "clear").length;
  const withAsked = kept + live.filter((c) => c.mark === "set").length;
  const asked = candidates.filter((c) => c.mark === "set").map((c) => c.nodeId);
  const renewals = candidates.filter((c) => marks.get(c.nodeId) === "renew").map((c) => c.nodeId);
  const withheld = [
    ...(asked.length > 0 && tooMany(withAsked) ? asked : []),
    ...(tooMany(kept) ? renewals : []),
  ];
  if (withheld.length === 0) return { marks, withheld };
  for (const id of withheld) marks.set(id, "keep");
  const n = tooMany(kept) ? kept : withAsked;
  return {
    marks,
    withheld,
    reason: `${withheld.join(", ")}: ${n} of ${live.length} live nodes would be marked failed (all or a majority), so the checker's own view is the likelier fault`,
  };
}

export interface VipDesired {
  readonly allocationId: string;
  readonly owner: string;
  readonly instanceId: string;
  readonly token: number;
}

export interface LeaseView {
  readonly holder: string | undefined;
  readonly token: number;
  readonly expired: boolean;
}

export type VipPlan =
  | { readonly action: "none"; readonly reason: string }
  | { readonly action: "associate"; readonly instanceId: string; readonly reason: string };

/**
 * Whether to re-associate an Elastic IP with the owner its leader recorded.
 * The checker only follows the current holder's fenced `vip#` (its token is
 * the lease's and its owner the lease's holder); it never chooses an owner
 * itself, never holds the fleet lease, and never moves an address toward a
 * node it judges failed (`ownerJudgedFailed`): that node is about to step down,
 * and the standby that takes over moves the address itself.
 */
export function planVip(
  desired: VipDesired | undefined,
  lease: LeaseView | undefined,
  actualInstanceId: string,
  ownerJudgedFailed = false,
): VipPlan {
  if (!desired) return { action: "none", reason: "no desired owner recorded yet" };
  if (!lease || lease.holder === undefined)
    return { action: "none", reason: "no lease holder: waiting for a takeover" };
  if (lease.expired) return { action: "none", reason: "the holder's lease expired: waiting for a takeover" };
  if (desired.token < lease.token) {
    return {
      action: "none",
      reason: `the holder (token ${lease.token}) has not recorded its Elastic IP yet`,
    };
  }
  if (desired.owner !== lease.holder || desired.token !== lease.token) {
    return {
      action: "none",
      reason: `vip# (owner ${desired.owner}, token ${desired.token}) is not the holder's`,
    };
  }
  if (actualInstanceId === desired.instanceId) return { action: "none", reason: "associated as desired" };
  if (ownerJudgedFailed)
    return {
      action: "none",
      reason: `associated with '${actualInstanceId || "nothing"}'; holder ${desired.owner} is judged failed: not moving the address toward it`,
    };
  return {
    action: "associate",
    instanceId: desired.instanceId,
    reason: `associated with '${actualInstanceId || "nothing"}', but holder ${desired.owner} (token ${desired.token}) recorded ${desired.instanceId}`,
  };
}

/** Damped probe results per node: `fall` failures in a row make it down, `rise` successes up. */
export class ProbeTracker {
  private readonly runs = new Map<string, { state: ProbeState; ok: number; bad: number }>();
  constructor(
    readonly rise = 2,
    readonly fall = 2,
  ) {}

  record(nodeId: string, ok: boolean): ProbeState {
    let r = this.runs.get(nodeId);
    if (!r) {
      r = { state: "unknown", ok: 0, bad: 0 };
      this.runs.set(nodeId, r);
    }
    if (ok) {
      r.ok++;
      r.bad = 0;
      if (r.ok >= this.rise) r.state = "up";
    } else {
      r.bad++;
      r.ok = 0;
      if (r.bad >= this.fall) r.state = "down";
    }
    return r.state;
  }

  forget(keep: ReadonlySet<string>): void {
    for (const id of this.runs.keys()) if (!keep.has(id)) this.runs.delete(id);
  }
}

export interface WeightTarget {
  readonly nodeId: string;
  /** The node's capacity weight from config; what it gets when fully healthy. */
  readonly configured: number;
  /** Its weight in DNS now. */
  readonly current: number;
  readonly verdict: Verdict;
  /** Consecutive checker runs that found it healthy (after its rise damping). */
  readonly healthyRuns: number;
}

export interface PlannedWeight {
  readonly nodeId: string;
  readonly weight: number;
  readonly reason: string;
}

/**
 * Route 53 weights for active-active (docs/architecture.md §5.2). A failed node's
 * weight drops to 0 at once. A recovered node ramps back over `rampRuns`
 * checker runs (slow start in DNS), so a node that just came back is not
 * handed a full share of new clients at once. Never every weight at 0: when
 * every node looks failed, the checker's own view is the likelier fault, and
 * Route 53 itself treats all-unhealthy as all-healthy; the weights then stay as
 * they are (or, if all are 0 already, go back to configured).
 */
export function planWeights(targets: readonly WeightTarget[], rampRuns = 4): PlannedWeight[] {
  const planned = targets.map((t): PlannedWeight => {
    if (t.verdict === "failed" || t.verdict === "gray-failure") {
      return { nodeId: t.nodeId, weight: 0, reason: `out of DNS: judged ${t.verdict}` };
    }
    if (t.verdict === "suspect")
      return { nodeId: t.nodeId, weight: t.current, reason: "suspect: weight kept" };
    if (t.current >= t.configured) return { nodeId: t.nodeId, weight: t.configured, reason: "healthy" };
    const step = Math.ceil((t.configured * Math.min(rampRuns, Math.max(1, t.healthyRuns))) / rampRuns);
    const weight = Math.min(t.configured, Math.max(t.current, step));
    return {
      nodeId: t.nodeId,
      weight,
      reason: weight < t.configured ? `ramping up: ${weight} of ${t.configured}` : "healthy again",
    };
  });
  if (planned.length > 0 && planned.every((p) => p.weight === 0)) {
    const allZeroNow = targets.every((t) => t.current === 0);
    return targets.map((t) => ({
      nodeId: t.nodeId,
      weight: allZeroNow ? t.configured : t.current,
      reason: "every node looks failed: fail open (never all weights 0)",
    }));
  }
  // Nor when no node is known good: the ones not taken out are only suspect (their probes fail
  // too). Zeroing the failed ones would send every client to nodes this checker cannot reach
  // either; its own view is then the likelier fault (as in `planMarks`), so nothing changes.
  if (planned.every((p, i) => p.weight === 0 || targets[i]!.verdict === "suspect")) {
    return targets.map((t) => ({
      nodeId: t.nodeId,
      weight: t.current,
      reason: "no node looks healthy: fail open (weights kept)",
    }));
  }
  return planned;
}

/** The endpoint id of the fleet's shared Elastic IP (active-passive) in the weighted set. */
export const SHARED_ENDPOINT = "active";

/**
 * The health checker asks Route 53 about a change it sent (GetChange) first
 * this long after sending it, then at doubling gaps up to
 * `DNS_CONFIRM_MAX_MS`, in later runs: some six calls over Route 53's minute
 * of propagation, where waiting for INSYNC inside the run made thirty,
 * against Route 53's 5 calls a second per account.
 */
export const DNS_CONFIRM_FIRST_MS = 2000;
export const DNS_CONFIRM_MAX_MS = 16_000;

/**
 * How long a draining node with its own address may wait to leave DNS while it
 * serves: 10 s for the checker to see the drain (a run every few seconds),
 * 60 s for Route 53 to report the change INSYNC (its documented propagation
 * time; the emulator's is at once), one gap of the checker's asking about it
 * (`DNS_CONFIRM_MAX_MS`), then the records' TTL. The CDK stack adds it to the
 * stop timeout.
 */
export function dnsDrainMs(ttlS: number): number {
  return 10_000 + 60_000 + DNS_CONFIRM_MAX_MS + ttlS * 1000;
}

/** A node as the endpoint rule sees it (`planEndpoints`). */
export interface EndpointCandidate {
  readonly nodeId: string;
  /** Its stable name: the endpoint of the weighted set (its record's SetIdentifier) it may stand for. */
  readonly name: string;
  readonly startedAtMs: number;
  /** Its heartbeat is not dead (the checker's `HeartbeatMonitor`, as `planMarks` counts live nodes). */
  readonly live: boolean;
  /** Its heartbeat has been stale for longer than `NODE_GONE_AFTER_MS`: the fleet no longer knows it. */
  readonly gone: boolean;
}

/**
 * Which node stands for each endpoint of the weighted set, by endpoint
 * (docs/architecture.md §5.2). An endpoint is a node's stable name, which a
 * replacement instance takes over with a new node id; of the name's nodes
 * that are not gone, the newest live one stands for it, else the newest (a
 * failed node's record goes to 0, it is not dropped). A node that does not
 * stand for its name (the one a replacement replaces) has no record of its
 * own, and a name whose every node is gone is no endpoint: its record is not
 * written.
 */
export function planEndpoints(nodes: readonly EndpointCandidate[]): Map<string, string> {
  const best = new Map<string, EndpointCandidate>();
  for (const n of nodes) {
    if (n.gone) continue;
    const b = best.get(n.name);
    if (!b || (n.live && !b.live) || (n.live === b.live && startedAfter(n, b))) best.set(n.name, n);
  }
  return new Map([...best].map(([name, n]) => [name, n.nodeId]));
}

/** A node as the DNS planner sees it. */
export interface DnsNodeView {
  /** The endpoint it stands for (`planEndpoints`): its stable name, which keys its record. */
  readonly nodeId: string;
  /** The node id of the node that stands for the endpoint, when it differs from the endpoint. */
  readonly heldBy?: string;
  /** Its heartbeat is not dead: a node the checker may create a missing record for (`planRecordChanges`). */
  readonly live?: boolean;
  /** The node's own public address (its Elastic IP); a node without one gets no record. */
  readonly address: string | undefined;
  readonly verdict: Verdict;
  readonly healthyRuns: number;
  /** Draining or stopped: it takes no new clients, whatever its health. */
  readonly leaving: boolean;
}

export interface DnsRecordView {
  readonly address: string;
  readonly weight: number;
}

export interface PlannedRecord extends PlannedWeight {
  readonly address: string;
  /** The node that stands for the endpoint (`DnsNodeView.heldBy`): whom a drain of this record concerns. */
  readonly heldBy?: string;
}

/**
 * The weighted set of a fleet's name, by mode (docs/architecture.md §5.2):
 * - active-active: each node's own address at its weight (`planWeights`: 0
 *   when failed, a ramp back, never all 0); the shared address at 0, so a
 *   client that resolved it earlier is still served but no new one gets it.
 * - active-passive: the shared address at the configured weight; each node's
 *   own record at 0 (the records stay, so a switch back needs no new ones).
 * Either switch leaves every address served: nodes serve on their own address
 * and the lease holder on the shared one in both modes; only DNS moves.
 */
export function planDns(
  mode: "active-passive" | "active-active",
  nodes: readonly DnsNodeView[],
  current: ReadonlyMap<string, DnsRecordView>,
  shared: string | undefined,
  dns: {
    readonly weight: number;
    readonly nodeWeights: Readonly<Record<string, number>>;
    readonly rampRuns: number;
  },
): PlannedRecord[] {
  const out: PlannedRecord[] = [];
  const withAddress = nodes.filter((n): n is DnsNodeView & { address: string } => !!n.address);
  if (mode === "active-active") {
    const planned = planWeights(
      withAddress.map((n) => ({
        nodeId: n.nodeId,
        configured: dns.nodeWeights[n.nodeId] ?? dns.weight,
        current: current.get(n.nodeId)?.weight ?? 0,
        verdict: n.leaving ? "failed" : n.verdict,
        healthyRuns: n.healthyRuns,
      })),
      dns.rampRuns,
    );
    for (const [i, p] of planned.entries()) {
      const n = withAddress[i]!;
      const reason = n.leaving && p.weight === 0 ? "out of DNS: draining or stopped" : p.reason;
      out.push({ ...p, reason, address: n.address, ...(n.heldBy ? { heldBy: n.heldBy } : {}) });
    }
    if (shared)
      out.push({
        nodeId: SHARED_ENDPOINT,
        address: shared,
        weight: 0,
        reason: "active-active: nodes' own addresses serve",
      });
    return out;
  }
  if (!shared) return out; // nowhere to point: leave the set as it is
  out.push({
    nodeId: SHARED_ENDPOINT,
    address: shared,
    weight: dns.weight,
    reason: "active-passive: the lease holder's address",
  });
  for (const n of withAddress)
    out.push({
      nodeId: n.nodeId,
      address: n.address,
      weight: 0,
      reason: "active-passive: the shared address serves",
      ...(n.heldBy ? { heldBy: n.heldBy } : {}),
    });
  return out;
}

/** What one run sends to Route 53 for a planned set (`planRecordChanges`). */
export interface RecordChanges {
  /** The plan as the run records it in `dns#`: without records it may not create. */
  readonly planned: readonly PlannedRecord[];
  /** Records to create or change, each carrying the health check it has. */
  readonly writes: readonly WeightedRecord[];
  /** Stale records to delete, exactly as read. */
  readonly removes: readonly WeightedRecord[];
}

/**
 * The changes that make the weighted set match a plan (docs/architecture.md
 * §5.2), against `current`, the fleet's records as read (its name and its
 * SetIdentifier scheme only: never another fleet's):
 * - a record that exists is changed when its weight, address or TTL differs,
 *   carrying its health check (a record without one always counts healthy);
 * - a missing record is created only for the shared address and for an
 *   endpoint whose node is live and not leaving: never for a leaving,
 *   failed-and-silent or unknown node, whose record would come back with no
 *   health check and outlive the fleet; and none at all unless `create`
 *   (a stack's checker: the stack made every record, with its health check,
 *   and one missing was deleted by it, as `cdk destroy` does while the nodes
 *   still run);
 * - a record of an endpoint no node stands for (`known`: every endpoint of
 *   `planEndpoints`) that carries no health check is stale, one the checker
 *   made for a node that is gone, and is removed. A record with a health check
 *   is the stack's (or an operator's) and is left alone: the stack may create
 *   it before its node first beats.
 */
export function planRecordChanges(
  planned: readonly PlannedRecord[],
  views: readonly DnsNodeView[],
  current: ReadonlyMap<string, WeightedRecord>,
  known: ReadonlySet<string>,
  ttlS: number,
  create = true,
): RecordChanges {
  const creatable = (id: string) => {
    if (!create) return false;
    if (id === SHARED_ENDPOINT) return true;
    const v = views.find((n) => n.nodeId === id);
    return !!v && v.live !== false && !v.leaving;
  };
  const kept = planned.filter((p) => current.has(p.nodeId) || creatable(p.nodeId));
  const writes = kept
    .filter((p) => {
      const now = current.get(p.nodeId);
      return !now || now.weight !== p.weight || now.address !== p.address || now.ttlS !== ttlS;
    })
    .map((p): WeightedRecord => {
      const healthCheckId = current.get(p.nodeId)?.healthCheckId;
      return {
        nodeId: p.nodeId,
        address: p.address,
        weight: p.weight,
        ...(healthCheckId ? { healthCheckId } : {}),
      };
    });
  const removes = [...current.values()].filter(
    (r) =>
      r.nodeId !== SHARED_ENDPOINT &&
      !known.has(r.nodeId) &&
      !r.healthCheckId &&
      !kept.some((p) => p.nodeId === r.nodeId),
  );
  return { planned: kept, writes, removes };
}

/**
 * Why the fleet cannot switch to `to`, or undefined when it can. Active-active
 * sends clients to every node's own Elastic IP through the weighted set, so
 * every live node must have an address of its own (its heartbeat's
 * `publicIp`), as the active-active stack and the local fleet give it; a fleet
 * deployed active-passive has none, and switching would leave clients with no
 * record to follow. Active-passive needs nothing more (the shared address is
 * held in both modes). Nodes not heard from within `staleMs` are not asked.
 */
export function modeSwitchRefusal(
  nodes: readonly { nodeId: string; publicIp?: string; heartbeatAtMs: number }[],
  to: "active-passive" | "active-active",
  nowMs: number,
  staleMs: number,
): string | undefined {
  if (to !== "active-active") return undefined;
  const without = nodes.filter((n) => nowMs - n.heartbeatAtMs <= staleMs && !n.publicIp).map((n) => n.nodeId);
  if (without.length === 0) return undefined;
  const who = without.length === 1 ? `${without[0]} has` : `${without.join(", ")} have`;
  return (
    `failover.mode active-active needs an Elastic IP of each node's own and a weighted record per node, ` +
    `as the active-active stack makes them (cdk deploy -c mode=active-active); ${who} no address of its own`
  );
}
