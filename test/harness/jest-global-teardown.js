module.exports = async () => {
  const proxy = globalThis.__HAFLEET_REALISTIC__;
  if (proxy) {
    const s = proxy.realismStats;
    process.stderr.write(
      `\nrealistic AWS mode, seed ${proxy.seed}: ${s.delayedAssociations} associations delayed, ` +
        `${s.staleAnswers} stale DescribeAddresses answers, ${s.pendingAnswers} PENDING answers, ` +
        `${s.throttled} Route 53 calls throttled, ${s.lateFailures.length} late failures` +
        `${s.lateFailures.map((f) => `\n  ${f}`).join("")}\n`,
    );
    await proxy.close();
  }
  const emulator = globalThis.__HAFLEET_EMULATOR__;
  if (emulator) await emulator.stop();
};
