/**
 * The differential fuzz of the proxy's framing against node's parser:
 * `npm run fuzz:proxy -- --cases N --seed S [--parallel P]`.
 *
 * Prints each mismatch (the request bytes that reproduce it, as a JSON
 * string, with what the proxy's parse expected and what the backend saw),
 * then one JSON line: {"check":"fuzz-proxy","cases":..,"accepted":..,
 * "refused":..,"mismatches":..,"seed":..}. Exits 1 on any mismatch, 2 on bad
 * flags. The same seed gives the same requests (`generate` in
 * differential.ts), so `--seed S` reproduces a run.
 */
import { runDifferential } from "./differential";

function parseFlags(argv: string[]): { cases: number; seed: number; parallel: number } {
  const flags = { cases: 100_000, seed: 1, parallel: 16 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = Number(argv[++i]);
    const key =
      a === "--cases" ? "cases" : a === "--seed" ? "seed" : a === "--parallel" ? "parallel" : undefined;
    if (key === undefined) throw new Error(`unknown flag ${a}; flags: --cases <n> --seed <n> --parallel <n>`);
    if (!Number.isInteger(v) || v < (key === "seed" ? 0 : 1)) throw new Error(`${a} needs a whole number`);
    flags[key] = v;
  }
  return flags;
}

async function main(): Promise<number> {
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const { report, mismatches } = await runDifferential({
    cases: flags.cases,
    seed: flags.seed,
    parallel: flags.parallel,
    keepMismatches: 50,
  });
  for (const m of mismatches) process.stdout.write(`${JSON.stringify({ mismatch: m })}\n`);
  const { check, cases, accepted, refused, mismatches: count, seed } = report;
  process.stdout.write(`${JSON.stringify({ check, cases, accepted, refused, mismatches: count, seed })}\n`);
  return count > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
