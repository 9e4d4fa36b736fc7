import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Duration } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as events from "aws-cdk-lib/aws-events";
import * as lambda from "aws-cdk-lib/aws-lambda";
import {
  ControlPlane,
  type ControlPlaneProps,
  DEFAULT_CHECKER_ENTRY,
} from "../../../lib/infra/control-plane";
import { DnsFailover } from "../../../lib/infra/dns-failover";
import { ProxyFleet } from "../../../lib/infra/proxy-fleet";
import { actionsOf, fleetConfig, newStack, resourcesOf, statements, tablesIn } from "./support";

function build(
  props: Partial<ControlPlaneProps> = {},
  opts: { dns?: boolean; bundle?: boolean; mode?: "active-passive" | "active-active" } = {},
) {
  const stack = newStack({ bundle: opts.bundle ?? false });
  const tables = tablesIn(stack);
  const mode = opts.mode ?? "active-passive";
  const fleet = new ProxyFleet(stack, "Fleet", { fleetId: "blue", config: fleetConfig(mode), tables });
  const dns = opts.dns
    ? new DnsFailover(stack, "Dns", {
        fleetId: "blue",
        zoneName: "example.org",
        createZone: true,
        endpoints:
          mode === "active-active"
            ? fleet.nodes.map((n) => ({ id: n.instance.ref, name: n.name, address: n.elasticIp.ref }))
            : [{ id: "active", name: "active", address: fleet.publicAddresses[0]! }],
        healthCheckPort: 80,
      })
    : undefined;
  const cp = new ControlPlane(stack, "ControlPlane", {
    fleet,
    tables,
    ...(dns ? { dns } : {}),
    ...props,
  });
  return { stack, fleet, tables, cp, dns, t: Template.fromStack(stack) };
}

