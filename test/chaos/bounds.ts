/**
 * The timing a chaos run's fleet runs with, and the bounds the invariants
 * allow, derived from it once. "Beyond the bound" in an invariant means beyond
 * one of these. Each bound is what a correct fleet needs in the worst case the
 * schedule allows, plus `loadSlackMs` for a busy two-core machine.
 */
import { FAILOVER_DEFAULTS } from "../../lib/core/config";
import { DNS_CONFIRM_FIRST_MS } from "../../lib/core/failover";
import { resolveLeaseSettings } from "../../lib/core/lease";
import { AWS_LIKE } from "../harness/fault-proxy";
import { CHECKER_GAP_MS, CHECKER_INVOCATION_MS } from "../harness/local-fleet";

export interface ChaosTiming {
  /** The fleet lease (`failover.leaseMs`) and how often a waiter reads it. */
  readonly leaseMs: number;
  readonly pollMs: number;
  readonly heartbeatMs: number;
  /** The health checker: a run every `intervalMs` in invocations of `invocationMs`, `gapMs` apart. */
  readonly checker: {
    readonly intervalMs: number;
    readonly invocationMs: number;
    readonly gapMs: number;
    readonly probeTimeoutMs: number;
    /** Probe damping: failed probes in a row that make a node down, good ones that make it up. */
    readonly fall: number;
    readonly rise: number;
    readonly checkerLeaseMs: number;
  };
  /** The longest a Route 53 change stays PENDING (0 on the emulator alone). */
  readonly route53PendingMs: number;
  /** What a loaded machine adds to any chain of timers and calls. */
  readonly loadSlackMs: number;
  /** A (re)started node process until it is ready and contends. */
  readonly nodeStartMs: number;
}

const fleetLease = resolveLeaseSettings({
  name: "fleet",
  holderId: "chaos",
  leaseMs: FAILOVER_DEFAULTS.leaseMs,
});

/** The timing of every chaos run: the config's defaults, the local fleet's checker invocations. */
export const CHAOS_TIMING: ChaosTiming = {
  leaseMs: fleetLease.leaseMs,
  pollMs: fleetLease.pollMs,
  heartbeatMs: FAILOVER_DEFAULTS.heartbeatMs,
  checker: {
    intervalMs: 1000,
    invocationMs: CHECKER_INVOCATION_MS,
    gapMs: CHECKER_GAP_MS,
    probeTimeoutMs: 1000,
    fall: 2,
    rise: 2,
    checkerLeaseMs: 6000,
  },
  // The realistic mode's, which the tests run with by default (docs/architecture.md §9); on the
  // emulator alone the bound is only looser.
  route53PendingMs: AWS_LIKE.route53PendingMs[1],
  loadSlackMs: 2500,
  nodeStartMs: 5000,
};

/**
 * From a batch until the checker has confirmed it INSYNC: it asks
 * `DNS_CONFIRM_FIRST_MS` after the batch, then at doubling gaps, so the
 * first ask at or after `pendingMs`, plus a run's interval for the run at
 * which the ask is due.
 */
export function confirmMs(pendingMs: number, intervalMs: number): number {
  let at = DNS_CONFIRM_FIRST_MS;
  for (let gap = DNS_CONFIRM_FIRST_MS * 2; at < pendingMs; gap *= 2) at += gap;
  return at + intervalMs;
}

export interface ChaosBounds {
  /** A fleet without a live leader while a node is eligible: a waiter takes over within this. */
  readonly leaderlessMs: number;
  /** A node's weight in Route 53 (active-active) after it died: 0 within this. */
  readonly deadWeightMs: number;
  /** Route 53 matches the latest plan within this after the checker's path healed. */
  readonly convergeMs: number;
  /** After a checker-side fault heals, the checker acts again within this. */
  readonly checkerRecoveryMs: number;
  /** After a checker restart, its probe damping is back within this. */
  readonly checkerRestartMs: number;
  /** A node is eligible again this long after it was resumed, its store path healed, its probes answered. */
  readonly resumeMs: number;
  readonly storeHealMs: number;
  readonly probeHealMs: number;
  readonly nodeStartMs: number;
}

export function chaosBounds(t: ChaosTiming): ChaosBounds {
  const c = t.checker;
  // Probes alone judge a dead node (a gray failure or failed): `fall` failed probes in a
  // row, the run in progress when it died first; each probe may wait its whole timeout.
  const detectMs = (c.fall + 1) * c.intervalMs + c.probeTimeoutMs;
  // A new invocation (fresh memory) starts the damping again after its gap.
  const restartMs = c.gapMs + c.fall * c.intervalMs + c.probeTimeoutMs;
  // A checker whose release was lost to a fault: the next invocation waits its lease out.
  const checkerRecoveryMs = c.checkerLeaseMs + c.gapMs;
  return {
    // The waiter sees the last rvn, waits leaseMs on its own clock, then takes it at its next poll.
    leaderlessMs: t.leaseMs + t.pollMs + t.loadSlackMs,
    deadWeightMs: detectMs + restartMs + t.loadSlackMs,
    // The plan counts once it is recorded in sync: its batch's propagation confirmed.
    convergeMs:
      checkerRecoveryMs + 2 * c.intervalMs + confirmMs(t.route53PendingMs, c.intervalMs) + t.loadSlackMs,
    checkerRecoveryMs,
    checkerRestartMs: restartMs,
    resumeMs: t.heartbeatMs,
    storeHealMs: t.heartbeatMs,
    // The checker clears a mark after `rise` good probes; the agent sees it at its next beat.
    probeHealMs: c.rise * c.intervalMs + c.probeTimeoutMs + t.heartbeatMs,
    nodeStartMs: t.nodeStartMs,
  };
}

export const CHAOS_BOUNDS: ChaosBounds = chaosBounds(CHAOS_TIMING);
