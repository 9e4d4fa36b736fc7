#!/usr/bin/env node
// The CDK app: one hafleet fleet per stack, built from context (see lib/infra/app.ts).
import { App } from "aws-cdk-lib";
import { buildApp } from "../lib/infra/app";

try {
  buildApp(new App());
} catch (err) {
  // A bad context value or config field: its message names it; a stack trace would bury it.
  process.stderr.write(`hafleet: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