describe("ControlPlane", () => {
  // One synthesis for the tests that only read the default template.
  let d: ReturnType<typeof build>;
  beforeAll(() => {
    d = build({}, { bundle: true });
  });

  describe("health checker", () => {
    test("runs on Node.js 22 by default", () => {
      d.t.hasResourceProperties("AWS::Lambda::Function", { Runtime: "nodejs22.x" });
    });

    test("runs on Node.js 20 with runtime NODEJS_20_X", () => {
      build({ runtime: lambda.Runtime.NODEJS_20_X }).t.hasResourceProperties("AWS::Lambda::Function", {
        Runtime: "nodejs20.x",
      });
    });

    test("refuses other runtimes", () => {
      expect(() => build({ runtime: lambda.Runtime.NODEJS_24_X })).toThrow(
        "`runtime` must be Node.js 20 or 22 (got nodejs24.x)",
      );
    });

    test("runs in the fleet's private subnets, in its own security group", () => {
      const { stack, fleet, cp } = d;
      d.t.hasResourceProperties("AWS::Lambda::Function", {
        VpcConfig: {
          SubnetIds: fleet.vpc.privateSubnets.map((s) => stack.resolve(s.subnetId)),
          SecurityGroupIds: [stack.resolve(cp.securityGroup.securityGroupId)],
        },
      });
    });

    test("times out after 60 s with 256 MiB by default", () => {
      d.t.hasResourceProperties("AWS::Lambda::Function", { Timeout: 60, MemorySize: 256 });
    });

    test("uses timeout and memorySize when given", () => {
      build({ timeout: Duration.seconds(30), memorySize: 512 }).t.hasResourceProperties(
        "AWS::Lambda::Function",
        {
          Timeout: 30,
          MemorySize: 512,
        },
      );
    });

    test("is never retried by Lambda: the next scheduled run is the retry", () => {
      d.t.hasResourceProperties("AWS::Lambda::EventInvokeConfig", { MaximumRetryAttempts: 0 });
    });

    test("gets the fleet, its tables, admin port and addresses in its environment", () => {
      const { stack, tables, fleet } = d;
      d.t.hasResourceProperties("AWS::Lambda::Function", {
        Environment: {
          Variables: {
            HAFLEET_FLEET_ID: "blue",
            HAFLEET_MODE: "active-passive",
            HAFLEET_STATE_TABLE: stack.resolve(tables.tableNames.state),
            HAFLEET_ADMIN_PORT: "9900",
            HAFLEET_ALLOCATION_IDS: stack.resolve(fleet.elasticIps[0]!.attrAllocationId),
            HAFLEET_SHARED_ALLOCATION_ID: stack.resolve(fleet.elasticIps[0]!.attrAllocationId),
            POWERTOOLS_SERVICE_NAME: "health-checker",
            POWERTOOLS_METRICS_NAMESPACE: "hafleet",
            HAFLEET_HOSTED_ZONE_ID: Match.absent(),
            HAFLEET_NOTICE_TOPIC_ARN: Match.absent(),
          },
        },
      });
    });

    test("gets the zone and record name with dns", () => {
      const { stack, dns, t } = build({}, { dns: true });
      t.hasResourceProperties("AWS::Lambda::Function", {
        Environment: {
          Variables: Match.objectLike({
            HAFLEET_HOSTED_ZONE_ID: stack.resolve(dns!.zone.hostedZoneId),
            HAFLEET_RECORD_NAME: "blue.example.org",
          }),
        },
      });
    });

    test("gets the shared Elastic IP's allocation in active-passive, for the 'active' record", () => {
      const { stack, fleet, t } = build({}, { dns: true });
      t.hasResourceProperties("AWS::Lambda::Function", {
        Environment: {
          Variables: Match.objectLike({
            HAFLEET_SHARED_ALLOCATION_ID: stack.resolve(fleet.elasticIps[0]!.attrAllocationId),
          }),
        },
      });
    });

    test("gets no shared allocation in active-active, where every address is a node's own", () => {
      const { t } = build({}, { dns: true, mode: "active-active" });
      t.hasResourceProperties("AWS::Lambda::Function", {
        Environment: {
          Variables: Match.objectLike({
            HAFLEET_MODE: "active-active",
            HAFLEET_RECORD_NAME: "blue.example.org",
            HAFLEET_SHARED_ALLOCATION_ID: Match.absent(),
          }),
        },
      });
    });

    test("may reach the nodes' admin port", () => {
      const { stack, fleet, cp } = d;
      d.t.hasResourceProperties("AWS::EC2::SecurityGroupIngress", {
        FromPort: 9900,
        ToPort: 9900,
        GroupId: stack.resolve(fleet.securityGroup.securityGroupId),
        SourceSecurityGroupId: stack.resolve(cp.securityGroup.securityGroupId),
      });
    });

    test("bundles lambdas/health-checker/handler.ts by default", () => {
      expect(DEFAULT_CHECKER_ENTRY).toBe(
        join(__dirname, "..", "..", "..", "lambdas", "health-checker", "handler.ts"),
      );
    });

    test("the default bundle holds the checker's handler", () => {
      const { stack, cp } = d;
      const code = (cp.checker.node.defaultChild as lambda.CfnFunction).code as { s3Key: string };
      const hash = String(stack.resolve(code.s3Key)).replace(/\.zip$/, "");
      const outdir = (stack.node.root as unknown as { outdir: string }).outdir;
      const map = JSON.parse(readFileSync(join(outdir, `asset.${hash}`, "index.js.map"), "utf8")) as {
        sources: string[];
      };
      expect(map.sources.some((s) => s.endsWith("lambdas/health-checker/handler.ts"))).toBe(true);
    });

    test("bundles the AWS SDK the project tests with, not the runtime's", () => {
      const { stack, cp } = d;
      const code = (cp.checker.node.defaultChild as lambda.CfnFunction).code as { s3Key: string };
      const hash = String(stack.resolve(code.s3Key)).replace(/\.zip$/, "");
      const outdir = (stack.node.root as unknown as { outdir: string }).outdir;
      const map = JSON.parse(readFileSync(join(outdir, `asset.${hash}`, "index.js.map"), "utf8")) as {
        sources: string[];
      };
      for (const client of ["client-dynamodb", "client-ec2", "client-route-53"]) {
        expect(map.sources.some((s) => s.includes(`node_modules/@aws-sdk/${client}/`))).toBe(true);
      }
    });

    test("sets NODE_OPTIONS so that stack traces point at the TypeScript source", () => {
      d.t.hasResourceProperties("AWS::Lambda::Function", {
        Environment: { Variables: Match.objectLike({ NODE_OPTIONS: "--enable-source-maps" }) },
      });
    });

    test("reserves concurrency: overlapping runs queue on the checker lease, never pile up", () => {
      d.t.hasResourceProperties("AWS::Lambda::Function", { ReservedConcurrentExecutions: 2 });
    });

    test("refuses a checkerEntry that does not exist", () => {
      const missing = join(__dirname, "no-such-entry.ts");
      expect(() => build({ checkerEntry: missing })).toThrow(
        `\`checkerEntry\` ${missing} does not exist: the health-checker Lambda is built from it`,
      );
    });
  });

  describe("permissions", () => {
    test("the checker reads and writes its fleet's State items only, and no sessions", () => {
      const { cp, t } = d;
      const dynamo = statements(t, cp.role).filter((s) =>
        actionsOf(s).some((a) => a.startsWith("dynamodb:")),
      );
      expect(dynamo).toHaveLength(1);
      expect(dynamo[0]!.Condition?.["ForAllValues:StringEquals"]).toEqual({
        "dynamodb:LeadingKeys": ["fleet#blue"],
      });
    });

    test("the checker writes its own log group only", () => {
      const { cp, t, stack } = d;
      const logs = statements(t, cp.role).filter((s) => actionsOf(s).some((a) => a.startsWith("logs:")));
      expect(logs.flatMap(resourcesOf)).toEqual([stack.resolve(cp.checker.logGroup.logGroupArn)]);
    });

    test("the checker has a wildcard resource only for calls that allow no other", () => {
      const { cp, t } = d;
      const wild = statements(t, cp.role).filter((s) => resourcesOf(s).includes("*"));
      expect(wild.flatMap(actionsOf).sort()).toEqual(
        [
          "ec2:AssignPrivateIpAddresses",
          "ec2:CreateNetworkInterface",
          "ec2:DeleteNetworkInterface",
          "ec2:DescribeAddresses",
          "ec2:DescribeInstances",
          "ec2:DescribeNetworkInterfaces",
          "ec2:DescribeSubnets",
          "ec2:UnassignPrivateIpAddresses",
        ].sort(),
      );
    });

    test("the checker moves only the fleet's Elastic IPs", () => {
      const { cp, t } = d;
      const assoc = statements(t, cp.role).filter((s) => actionsOf(s).includes("ec2:AssociateAddress"));
      expect(assoc.map((s) => s.Condition)).toEqual([
        { StringEquals: { "aws:ResourceTag/hafleet:fleet": "blue" } },
      ]);
    });

    test("the checker has no grant it does not use: it publishes nothing and uses no key", () => {
      const { cp, t } = d;
      const unused = statements(t, cp.role)
        .flatMap(actionsOf)
        .filter((a) => a.startsWith("sns:") || a.startsWith("kms:"));
      expect(unused).toEqual([]);
    });

    test("the checker changes no DNS without dns", () => {
      const { cp, t } = d;
      expect(
        statements(t, cp.role)
          .flatMap(actionsOf)
          .filter((a) => a.startsWith("route53:")),
      ).toEqual([]);
    });

    test("the checker changes the fleet's weights with dns", () => {
      const { cp, t } = build({}, { dns: true });
      expect(
        statements(t, cp.role)
          .flatMap(actionsOf)
          .filter((a) => a.startsWith("route53:"))
          .sort(),
      ).toEqual(["route53:ChangeResourceRecordSets", "route53:GetChange", "route53:ListResourceRecordSets"]);
    });
  });

  describe("schedule", () => {
    test("runs the checker every minute by default", () => {
      const { stack, cp } = d;
      d.t.hasResourceProperties("AWS::Events::Rule", {
        ScheduleExpression: "rate(1 minute)",
        Targets: [
          Match.objectLike({
            Arn: stack.resolve(cp.checker.functionArn),
            RetryPolicy: { MaximumRetryAttempts: 0 },
          }),
        ],
      });
    });

    test("uses schedule when given", () => {
      build({ schedule: events.Schedule.rate(Duration.minutes(5)) }).t.hasResourceProperties(
        "AWS::Events::Rule",
        {
          ScheduleExpression: "rate(5 minutes)",
        },
      );
    });
  });

  describe("notices and alarms", () => {
    test("encrypts the notice topic with a new rotating key that CloudWatch may use, by default", () => {
      const { stack, t, cp } = d;
      t.hasResourceProperties("AWS::KMS::Key", {
        EnableKeyRotation: true,
        KeyPolicy: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Principal: { Service: "cloudwatch.amazonaws.com" },
              Action: ["kms:Decrypt", "kms:GenerateDataKey*"],
            }),
          ]),
        },
      });
      t.hasResourceProperties("AWS::SNS::Topic", { KmsMasterKeyId: Match.anyValue() });
      expect(stack.resolve(cp.topic.masterKey?.keyArn)).toBeDefined();
    });

    test("refuses publishing to the topic without TLS", () => {
      d.t.hasResourceProperties("AWS::SNS::TopicPolicy", {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: "Deny", Condition: { Bool: { "aws:SecureTransport": "false" } } }),
          ]),
        },
      });
    });

    test("lets CloudWatch alarms of this account publish to the topic (enforceSSL alone leaves only a Deny)", () => {
      d.t.hasResourceProperties("AWS::SNS::TopicPolicy", {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: "Allow",
              Principal: { Service: "cloudwatch.amazonaws.com" },
              Action: "sns:Publish",
              Condition: { StringEquals: { "aws:SourceAccount": { Ref: "AWS::AccountId" } } },
            }),
          ]),
        },
      });
    });

    test("subscribes no one by default", () => {
      d.t.resourceCountIs("AWS::SNS::Subscription", 0);
    });

    test("subscribes notificationEmails", () => {
      build({ notificationEmails: ["ops@example.org"] }).t.hasResourceProperties("AWS::SNS::Subscription", {
        Protocol: "email",
        Endpoint: "ops@example.org",
      });
    });

    test("alarms on any failover, the nodes' takeovers and the checker's changes, to the topic", () => {
      const { stack, cp } = d;
      const dims = [
        { Name: "fleet", Value: "blue" },
        { Name: "service", Value: "health-checker" },
      ];
      d.t.hasResourceProperties("AWS::CloudWatch::Alarm", {
        Metrics: Match.arrayWith([
          Match.objectLike({
            Expression: "FILL(takeovers, 0) + FILL(outOfDns, 0) + FILL(marked, 0) + FILL(moved, 0)",
          }),
          Match.objectLike({
            Id: "takeovers",
            MetricStat: Match.objectLike({
              Metric: {
                Namespace: "hafleet",
                MetricName: "ElasticIpTakeovers",
                Dimensions: [{ Name: "fleet", Value: "blue" }],
              },
              Stat: "Sum",
            }),
          }),
          Match.objectLike({
            Id: "outOfDns",
            MetricStat: Match.objectLike({
              Metric: { Namespace: "hafleet", MetricName: "NodesOutOfDns", Dimensions: dims },
            }),
          }),
          Match.objectLike({
            Id: "marked",
            MetricStat: Match.objectLike({
              Metric: { Namespace: "hafleet", MetricName: "NodesMarkedFailed", Dimensions: dims },
              Stat: "Sum",
              Period: 60,
            }),
          }),
          Match.objectLike({
            Id: "moved",
            MetricStat: Match.objectLike({
              Metric: { Namespace: "hafleet", MetricName: "ElasticIpsReassociated", Dimensions: dims },
            }),
          }),
        ]),
        Threshold: 1,
        ComparisonOperator: "GreaterThanOrEqualToThreshold",
        TreatMissingData: "notBreaching",
        AlarmActions: [stack.resolve(cp.topic.topicArn)],
      });
    });

    test("alarms on any checker error, failed invocation or failed run, to the topic", () => {
      const { stack, cp } = d;
      d.t.hasResourceProperties("AWS::CloudWatch::Alarm", {
        Metrics: Match.arrayWith([
          Match.objectLike({ Expression: "FILL(invocations, 0) + FILL(runs, 0)" }),
          Match.objectLike({
            Id: "invocations",
            MetricStat: Match.objectLike({
              Metric: {
                Namespace: "AWS/Lambda",
                MetricName: "Errors",
                Dimensions: [{ Name: "FunctionName", Value: stack.resolve(cp.checker.functionName) }],
              },
            }),
          }),
          Match.objectLike({
            Id: "runs",
            MetricStat: Match.objectLike({ Metric: Match.objectLike({ MetricName: "CheckerErrors" }) }),
          }),
        ]),
        Threshold: 1,
        ComparisonOperator: "GreaterThanOrEqualToThreshold",
        AlarmActions: [stack.resolve(cp.topic.topicArn)],
      });
    });

    test("alarms when the checker has not run for 5 minutes", () => {
      d.t.hasResourceProperties("AWS::CloudWatch::Alarm", {
        Namespace: "AWS/Lambda",
        MetricName: "Invocations",
        Period: 300,
        Threshold: 1,
        ComparisonOperator: "LessThanThreshold",
        TreatMissingData: "breaching",
      });
    });

    test("draws a dashboard of failovers, checker runs and table throttles", () => {
      const body = JSON.stringify(d.t.findResources("AWS::CloudWatch::Dashboard"));
      for (const title of [
        "Failovers",
        "Health checker runs and errors",
        "State table: throttled requests",
      ]) {
        expect(body).toContain(title);
      }
    });

    test("keeps the checker's logs a month, retained, by default", () => {
      const { stack, cp } = d;
      const groups = d.t.findResources("AWS::Logs::LogGroup");
      const group = groups[stack.getLogicalId(cp.checker.logGroup.node.defaultChild as never)]!;
      expect([group.Properties.RetentionInDays, group.DeletionPolicy]).toEqual([30, "Retain"]);
    });
  });
});
