/**
 * What a chaos run observed, as plain data: samples of the fleet's state read
 * from the emulator, the audit trail, the sticky clients' answers, and the
 * ground truth of what the runner itself did and when (`Happening`s). The
 * invariants (`invariants.ts`) are pure functions of one `Observation`, so
 * they are tested on hand-written ones.
 *
 * Times are epoch milliseconds of this machine's clock: every process of the
 * local fleet runs here, so the audit trail's times compare with the samples'.
 */

export type Mode = "active-passive" | "active-active";

export interface LeaseSeen {
  readonly holder: string | undefined;
  readonly token: number;
}

/** One read of the shared Elastic IP, between two reads of the fleet lease. */
export interface EipSample {
  /** When the first lease read was sent, and when the second one's answer came. */
  readonly startedAt: number;
  readonly endedAt: number;
  /** When DescribeAddresses was sent, and when its answer came. */
  readonly readAt: number;
  readonly doneAt: number;
  /** The fleet lease read just before and just after. */
  readonly before: LeaseSeen | undefined;
  readonly after: LeaseSeen | undefined;
  /** The instance the shared Elastic IP is associated with ('' for none). */
  readonly instanceId: string;
}

export interface RecordSeen {
  readonly address: string;
  readonly weight: number;
}

/** The checker's plan of the weighted set (`dns#`). */
export interface PlanSeen {
  readonly mode: string;
  readonly token: number;
  readonly syncedAt: number | undefined;
  readonly weights: Readonly<Record<string, RecordSeen>>;
}

/** One read of the fleet's items and its Route 53 records. */
export interface StateSample {
  /** When the first read was sent and the last answer came. */
  readonly at: number;
  readonly doneAt: number;
  readonly lease: LeaseSeen | undefined;
  /** Every fenced token by record: `lease#fleet`, `lease#checker`, `vip#<id>`, `dns#<name>`, `node#<id> failed`. */
  readonly tokens: Readonly<Record<string, number>>;
  /** The plan read before and after the records, so a sample knows whether it changed meanwhile. */
  readonly planBefore: PlanSeen | undefined;
  readonly planAfter: PlanSeen | undefined;
  /** The weighted set in Route 53, by node id (`active` for the shared address). */
  readonly records: Readonly<Record<string, RecordSeen>>;
}

/** The sticky mappings in the session table: session key to backend. */
export interface SessionSample {
  readonly at: number;
  readonly mappings: Readonly<Record<string, string>>;
}

/** A successful answer to a sticky client. */
export interface ClientAnswer {
  readonly client: number;
  readonly at: number;
  readonly backend: string;
}

/** An audit-trail event (`event#`). */
export interface AuditEvent {
  readonly at: number;
  readonly kind: string;
  readonly by: string;
  readonly token: number | undefined;
}

/**
 * What the runner did, when: the ground truth the samples are judged against.
 * Faults with a duration carry `until` (when they were healed).
 */
export type Happening =
  | {
      readonly at: number;
      readonly kind: "start" | "kill" | "pause" | "resume" | "exit" | "drain";
      readonly node: string;
    }
  /** The node's DynamoDB calls are refused or never sent on: its writes do not land. */
  | { readonly at: number; readonly kind: "store-cut"; readonly node: string; readonly until: number }
  /**
   * The node's DynamoDB calls land but their answers are lost or late: it cannot
   * take a lease, but as holder its late renewals keep the item fresh, so nobody
   * takes over (by design: a store outage alone never moves the leader).
   */
  | { readonly at: number; readonly kind: "store-impaired"; readonly node: string; readonly until: number }
  /** The checker cannot reach this node's admin port; `all` marks a cut of every node at once. */
  | {
      readonly at: number;
      readonly kind: "probe-cut";
      readonly node: string;
      readonly all: boolean;
      readonly until: number;
    }
  /** The checker's path to AWS was faulted. */
  | { readonly at: number; readonly kind: "checker-fault"; readonly until: number }
  | { readonly at: number; readonly kind: "checker-restart" }
  | { readonly at: number; readonly kind: "backend-down"; readonly backend: string; readonly until: number }
  | { readonly at: number; readonly kind: "mode"; readonly mode: Mode };

export interface Observation {
  /** When the schedule began (its time 0), when every fault was healed, when sampling ended. */
  readonly startedAt: number;
  readonly healedAt: number;
  readonly endedAt: number;
  readonly initialMode: Mode;
  readonly nodes: readonly { readonly nodeId: string; readonly instanceId: string }[];
  readonly happenings: readonly Happening[];
  readonly eip: readonly EipSample[];
  readonly state: readonly StateSample[];
  readonly sessions: readonly SessionSample[];
  readonly answers: readonly ClientAnswer[];
  readonly events: readonly AuditEvent[];
}

export interface Interval {
  readonly from: number;
  readonly to: number;
}

const overlaps = (a: Interval, from: number, to: number) => a.from < to && a.to > from;
const covers = (a: Interval, from: number, to: number) => a.from <= from && a.to >= to;

/** The allowances after each kind of trouble before a node counts as eligible again. */
export interface RecoveryAllowances {
  readonly nodeStartMs: number;
  readonly resumeMs: number;
  readonly storeHealMs: number;
  readonly probeHealMs: number;
}

function byTime<T extends { readonly at: number }>(xs: readonly T[]): T[] {
  return [...xs].sort((a, b) => a.at - b.at);
}

