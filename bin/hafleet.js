#!/usr/bin/env node
// `npx hafleet ...` in a checkout: the CLI is TypeScript, run through tsx (a dependency of the
// checkout) without a build step.
require("tsx/cjs");
require("./hafleet.ts").main();
