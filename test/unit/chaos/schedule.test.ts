/**
 * Chaos schedules are data made from a seed alone: the same seed gives the same
 * schedule (so a violation's seed replays it), every kind of step is drawn, and
 * the generator never plans every node down at once.
 */
import { Rng, runSeed } from "../../chaos/prng";
import { formatSchedule, generateSchedule, type Schedule, type Step } from "../../chaos/schedule";

const OPTIONS = { durationMs: 10_000, nodes: 3 };
const SEEDS = Array.from({ length: 500 }, (_, i) => runSeed(42, i + 1));

test("the same seed gives the same schedule; another seed another", () => {
  expect(generateSchedule(7, OPTIONS)).toEqual(generateSchedule(7, OPTIONS));
  const distinct = new Set(SEEDS.slice(0, 50).map((s) => JSON.stringify(generateSchedule(s, OPTIONS).steps)));
  expect(distinct.size).toBe(50);
});

test("run seeds depend on the master seed and the run's index only, and stay what they were", () => {
  expect(runSeed(1, 1)).toBe(runSeed(1, 1));
  expect(runSeed(1, 1)).not.toBe(runSeed(1, 2));
  expect(runSeed(1, 1)).not.toBe(runSeed(2, 1));
  // Seeds printed by earlier runs must replay: the derivation is sha256("master:index").
  expect(runSeed(1, 1)).toBe(3602223452);
});

test("the generator is uniform enough and stays in range", () => {
  const rng = new Rng(1);
  const ints = Array.from({ length: 2000 }, () => rng.int(1, 6));
  expect(Math.min(...ints)).toBe(1);
  expect(Math.max(...ints)).toBe(6);
  for (let v = 1; v <= 6; v++) expect(ints.filter((x) => x === v).length).toBeGreaterThan(250);
});

test("every kind of step is drawn, within the run's time", () => {
  const kinds = new Set<Step["kind"]>();
  for (const seed of SEEDS) {
    const s = generateSchedule(seed, OPTIONS);
    expect(s.steps.length).toBeGreaterThanOrEqual(1);
    for (const step of s.steps) {
      kinds.add(step.kind);
      expect(step.at).toBeGreaterThanOrEqual(300);
      expect(step.at).toBeLessThanOrEqual(OPTIONS.durationMs - 1000);
    }
    expect(s.steps.map((x) => x.at)).toEqual([...s.steps.map((x) => x.at)].sort((a, b) => a - b));
  }
  expect([...kinds].sort()).toEqual(
    [
      "aws-fault",
      "cascade",
      "checker-restart",
      "config-change",
      "drain",
      "kill",
      "mode-switch",
      "pause",
      "probe-cut",
      "restart",
      "second-checker",
    ].sort(),
  );
});

/** The most nodes a schedule takes down at once: killed or drained until a restart, paused for a while. */
function mostDown(s: Schedule): number {
  let gone = 0;
  let most = 0;
  const paused: number[] = [];
  for (const step of s.steps) {
    if (step.kind === "kill" || step.kind === "drain") gone++;
    if (step.kind === "restart") gone--;
    if (step.kind === "pause") paused.push(step.at + step.forMs);
    if (step.kind === "cascade" && step.how === "kill") gone += 2;
    if (step.kind === "cascade" && step.how === "pause")
      paused.push(step.at + step.forMs, step.at + step.thenMs + step.forMs);
    most = Math.max(most, gone + paused.filter((t) => t > step.at).length);
  }
  return most;
}

test("no schedule takes every node down at once", () => {
  for (const seed of SEEDS)
    expect(mostDown(generateSchedule(seed, OPTIONS))).toBeLessThanOrEqual(OPTIONS.nodes - 1);
});

test("a schedule prints one step a line", () => {
  const s: Schedule = {
    seed: 9,
    mode: "active-active",
    durationMs: 10_000,
    steps: [
      { at: 1200, kind: "pause", target: "holder", forMs: 2500 },
      { at: 2000, kind: "aws-fault", path: "checker", fault: "delay", calls: "ec2", ms: 3000, forMs: 4000 },
      {
        at: 3000,
        kind: "aws-fault",
        path: "node",
        target: "standby",
        fault: "reset",
        calls: "all",
        forMs: 500,
      },
      { at: 4500, kind: "probe-cut", target: "all", how: "blackhole", forMs: 6000 },
      { at: 6000, kind: "config-change", change: "dns-ttl" },
      { at: 7000, kind: "mode-switch" },
      { at: 7500, kind: "cascade", how: "kill", slowMs: 3000, thenMs: 500, forMs: 4000 },
    ],
  };
  expect(formatSchedule(s)).toEqual([
    "seed 9: active-active, 10.00s of faults, 7 steps",
    "+1.20s pause holder for 2.50s",
    "+2.00s delay 3000ms on ec2 calls of the checker's AWS path for 4.00s",
    "+3.00s reset on all calls of standby's AWS path for 0.50s",
    "+4.50s probe-cut all (blackhole) for 6.00s",
    "+6.00s config-change dns-ttl",
    "+7.00s mode-switch",
    "+7.50s cascade: kill holder, a standby's EC2 calls delayed 3000ms, then kill the new holder 0.50s after it took over",
  ]);
});