/** A stretch when a node's process did not run: `gone` (killed, exited) until a start, `paused` until a resume. */
export interface Down extends Interval {
  readonly kind: "gone" | "paused";
}

/** When a node's process did not run (`to` is Infinity when it never came back). */
export function downIntervals(h: readonly Happening[], node: string): Down[] {
  const out: Down[] = [];
  let state: "running" | "gone" | "paused" = "gone";
  let since = Number.NEGATIVE_INFINITY;
  for (const e of byTime(h)) {
    if (!("node" in e) || e.node !== node) continue;
    if (e.kind === "start" && state === "gone") {
      out.push({ from: since, to: e.at, kind: "gone" });
      state = "running";
    } else if (e.kind === "resume" && state === "paused") {
      out.push({ from: since, to: e.at, kind: "paused" });
      state = "running";
    } else if ((e.kind === "kill" || e.kind === "exit") && state !== "gone") {
      // A paused process that is killed was down since its pause.
      if (state === "running") since = e.at;
      state = "gone";
    } else if (e.kind === "pause" && state === "running") {
      since = e.at;
      state = "paused";
    }
  }
  if (state !== "running") out.push({ from: since, to: Number.POSITIVE_INFINITY, kind: state });
  return out;
}

/** From a drain command until the node's next start. */
function drainIntervals(h: readonly Happening[], node: string): Interval[] {
  const out: Interval[] = [];
  let from: number | undefined;
  for (const e of byTime(h)) {
    if (!("node" in e) || e.node !== node) continue;
    if (e.kind === "drain") from ??= e.at;
    if (e.kind === "start" && from !== undefined) {
      out.push({ from, to: e.at });
      from = undefined;
    }
  }
  if (from !== undefined) out.push({ from, to: Number.POSITIVE_INFINITY });
  return out;
}

/**
 * When a node could not be expected to lead: its process down or paused, asked
 * to drain, cut off from the store, or (alone) cut off from the checker's probes
 * (the checker marks it failed then, rightly), each with the time it takes to
 * recover after. A probe cut of every node at once is the checker's own fault:
 * it leaves the nodes eligible.
 */
export function ineligibleIntervals(
  h: readonly Happening[],
  node: string,
  a: RecoveryAllowances,
): Interval[] {
  const back = (to: number, ms: number) => (to === Number.POSITIVE_INFINITY ? to : to + ms);
  const out: Interval[] = [
    ...downIntervals(h, node).map((d) => ({
      from: d.from,
      to: back(d.to, d.kind === "gone" ? a.nodeStartMs : a.resumeMs),
    })),
    ...drainIntervals(h, node).map((d) => ({ from: d.from, to: back(d.to, a.nodeStartMs) })),
  ];
  for (const e of h) {
    if ((e.kind === "store-cut" || e.kind === "store-impaired") && e.node === node)
      out.push({ from: e.at, to: e.until + a.storeHealMs });
    if (e.kind === "probe-cut" && e.node === node && !e.all)
      out.push({ from: e.at, to: e.until + a.probeHealMs });
  }
  return out;
}

export function eligibleThroughout(
  h: readonly Happening[],
  node: string,
  from: number,
  to: number,
  a: RecoveryAllowances,
): boolean {
  return !ineligibleIntervals(h, node, a).some((i) => overlaps(i, from, to));
}

/** Whether the node's process was down (killed, exited, paused) during all of [from, to]. */
export function downThroughout(h: readonly Happening[], node: string, from: number, to: number): boolean {
  return downIntervals(h, node).some((i) => covers(i, from, to));
}

/**
 * A holder that counts as a leader at `t`: its process runs, it is not draining,
 * and its writes reach the store (an impaired path still renews the item).
 */
export function liveAt(h: readonly Happening[], node: string, t: number): boolean {
  const at = (i: Interval) => i.from <= t && t < i.to;
  if (downIntervals(h, node).some(at) || drainIntervals(h, node).some(at)) return false;
  return !h.some((e) => e.kind === "store-cut" && e.node === node && e.at <= t && t < e.until);
}

/** The mode the config named at `t`. */
export function modeAt(h: readonly Happening[], initial: Mode, t: number): Mode {
  let mode = initial;
  for (const e of byTime(h)) if (e.kind === "mode" && e.at <= t) mode = e.mode;
  return mode;
}

/** Whether the config named `mode` during all of [from, to]. */
export function modeThroughout(h: readonly Happening[], initial: Mode, mode: Mode, from: number, to: number) {
  if (modeAt(h, initial, from) !== mode) return false;
  return !h.some((e) => e.kind === "mode" && e.at > from && e.at <= to && e.mode !== mode);
}

/** When the checker could not be expected to act: its AWS path faulted, or just restarted. */
export function checkerDisturbed(
  h: readonly Happening[],
  from: number,
  to: number,
  b: { readonly checkerRecoveryMs: number; readonly checkerRestartMs: number },
): boolean {
  return h.some(
    (e) =>
      (e.kind === "checker-fault" && overlaps({ from: e.at, to: e.until + b.checkerRecoveryMs }, from, to)) ||
      (e.kind === "checker-restart" && overlaps({ from: e.at, to: e.at + b.checkerRestartMs }, from, to)),
  );
}

export function backendHealthyAt(h: readonly Happening[], backend: string, t: number): boolean {
  return !h.some((e) => e.kind === "backend-down" && e.backend === backend && e.at <= t && t < e.until);
}
