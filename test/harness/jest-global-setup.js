// Starts one emulator for the whole jest run and hands its endpoint to the
// workers through the environment (workers are forked after this runs).
require("tsx/cjs");
const { startEmulator, emulatorEnv } = require("./emulator.ts");

module.exports = async () => {
  // The SDK's notice that future versions need Node 22 would repeat in every worker and child.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  if (process.env.HAFLEET_TEST_ENDPOINT) return; // an emulator the caller runs
  const emulator = await startEmulator({ log: (line) => process.stderr.write(`\n${line}\n`) });
  globalThis.__HAFLEET_EMULATOR__ = emulator;
  process.env.HAFLEET_TEST_ENDPOINT = emulator.endpoint;
  Object.assign(process.env, emulatorEnv(emulator.endpoint));
};
