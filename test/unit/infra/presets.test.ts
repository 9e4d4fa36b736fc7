/**
 * Both presets as `cdk synth` builds them (bin/app.ts calls `buildApp`): the cdk-nag
 * AwsSolutions pack finds nothing unacknowledged, every acknowledgement says why, and
 * cfn-lint (pinned in test/harness/requirements.txt, in the emulator's virtualenv) finds
 * nothing in either template.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { App } from "aws-cdk-lib";
import * as sns from "aws-cdk-lib/aws-sns";
import { buildApp } from "../../../lib/infra/app";
import { ensureVenv } from "../../harness/emulator";

const run = promisify(execFile);

interface Report {
  pluginReports: {
    pluginName: string;
    violations: { ruleName: string }[];
    suppressedViolations?: {
      acknowledgedId: string;
      reason: string;
      violatingConstructs: { constructPath: string }[];
    }[];
  }[];
}

const PRESETS = {
  "active-passive": { mode: "active-passive" },
  "active-active": {
    mode: "active-active",
    zoneName: "example.org",
    createZone: "true",
    secondaryAddresses: "192.0.2.10",
  },
  // As `cdk deploy` synthesizes it: with the account and region of the credentials, and what the
  // CLI's lookups keep in cdk.context.json.
  "active-passive (account and region)": {
    mode: "active-passive",
    account: "111111111111",
    region: "eu-west-1",
    "availability-zones:account=111111111111:region=eu-west-1": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
    "ssm:account=111111111111:parameterName=/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64:region=eu-west-1":
      "ami-0123456789abcdef0",
  },
} as const;

/** A finding's id with a concrete account and region written as the pseudo parameters. */
const generic = (id: string) => id.replace("eu-west-1:111111111111", "<AWS::Region>:<AWS::AccountId>");

function synth(context: Record<string, unknown>) {
  const outdir = mkdtempSync(join(tmpdir(), "hafleet-presets-"));
  const app = new App({ context, outdir });
  const stack = buildApp(app);
  app.synth();
  const report = JSON.parse(readFileSync(join(outdir, "validation-report.json"), "utf8")) as Report;
  return { outdir, stack, report, template: join(outdir, `${stack.stackName}.template.json`) };
}

async function cfnLint(...templates: string[]): Promise<{ code: number; out: string }> {
  const bin = await ensureVenv();
  // W3005 (a DependsOn that a Ref already implies) is the CDK's own doing: a function
  // depends on its role explicitly, so that the role's policy exists before it runs. W3010
  // (hard-coded zones) too: with an account and region, the VPC names the zones the CLI
  // looked up in that account.
  try {
    const { stdout } = await run(join(bin, "cfn-lint"), [
      "--format",
      "parseable",
      "--ignore-checks",
      "W3005,W3010",
      "--",
      ...templates,
    ]);
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, out: e.stdout };
  }
}

// Both presets are built once, and linted in one cfn-lint run (its start-up is most of its cost).
const built = {} as Record<keyof typeof PRESETS, ReturnType<typeof synth>>;
let lint: { code: number; out: string };
beforeAll(async () => {
  for (const [name, context] of Object.entries(PRESETS)) built[name as keyof typeof PRESETS] = synth(context);
  lint = await cfnLint(...Object.values(built).map((b) => b.template));
});

test("cfn-lint finds nothing in any preset", () => {
  expect(lint).toEqual({ code: 0, out: "" });
});

describe.each(Object.keys(PRESETS) as (keyof typeof PRESETS)[])("the %s preset", (name) => {
  const context = PRESETS[name];

  test("has no cdk-nag AwsSolutions finding left unacknowledged", () => {
    const violations = built[name].report.pluginReports.flatMap((p) =>
      p.violations.map((v) => `${p.pluginName}: ${v.ruleName}`),
    );
    expect(violations).toEqual([]);
    expect(built[name].report.pluginReports.map((p) => p.pluginName)).toContain("AwsSolutions");
  });

  test("explains every acknowledged finding", () => {
    const suppressed = built[name].report.pluginReports.flatMap((p) => p.suppressedViolations ?? []);
    expect(suppressed.length).toBeGreaterThan(0);
    for (const s of suppressed) {
      expect({ id: s.acknowledgedId, reason: s.reason.length >= 40 }).toEqual({
        id: s.acknowledgedId,
        reason: true,
      });
    }
    // The reviewed list: a new acknowledgement must be added here on purpose.
    expect(
      [
        ...new Set(
          suppressed
            .filter((s) => s.acknowledgedId.startsWith("AwsSolutions::"))
            .map((s) => generic(s.acknowledgedId.replace(/^AwsSolutions::/, ""))),
        ),
      ].sort(),
    ).toEqual(
      [
        "AwsSolutions-EC23",
        "AwsSolutions-EC29",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
        "AwsSolutions-IAM5[Resource::*]",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*]",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*]",
        "AwsSolutions-L1",
        ...(context.mode === "active-active"
          ? ["AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:route53:::change/*]"]
          : []),
      ].sort(),
    );
  });
});

test("cdk-nag fails synthesis on an unacknowledged finding", () => {
  const app = new App({
    context: { "aws:cdk:bundling-stacks": [] },
    outdir: mkdtempSync(join(tmpdir(), "hafleet-nag-")),
  });
  const stack = buildApp(app);
  new sns.Topic(stack, "Unencrypted"); // AwsSolutions-SNS2 and SNS3
  expect(() => app.synth()).toThrow(/Acknowledge with .AwsSolutions::AwsSolutions-SNS3./);
});

test("cfn-lint reports a template error", async () => {
  const bad = join(mkdtempSync(join(tmpdir(), "hafleet-lint-")), "bad.json");
  writeFileSync(
    bad,
    JSON.stringify({ Resources: { Topic: { Type: "AWS::SNS::Topic", Properties: { Nope: 1 } } } }),
  );
  const { code, out } = await cfnLint(bad);
  expect(code).not.toBe(0);
  expect(out).toContain("E3002");
});
