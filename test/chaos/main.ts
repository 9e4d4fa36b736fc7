/**
 * `npm run chaos -- --runs N --seed S [--json]`: N randomized fault schedules
 * on the local fleet, each a short, bounded run judged by the failover
 * invariants (`invariants.ts`). Run K's seed comes from the master seed
 * (`runSeed`); a violation prints the run's seed and its schedule, and
 * `--replay <run seed>` (or `--seed S --only K`) runs that schedule again.
 *
 * With `--json` every line is a JSON object and the last one is
 * `{"check":"chaos","runs":..,"violations":..,"seed":..}`. Exit code 0 when no
 * run broke an invariant and every run could start, 1 otherwise, 2 for bad usage.
 *
 * One emulator serves every run: `AWS_ENDPOINT_URL`'s, or an embedded moto
 * server, reset between runs.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { intFlag } from "../../lib/core/cli";
import { type Emulator, emulatorEnv, startEmulator, WORK_DIR } from "../harness/emulator";
import { CHAOS_BOUNDS } from "./bounds";
import { offset } from "./invariants";
import { freshSeed, runSeed } from "./prng";
import { CHAOS_RUN, ChaosRunner, type RunResult } from "./runner";
import { formatSchedule } from "./schedule";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";

interface Flags {
  runs: number;
  seed?: number;
  only?: number;
  replay?: number;
  durationS?: number;
  json?: boolean;
}

const seedFlag = intFlag(0, 0xffffffff);

function parse(argv: string[]): Flags {
  const cmd = new Command()
    .name("chaos")
    .description("randomized fault schedules on the local fleet, judged by the failover invariants")
    .option("--runs <n>", "how many runs", intFlag(1, 100_000), 1)
    .option("--seed <s>", "master seed (default: a fresh one, printed)", seedFlag)
    .option("--only <k>", "run only run K (1-based) of the master seed", intFlag(1, 100_000))
    .option("--replay <run-seed>", "run the schedule of this run seed once", seedFlag)
    .option(
      "--duration-s <s>",
      `seconds of faults per run (default ${CHAOS_RUN.durationMs / 1000})`,
      intFlag(3, 120),
    )
    .option("--json", "one JSON object a line; the summary last")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  cmd.parse(argv, { from: "user" });
  const f = cmd.opts<Flags>();
  if (f.replay !== undefined && (f.seed !== undefined || f.only !== undefined))
    throw new InvalidArgumentError(
      "--replay <run-seed> runs one schedule: give it without --seed and --only",
    );
  if (f.only !== undefined && f.seed === undefined)
    throw new InvalidArgumentError("--only <k> needs the --seed <s> whose run K it is");
  return f;
}

export async function main(argv: string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parse(argv);
  } catch (err) {
    // Commander has printed its own errors (and --help); the checks after parsing have not.
    if (err instanceof CommanderError && !(err instanceof InvalidArgumentError))
      return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`chaos: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  // A replay's only seed is the run's own.
  const master = flags.replay ?? flags.seed ?? freshSeed();
  const plan: { run: number; seed: number }[] =
    flags.replay !== undefined
      ? [{ run: 1, seed: flags.replay }]
      : flags.only !== undefined
        ? [{ run: flags.only, seed: runSeed(master, flags.only) }]
        : Array.from({ length: flags.runs }, (_, i) => ({ run: i + 1, seed: runSeed(master, i + 1) }));
  const json = !!flags.json;
  const out = (human: string, obj: Record<string, unknown>) =>
    process.stdout.write(`${json ? JSON.stringify(obj) : human}\n`);

  let emulator: Emulator | undefined;
  let endpoint = process.env.AWS_ENDPOINT_URL;
  if (!endpoint) {
    emulator = await startEmulator({ log: (l) => process.stderr.write(`${l}\n`) });
    endpoint = emulator.endpoint;
  }
  Object.assign(process.env, emulatorEnv(endpoint));
  const runner = new ChaosRunner({
    endpoint,
    ...(flags.durationS ? { durationMs: flags.durationS * 1000 } : {}),
  });
  await runner.setup();
  let stopping = false;
  process.once("SIGINT", () => {
    stopping = true;
    process.stderr.write("chaos: stopping after this run\n");
  });
  out(`chaos: master seed ${master}, ${plan.length} runs; bounds ${JSON.stringify(CHAOS_BOUNDS)}`, {
    check: "chaos-start",
    seed: master,
    runs: plan.length,
    bounds: CHAOS_BOUNDS,
  });
  let ran = 0;
  let violations = 0;
  let errors = 0;
  try {
    for (const { run, seed } of plan) {
      if (stopping) break;
      let result: RunResult;
      try {
        result = await runner.run(seed);
      } catch (err) {
        errors++;
        ran++;
        out(`run ${run} (seed ${seed}) could not run: ${String(err)}`, {
          check: "chaos-run",
          run,
          seed,
          error: String(err),
        });
        continue;
      } finally {
        await emulator?.reset().catch(() => {});
      }
      ran++;
      violations += result.violations.length;
      report(result, run, plan.length, out);
      if (result.violations.length > 0) {
        const file = join(WORK_DIR, "chaos", `${seed}.log`);
        await mkdir(join(WORK_DIR, "chaos"), { recursive: true });
        await writeFile(
          file,
          `${[...formatSchedule(result.schedule), ...result.applied, ...result.log].join("\n")}\n`,
        );
        // What the invariants judged, to judge again (or turn into a unit test's case).
        await writeFile(file.replace(/\.log$/, ".json"), `${JSON.stringify(result.observation)}\n`);
        out(`  the run's log and observation: ${file}, .json`, { check: "chaos-log", run, seed, file });
      }
    }
  } finally {
    await runner.close();
    await emulator?.stop();
  }
  if (errors > 0 && !json) process.stdout.write(`${errors} runs could not run\n`);
  out(`chaos: ${ran} runs, ${violations} violations, master seed ${master}`, {
    check: "chaos",
    runs: ran,
    violations,
    seed: master,
  });
  return violations > 0 || errors > 0 ? 1 : 0;
}

function report(
  r: RunResult,
  run: number,
  of: number,
  out: (human: string, obj: Record<string, unknown>) => void,
): void {
  const o = r.observation;
  const hung = r.abandoned.length > 0 ? `, ${r.abandoned.length} checker invocations hung and abandoned` : "";
  const summary = `run ${run}/${of} seed ${r.seed} ${r.schedule.mode}, ${r.schedule.steps.length} steps, ${r.samples.state} samples${hung}, ${(r.ms / 1000).toFixed(1)} s`;
  const replay = `npm run chaos -- --replay ${r.seed}`;
  if (r.violations.length === 0) {
    out(`${summary}: ok`, {
      check: "chaos-run",
      run,
      seed: r.seed,
      violations: 0,
      ms: r.ms,
      samples: r.samples,
    });
    return;
  }
  out(
    [
      `${summary}: ${r.violations.length} VIOLATIONS`,
      ...r.violations.map((v) => `  ${offset(o, v.at)} ${v.invariant}: ${v.message}`),
      "  schedule:",
      ...formatSchedule(r.schedule).map((l) => `    ${l}`),
      "  as it ran:",
      ...r.applied.map((l) => `    ${l}`),
      `  replay: ${replay}`,
    ].join("\n"),
    {
      check: "chaos-run",
      run,
      seed: r.seed,
      violations: r.violations.length,
      found: r.violations.map((v) => ({ invariant: v.invariant, at: offset(o, v.at), message: v.message })),
      schedule: formatSchedule(r.schedule),
      applied: r.applied,
      replay,
      abandoned: r.abandoned,
      ms: r.ms,
      samples: r.samples,
    },
  );
}

if (require.main === module) void main(process.argv.slice(2)).then((code) => process.exit(code));
