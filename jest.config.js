// Three projects, all run by `npm test`: unit (no I/O beyond loopback),
// integration (the AWS SDK against the emulator), e2e (the local fleet as
// child processes). One emulator serves the whole run; see test/harness.
const transform = {
  "^.+\\.ts$": ["@swc/jest", { jsc: { parser: { syntax: "typescript" }, target: "es2022" } }],
  // @middy/core 6 ships ES modules only: Node 20.19+ loads them, jest's runtime needs them as CommonJS.
  "/node_modules/@middy/.+\\.js$": [
    "@swc/jest",
    { jsc: { parser: { syntax: "ecmascript" }, target: "es2022" }, module: { type: "commonjs" } },
  ],
};
const project = (name) => ({
  displayName: name,
  testEnvironment: "node",
  transform,
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
  transformIgnorePatterns: ["/node_modules/(?!@middy/)"],
  setupFilesAfterEnv: ["<rootDir>/test/harness/jest-setup.ts"],
});
module.exports = {
  globalSetup: "<rootDir>/test/harness/jest-global-setup.js",
  globalTeardown: "<rootDir>/test/harness/jest-global-teardown.js",
  projects: [project("unit"), project("integration"), project("e2e")],
  testTimeout: 60_000,
  reporters: ["default", "<rootDir>/test/harness/summary-reporter.js"],
};
