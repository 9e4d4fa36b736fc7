/**
 * Shared pieces of the infra tests: a fresh app and stack per test (the CDK's own
 * validation plugin is off: cfn-lint checks every template in presets.test.ts) and the
 * fleet configs. The tests bundle the real proxy and health checker (the constructs'
 * defaults).
 */
import { App, Stack } from "aws-cdk-lib";
import type { Template } from "aws-cdk-lib/assertions";
import type * as iam from "aws-cdk-lib/aws-iam";
import { type FleetConfig, type FleetConfigInput, parseFleetConfig } from "../../../lib/core/config";
import { StateTables } from "../../../lib/infra/state-tables";

/**
 * A fresh app and stack. `bundle: false` skips asset bundling (the CDK's own switch, the one
 * `cdk synth --exclusively` uses): for tests about something other than the bundles, since
 * bundling the real health checker takes over a second each time.
 */
export function newStack(options: { bundle?: boolean } = {}): Stack {
  const app = new App({
    builtinCloudFormationValidation: false,
    ...(options.bundle === false ? { context: { "aws:cdk:bundling-stacks": [] } } : {}),
  });
  return new Stack(app, "Test");
}

export function fleetConfig(
  mode: "active-passive" | "active-active" = "active-passive",
  extra: Partial<FleetConfigInput> = {},
): FleetConfig {
  return parseFleetConfig({
    listeners: [
      { name: "web", protocol: "http", port: 80, pool: "app" },
      { name: "db", protocol: "tcp", port: 5432, pool: "app" },
    ],
    pools: { app: { backends: [{ host: "10.0.1.10", port: 8080 }] } },
    failover: { mode },
    ...extra,
  });
}

export function tablesIn(stack: Stack): StateTables {
  return new StateTables(stack, "Tables");
}

/** Every IAM policy statement of a template, or of the policies attached to `role`, flattened. */
export function statements(template: Template, role?: iam.IRole): Statement[] {
  const policies = template.findResources("AWS::IAM::Policy") as Record<
    string,
    { Properties: { PolicyDocument: { Statement: Statement[] }; Roles?: unknown[] } }
  >;
  const roleRef = role ? JSON.stringify(Stack.of(role).resolve(role.roleName)) : undefined;
  return Object.values(policies)
    .filter((p) => !roleRef || (p.Properties.Roles ?? []).some((r) => JSON.stringify(r) === roleRef))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
}

export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, Record<string, unknown>>;
}

export const actionsOf = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);
export const resourcesOf = (s: Statement): unknown[] =>
  Array.isArray(s.Resource) ? s.Resource : [s.Resource];
