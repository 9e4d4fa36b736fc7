module.exports = async () => {
  const emulator = globalThis.__HAFLEET_EMULATOR__;
  if (emulator) await emulator.stop();
};
