/**
 * Lease takeover and renewal latency against the emulator, default settings
 * (leaseMs 2000). Three contenders as real processes; the holder is killed
 * with SIGKILL `--trials` times (at least 20), each at a random moment of its
 * renewal cycle; takeover is the time from the kill to another contender's
 * acquisition, as printed by the contenders.
 *
 *   npm run bench:lease -- --json [--trials 20]
 *
 * One JSON object per line; the last line is the summary:
 *   {"bench":"lease","trials":N,"takeover_ms_p50":..,"takeover_ms_p99":..,
 *    "renew_ms_p50":..,"renew_ms_p99":..,"double_holders":0}
 * Without --json, a readable summary goes to stderr as well.
 */
import { parseArgs } from "node:util";
import { DEFAULT_LEASE_MS } from "../lib/core/lease";
import { freshTables, uniqueId } from "../test/harness/aws";
import { emulatorEnv, startEmulator } from "../test/harness/emulator";
import {
  ContenderFleet,
  checkLeaseInvariants,
  type DisruptionRecord,
} from "../test/harness/lease-contenders";
import { emit, percentile, round } from "./stats";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { json: { type: "boolean", default: false }, trials: { type: "string", default: "20" } },
    strict: true,
  });
  const trials = Number(values.trials);
  if (!Number.isInteger(trials) || trials < 1)
    throw new Error(`--trials must be a whole number of at least 1, got '${values.trials}'`);
  const say = (s: string) => {
    if (!values.json) process.stderr.write(`${s}\n`);
  };

  say("starting the emulator...");
  const emulator = await startEmulator({ log: say });
  Object.assign(process.env, emulatorEnv(emulator.endpoint), {
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
  });
  const fleet = new ContenderFleet(uniqueId("bench"), await freshTables(), emulator.endpoint);
  const disruptions: DisruptionRecord[] = [];
  const takeovers: number[] = [];
  try {
    for (let i = 0; i < 3; i++) await fleet.add();
    for (let trial = 1; trial <= trials; trial++) {
      // Let the fleet settle: a holder that has renewed at least twice.
      let victim: string | undefined;
      for (let i = 0; i < 200; i++) {
        victim = fleet.holder();
        const renewals = fleet.events.filter((e) => e.ev === "renewed" && e.child === victim);
        if (victim && renewals.length >= 2) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      if (!victim) throw new Error("no contender acquired the lease");
      // A real holder dies at any moment of its renewal cycle: kill at a random one.
      await new Promise((r) => setTimeout(r, Math.random() * 1000));
      const at = Date.now();
      fleet.signal(victim, "SIGKILL");
      disruptions.push({ kind: "kill", at, victim });
      const successor = await fleet.nextAcquisition(at, victim, 15_000);
      if (!successor) throw new Error(`trial ${trial}: nobody took over within 15 s`);
      const ms = successor.t - at;
      takeovers.push(ms);
      emit({
        bench: "lease",
        trial,
        takeover_ms: ms,
        from: victim,
        to: successor.child,
        token: successor.token,
      });
      await fleet.add();
    }
    await fleet.stopAll();
  } finally {
    await fleet.stopAll();
    await emulator.stop();
  }
  const renewals = fleet.events
    .filter((e) => e.ev === "renewed" && e.latencyMs !== undefined)
    .map((e) => e.latencyMs!);
  const report = checkLeaseInvariants(fleet.events, disruptions);
  for (const f of report.failures) say(`INVARIANT: ${f}`);
  const summary = {
    bench: "lease",
    trials,
    takeover_ms_p50: round(percentile(takeovers, 50)),
    takeover_ms_p99: round(percentile(takeovers, 99)),
    renew_ms_p50: round(percentile(renewals, 50), 2),
    renew_ms_p99: round(percentile(renewals, 99), 2),
    double_holders: report.doubleHolders,
  };
  say(
    `lease ${DEFAULT_LEASE_MS} ms: takeover p50 ${summary.takeover_ms_p50} ms, p99 ${summary.takeover_ms_p99} ms over ${trials} kills; ` +
      `renewal p50 ${summary.renew_ms_p50} ms, p99 ${summary.renew_ms_p99} ms over ${renewals.length}; double holders ${report.doubleHolders}`,
  );
  emit(summary);
  return report.failures.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:lease: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
