/**
 * Fault schedules as data: a run's schedule is a list of timed steps made from
 * its seed alone (`generateSchedule`), printed one step a line
 * (`formatSchedule`) so that a violation shows what reproduces it. Targets such
 * as `holder` are resolved when the step runs, since which node holds the
 * lease then is the fleet's doing, not the schedule's.
 *
 * The generator keeps at least one node up at all times: a fleet with every
 * node down shows nothing about failover.
 */
import type { FleetConfig } from "../../lib/core/config";
import type { Mode } from "./observation";
import { Rng } from "./prng";

/** Which node a step hits, decided when it runs. */
export type Target = "holder" | "standby" | "any";

/** What the fault proxy does to the matching calls. */
export type FaultKind = "reset" | "hang" | "drop-answers" | "delay" | "throttle" | "server-error";
/** Which calls: every call, or one service's. */
export type Calls = "all" | "dynamodb" | "ec2" | "route53";

export type Step =
  | { readonly at: number; readonly kind: "kill"; readonly target: Target }
  | { readonly at: number; readonly kind: "pause"; readonly target: Target; readonly forMs: number }
  /** Starts a node that is down (killed, or drained and gone) again. */
  | { readonly at: number; readonly kind: "restart" }
  | {
      readonly at: number;
      readonly kind: "aws-fault";
      /** A node's path to AWS, every node's at once, or the checker's. */
      readonly path: "node" | "fleet" | "checker";
      readonly target?: Target;
      readonly fault: FaultKind;
      readonly calls: Calls;
      /** The added delay, for `delay`. */
      readonly ms?: number;
      readonly forMs: number;
    }
  /** The checker cannot reach the nodes' admin ports (one node's, or all). */
  | {
      readonly at: number;
      readonly kind: "probe-cut";
      readonly target: Target | "all";
      readonly how: "refuse" | "blackhole";
      readonly forMs: number;
    }
  /**
   * Successive failovers: the holder fails, and `thenMs` after another node
   * took over, that one fails too. With `slowMs`, one standby's EC2 calls are
   * delayed from the start: when it is the one that takes over, it dies with
   * its AssociateAddress still on the way.
   */
  | {
      readonly at: number;
      readonly kind: "cascade";
      readonly how: "kill" | "pause";
      readonly slowMs: number;
      readonly thenMs: number;
      /** How long each pause lasts, for `pause`. */
      readonly forMs: number;
    }
  | { readonly at: number; readonly kind: "checker-restart" }
  /** Another checker invocation overlapping the running ones. */
  | { readonly at: number; readonly kind: "second-checker"; readonly forMs: number }
  | { readonly at: number; readonly kind: "drain"; readonly target: Target }
  | { readonly at: number; readonly kind: "config-change"; readonly change: ConfigChange }
  | { readonly at: number; readonly kind: "mode-switch" };

export interface Schedule {
  readonly seed: number;
  /** The fleet's `failover.mode` at start. */
  readonly mode: Mode;
  readonly durationMs: number;
  readonly steps: readonly Step[];
}

/** Config changes an operator makes while the fleet runs, each undoing itself when applied twice. */
export const CONFIG_CHANGES = {
  "idle-timeout": (c) => ({
    ...c,
    timeouts: { ...c.timeouts, idleMs: c.timeouts.idleMs === 60_000 ? 30_000 : 60_000 },
  }),
  "dns-ttl": (c) => ({ ...c, dns: { ...c.dns, ttlS: c.dns.ttlS === 2 ? 3 : 2 } }),
  "dns-ramp": (c) => ({ ...c, dns: { ...c.dns, rampRuns: c.dns.rampRuns === 4 ? 2 : 4 } }),
  "health-interval": (c) => ({
    ...c,
    pools: Object.fromEntries(
      Object.entries(c.pools).map(([name, p]) => [
        name,
        {
          ...p,
          healthCheck: { ...p.healthCheck, intervalMs: p.healthCheck.intervalMs === 1000 ? 1500 : 1000 },
        },
      ]),
    ),
  }),
} as const satisfies Record<string, (c: FleetConfig) => FleetConfig>;
export type ConfigChange = keyof typeof CONFIG_CHANGES;

export interface ScheduleOptions {
  readonly durationMs: number;
  readonly nodes: number;
}

type Maker = (rng: Rng, at: number) => Step;
const target = (rng: Rng): Target =>
  rng.weighted([
    ["holder", 3],
    ["standby", 2],
    ["any", 1],
  ] as const);

