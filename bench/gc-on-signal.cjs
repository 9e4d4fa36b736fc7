// Preloaded into a process a benchmark measures (with --expose-gc): SIGUSR2
// runs a full garbage collection, so resident memory is read after it and
// not at a moment the collector happened to leave.
process.on("SIGUSR2", () => globalThis.gc?.());
