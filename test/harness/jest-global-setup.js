// Starts one emulator for the whole jest run and hands its endpoint to the
// workers through the environment (workers are forked after this runs).
//
// The fault proxy runs in realistic mode between every test and the emulator
// (test/harness/fault-proxy.ts, AWS_LIKE) unless HAFLEET_REALISTIC=0: the code
// under test then meets AWS as it is, not as the emulator is. The harness's
// stand-ins for the network and DNS (the fabric, the resolver) read the
// emulator itself, HAFLEET_EMULATOR_ENDPOINT. The seed is printed here and in
// the summary line; HAFLEET_REALISTIC_SEED=<seed> replays it.
require("tsx/cjs");
const { startEmulator, emulatorEnv } = require("./emulator.ts");
const { FaultProxy, realisticFromEnv } = require("./fault-proxy.ts");

module.exports = async () => {
  // The SDK's notice that future versions need Node 22 would repeat in every worker and child.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  const realistic = realisticFromEnv(process.env);
  let endpoint = process.env.HAFLEET_TEST_ENDPOINT; // an emulator the caller runs
  if (!endpoint) {
    const emulator = await startEmulator({ log: (line) => process.stderr.write(`\n${line}\n`) });
    globalThis.__HAFLEET_EMULATOR__ = emulator;
    endpoint = emulator.endpoint;
    process.env.HAFLEET_TEST_ENDPOINT = endpoint;
  }
  Object.assign(process.env, emulatorEnv(endpoint));
  process.env.HAFLEET_EMULATOR_ENDPOINT = endpoint;
  if (realistic) {
    const proxy = await new FaultProxy(endpoint, { realistic }).start();
    globalThis.__HAFLEET_REALISTIC__ = proxy;
    process.env.AWS_ENDPOINT_URL = proxy.endpoint;
    // For the summary reporter, which runs in this process.
    process.env.HAFLEET_REALISTIC_RUN_SEED = String(realistic.seed);
    process.stderr.write(
      `\nrealistic AWS mode on, seed ${realistic.seed} (replay: HAFLEET_REALISTIC_SEED=${realistic.seed}; off: HAFLEET_REALISTIC=0)\n`,
    );
  } else {
    delete process.env.HAFLEET_REALISTIC_RUN_SEED;
  }
};