/** The kinds of step, how often each is drawn, and how its parameters are drawn. */
const MAKERS: readonly (readonly [Step["kind"], number, Maker])[] = [
  ["kill", 3, (rng, at) => ({ at, kind: "kill", target: target(rng) })],
  ["pause", 4, (rng, at) => ({ at, kind: "pause", target: target(rng), forMs: rng.ms(300, 5000) })],
  ["restart", 2, (_, at) => ({ at, kind: "restart" })],
  [
    "aws-fault",
    6,
    (rng, at) => {
      const path = rng.weighted([
        ["node", 4],
        ["fleet", 1],
        ["checker", 3],
      ] as const);
      const fault = rng.weighted([
        ["reset", 2],
        ["hang", 1],
        ["drop-answers", 2],
        ["delay", 4],
        ["throttle", 1],
        ["server-error", 1],
      ] as const);
      // Throttling and 500s are answered in DynamoDB's wire format.
      const calls: Calls =
        fault === "throttle" || fault === "server-error"
          ? "dynamodb"
          : rng.weighted<Calls>(
              path === "checker"
                ? [
                    ["all", 2],
                    ["dynamodb", 1],
                    ["ec2", 2],
                    ["route53", 1],
                  ]
                : [
                    ["all", 2],
                    ["dynamodb", 2],
                    ["ec2", 2],
                  ],
            );
      return {
        at,
        kind: "aws-fault",
        path,
        ...(path === "node" ? { target: target(rng) } : {}),
        fault,
        calls,
        ...(fault === "delay" ? { ms: rng.ms(200, 4000) } : {}),
        forMs: rng.ms(500, 5000),
      };
    },
  ],
  [
    "probe-cut",
    2,
    (rng, at) => ({
      at,
      kind: "probe-cut",
      target: rng.weighted<Target | "all">([
        ["all", 2],
        ["holder", 1],
        ["standby", 1],
      ]),
      how: rng.pick(["refuse", "blackhole"] as const),
      forMs: rng.ms(2000, 8000),
    }),
  ],
  [
    "cascade",
    2,
    (rng, at) => ({
      at,
      kind: "cascade",
      how: rng.pick(["kill", "pause"] as const),
      slowMs: rng.weighted([
        [0, 1],
        [rng.ms(2500, 4500), 2],
      ] as const),
      thenMs: rng.ms(100, 1000),
      forMs: rng.ms(3000, 6000),
    }),
  ],
  ["checker-restart", 2, (_, at) => ({ at, kind: "checker-restart" })],
  ["second-checker", 1.5, (rng, at) => ({ at, kind: "second-checker", forMs: rng.ms(2000, 8000) })],
  ["drain", 1.5, (rng, at) => ({ at, kind: "drain", target: target(rng) })],
  [
    "config-change",
    1,
    (rng, at) => ({
      at,
      kind: "config-change",
      change: rng.pick(Object.keys(CONFIG_CHANGES) as ConfigChange[]),
    }),
  ],
  ["mode-switch", 2, (_, at) => ({ at, kind: "mode-switch" })],
];

/** The schedule of the run with this seed. */
export function generateSchedule(seed: number, o: ScheduleOptions): Schedule {
  const rng = new Rng(seed);
  const mode = rng.pick(["active-passive", "active-active"] as const);
  const count = rng.int(3, 7);
  const times = Array.from({ length: count }, () => rng.ms(300, o.durationMs - 1000)).sort((a, b) => a - b);
  const steps: Step[] = [];
  // Nodes down for good (killed, drained) and paused until a time: at least one stays up.
  let gone = 0;
  const pausedUntil: number[] = [];
  for (const at of times) {
    const down = gone + pausedUntil.filter((t) => t > at).length;
    for (let attempt = 0; attempt < 10; attempt++) {
      const [kind, , make] = rng.weighted(MAKERS.map((m) => [m, m[1]] as const));
      const takes = kind === "cascade" ? 2 : kind === "kill" || kind === "pause" || kind === "drain" ? 1 : 0;
      if (down + takes > o.nodes - 1) continue;
      if (kind === "restart" && gone === 0) continue;
      const step = make(rng, at);
      if (step.kind === "kill" || step.kind === "drain") gone++;
      if (step.kind === "restart") gone--;
      if (step.kind === "pause") pausedUntil.push(at + step.forMs);
      if (step.kind === "cascade" && step.how === "kill") gone += 2;
      if (step.kind === "cascade" && step.how === "pause")
        pausedUntil.push(at + step.forMs, at + step.thenMs + step.forMs);
      steps.push(step);
      break;
    }
  }
  return { seed, mode, durationMs: o.durationMs, steps };
}

const secs = (ms: number) => `${(ms / 1000).toFixed(2)}s`;

/** One step as a line: `+1.23s pause holder for 2.40s`. */
export function formatStep(s: Step): string {
  const at = `+${secs(s.at)}`;
  switch (s.kind) {
    case "kill":
    case "drain":
      return `${at} ${s.kind} ${s.target}`;
    case "pause":
      return `${at} pause ${s.target} for ${secs(s.forMs)}`;
    case "restart":
    case "checker-restart":
    case "mode-switch":
      return `${at} ${s.kind}`;
    case "aws-fault": {
      const who = s.path === "node" ? `${s.target}'s` : s.path === "fleet" ? "every node's" : "the checker's";
      const what = s.fault === "delay" ? `delay ${s.ms}ms` : s.fault;
      return `${at} ${what} on ${s.calls} calls of ${who} AWS path for ${secs(s.forMs)}`;
    }
    case "probe-cut":
      return `${at} probe-cut ${s.target} (${s.how}) for ${secs(s.forMs)}`;
    case "second-checker":
      return `${at} second-checker for ${secs(s.forMs)}`;
    case "cascade": {
      const fail = s.how === "kill" ? "kill" : `pause (${secs(s.forMs)})`;
      const slow = s.slowMs > 0 ? `, a standby's EC2 calls delayed ${s.slowMs}ms,` : "";
      return `${at} cascade: ${fail} holder${slow} then ${fail} the new holder ${secs(s.thenMs)} after it took over`;
    }
    case "config-change":
      return `${at} config-change ${s.change}`;
  }
}

export function formatSchedule(s: Schedule): string[] {
  return [
    `seed ${s.seed}: ${s.mode}, ${secs(s.durationMs)} of faults, ${s.steps.length} steps`,
    ...s.steps.map(formatStep),
  ];
}
