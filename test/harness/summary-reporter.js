// Prints jest's totals as one plain line, "tests: N passed, N failed, N skipped",
// so that any reader of the run's output finds the outcome without parsing jest's
// summary; then the realistic mode's seed and how to replay it (or that it was off).
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const seed = process.env.HAFLEET_REALISTIC_RUN_SEED;
    const realistic = seed
      ? `realistic AWS mode seed ${seed} (replay: HAFLEET_REALISTIC_SEED=${seed})`
      : "realistic AWS mode off";
    const line = `tests: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${results.numPendingTests} skipped; ${realistic}`;
    process.stdout.write(`\n${line}\n`);
  }
}
module.exports = SummaryReporter;
