/**
 * The serverless control plane of one fleet: the health-checker Lambda (built from
 * `lambdas/health-checker/handler.ts` with esbuild, locally, no Docker) in the
 * fleet's VPC so that it reaches the nodes' admin ports, the schedule that runs
 * it, the SNS topic for failover notices, alarms and a dashboard.
 *
 * The alarms read what the checker publishes with Powertools Metrics (namespace
 * `hafleet`, dimensions `service` = `health-checker` and `fleet`): the failover
 * alarm counts `NodesMarkedFailed` and `ElasticIpsReassociated`, the error alarm
 * `CheckerErrors` (a run that failed inside a healthy invocation) together with
 * Lambda's own `Errors`; the alarms publish to the topic.
 * With `dns`, the checker also manages the weights of the fleet's weighted set
 * (`HAFLEET_HOSTED_ZONE_ID`, `HAFLEET_RECORD_NAME`), which in active-passive
 * points at the shared Elastic IP, `HAFLEET_SHARED_ALLOCATION_ID`.
 */

import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { Aws, Duration, RemovalPolicy, Validations } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as actions from "aws-cdk-lib/aws-cloudwatch-actions";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as events from "aws-cdk-lib/aws-events";
import * as targets from "aws-cdk-lib/aws-events-targets";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import * as sns from "aws-cdk-lib/aws-sns";
import * as subscriptions from "aws-cdk-lib/aws-sns-subscriptions";
import { Construct } from "constructs";
import type { DnsFailover } from "./dns-failover";
import { METRICS_NAMESPACE, type ProxyFleet } from "./proxy-fleet";
import type { StateTables } from "./state-tables";

const REPO_ROOT = resolve(__dirname, "..", "..");
/** The health checker's handler, bundled into the Lambda. */
export const DEFAULT_CHECKER_ENTRY = join(REPO_ROOT, "lambdas", "health-checker", "handler.ts");
export { METRICS_NAMESPACE };
/** The `service` dimension Powertools adds to the checker's metrics. */
export const CHECKER_SERVICE = "health-checker";

export interface ControlPlaneProps {
  /** The fleet to watch: its VPC, its nodes' admin port, its Elastic IPs. */
  readonly fleet: ProxyFleet;
  /** The state store; the checker gets its fleet's `State` items only. */
  readonly tables: StateTables;
  /**
   * The fleet's weighted records, whose weights the checker moves.
   * @default none: the checker manages Elastic IPs only (active-passive without DNS)
   */
  readonly dns?: DnsFailover;
  /**
   * Entry point of the health checker (exports `handler`), bundled with esbuild without Docker.
   * @default `lambdas/health-checker/handler.ts` of this repository
   */
  readonly checkerEntry?: string;
  /**
   * Lambda runtime: Node.js 20 or 22.
   * @default Node.js 22
   */
  readonly runtime?: lambda.Runtime;
  /**
   * How often an invocation starts. One invocation loops (every few seconds) until shortly before
   * `timeout`, so with the defaults one run follows another; overlapping runs are serialized by the
   * checker lease.
   * @default every minute
   */
  readonly schedule?: events.Schedule;
  /**
   * Lambda timeout; the checker stops its loop a little before it.
   * @default 60 seconds
   */
  readonly timeout?: Duration;
  /**
   * Lambda memory, which also sets its CPU share.
   * @default 256 MiB
   */
  readonly memorySize?: number;
  /**
   * Concurrent executions reserved for the checker (and its cap); 0 reserves none. An account
   * whose Lambda concurrency limit is still the new-account 10 cannot reserve any (Lambda keeps
   * 10 unreserved): set 0 there.
   * @default 2 (one run, and the next one starting as it ends)
   */
  readonly reservedConcurrency?: number;
  /**
   * E-mail addresses subscribed to the notice topic (each must confirm by mail).
   * @default none
   */
  readonly notificationEmails?: string[];
  /**
   * Key that encrypts the notice topic. CloudWatch alarms can only publish to a topic whose key
   * lets `cloudwatch.amazonaws.com` use it, which the AWS-managed `aws/sns` key never does.
   * @default a new customer-managed key with rotation, usable by CloudWatch for this topic
   */
  readonly topicKey?: kms.IKey;
  /**
   * How long the checker's logs stay in CloudWatch.
   * @default one month
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the log group and the topic key when they leave the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

export class ControlPlane extends Construct {
  readonly checker: nodejs.NodejsFunction;
  readonly role: iam.Role;
  /** The checker's security group: the one source the nodes' admin port accepts. */
  readonly securityGroup: ec2.SecurityGroup;
  readonly schedule: events.Rule;
  readonly topic: sns.Topic;
  readonly failoverAlarm: cloudwatch.Alarm;
  readonly checkerErrorsAlarm: cloudwatch.Alarm;
  readonly checkerStoppedAlarm: cloudwatch.Alarm;
  /** One per node: its EC2 status checks fail. */
  readonly statusCheckAlarms: cloudwatch.Alarm[];
  readonly dashboard: cloudwatch.Dashboard;
  private readonly fleet: ProxyFleet;

  constructor(scope: Construct, id: string, props: ControlPlaneProps) {
    super(scope, id);
    const { fleet, tables, dns } = props;
    this.fleet = fleet;
    const entry = props.checkerEntry ?? DEFAULT_CHECKER_ENTRY;
    if (!existsSync(entry)) {
      throw new Error(`\`checkerEntry\` ${entry} does not exist: the health-checker Lambda is built from it`);
    }
    const runtime = props.runtime ?? lambda.Runtime.NODEJS_22_X;
    if (runtime !== lambda.Runtime.NODEJS_20_X && runtime !== lambda.Runtime.NODEJS_22_X) {
      throw new Error(`\`runtime\` must be Node.js 20 or 22 (got ${runtime.name})`);
    }
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const reserved = props.reservedConcurrency ?? 2;
    if (!Number.isInteger(reserved) || reserved < 0 || reserved > 10) {
      throw new Error(`\`reservedConcurrency\` must be an integer from 0 to 10 (got ${reserved})`);
    }

    const topicKey =
      props.topicKey ??
      new kms.Key(this, "TopicKey", {
        description: `hafleet ${this.fleetId}: failover notices`,
        enableKeyRotation: true,
        removalPolicy,
      });
    if (!props.topicKey) {
      topicKey.addToResourcePolicy(
        new iam.PolicyStatement({
          principals: [new iam.ServicePrincipal("cloudwatch.amazonaws.com")],
          actions: ["kms:Decrypt", "kms:GenerateDataKey*"],
          resources: ["*"], // in a key policy, "*" is this key
        }),
      );
    }
    this.topic = new sns.Topic(this, "Notices", {
      displayName: `hafleet ${this.fleetId} failover notices`,
      masterKey: topicKey,
      enforceSSL: true,
    });
    // enforceSSL leaves a policy with a Deny only: without this Allow, no alarm could publish.
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal("cloudwatch.amazonaws.com")],
        actions: ["sns:Publish"],
        resources: [this.topic.topicArn],
        conditions: { StringEquals: { "aws:SourceAccount": Aws.ACCOUNT_ID } },
      }),
    );
    for (const email of props.notificationEmails ?? []) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(email));
    }

    const logGroup = new logs.LogGroup(this, "CheckerLogs", {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy,
    });
    this.role = new iam.Role(this, "CheckerRole", {
      assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      description: `hafleet ${this.fleetId} health checker`,
    });
    // What AWSLambdaBasicExecutionRole and AWSLambdaVPCAccessExecutionRole would give, narrowed:
    // logs to this function's group only; the network-interface calls Lambda makes to join the
    // VPC, which IAM cannot narrow to a resource.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ["logs:CreateLogStream", "logs:PutLogEvents"],
        resources: [logGroup.logGroupArn],
      }),
    );
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          "ec2:CreateNetworkInterface",
          "ec2:DescribeNetworkInterfaces",
          "ec2:DescribeSubnets",
          "ec2:DeleteNetworkInterface",
          "ec2:AssignPrivateIpAddresses",
          "ec2:UnassignPrivateIpAddresses",
        ],
        resources: ["*"],
      }),
    );

    this.securityGroup = new ec2.SecurityGroup(this, "CheckerSecurityGroup", {
      vpc: fleet.vpc,
      description: `hafleet ${this.fleetId} health checker: probes admin ports, calls AWS APIs`,
      allowAllOutbound: true,
    });

    const environment: Record<string, string> = {
      HAFLEET_FLEET_ID: this.fleetId,
      HAFLEET_MODE: fleet.mode,
      HAFLEET_STATE_TABLE: tables.tableNames.state,
      HAFLEET_ADMIN_PORT: String(fleet.adminPort),
      HAFLEET_ALLOCATION_IDS: fleet.elasticIps.map((e) => e.attrAllocationId).join(","),
      // Stack traces of the bundled code name the TypeScript source.
      NODE_OPTIONS: "--enable-source-maps",
      POWERTOOLS_SERVICE_NAME: CHECKER_SERVICE,
      POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
    };
    if (dns) {
      environment.HAFLEET_HOSTED_ZONE_ID = dns.zone.hostedZoneId;
      environment.HAFLEET_RECORD_NAME = dns.recordName;
    }
    // The shared address, whose weighted record (`active`) serves in active-passive: the checker
    // reads its public IP with ec2:DescribeAddresses (granted with AssociateAddress below). In
    // active-active every address is a node's own and there is none.
    if (fleet.mode === "active-passive") {
      environment.HAFLEET_SHARED_ALLOCATION_ID = fleet.elasticIps[0]!.attrAllocationId;
    }
    this.checker = new nodejs.NodejsFunction(this, "HealthChecker", {
      entry,
      handler: "handler",
      runtime,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize ?? 256,
      timeout: props.timeout ?? Duration.seconds(60),
      role: this.role,
      logGroup,
      vpc: fleet.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      environment,
      // The next scheduled run is the retry; an async retry would only overlap it.
      retryAttempts: 0,
      // Overlapping runs queue on the checker lease: more than two at once is a fault, not load.
      ...(reserved > 0 ? { reservedConcurrentExecutions: reserved } : {}),
      bundling: {
        forceDockerBundling: false,
        target: runtime === lambda.Runtime.NODEJS_20_X ? "node20" : "node22",
        sourceMap: true,
        minify: true,
        // The SDK the project is tested with, not whichever version the runtime carries.
        externalModules: [],
        logLevel: nodejs.LogLevel.ERROR,
      },
      description: `hafleet ${this.fleetId}: probes the nodes, reconciles Elastic IPs and weights`,
    });
    fleet.allowAdminFrom(this.checker, "admin port from the health checker");
    tables.grantStateReadWrite(this.role, this.fleetId);
    fleet.grantAssociateAddress(this.role);
    dns?.grantWeightChanges(this.role);
    Validations.of(this.role).acknowledge({
      id: "AwsSolutions::AwsSolutions-IAM5[Resource::*]",
      reason:
        "Lambda's VPC network-interface calls (what AWSLambdaVPCAccessExecutionRole grants) and " +
        "ec2:DescribeAddresses/DescribeInstances support no resource-level permissions.",
    });
    Validations.of(this.checker).acknowledge({
      id: "AwsSolutions::AwsSolutions-L1",
      reason:
        "Pinned to Node.js 22 (or 20 with `runtime`), the versions hafleet builds and tests its code on; " +
        "a runtime is adopted after the project's tests pass on it, not when Lambda offers it.",
    });

    this.schedule = new events.Rule(this, "Schedule", {
      description: `hafleet ${this.fleetId}: runs the health checker`,
      schedule: props.schedule ?? events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(this.checker, { retryAttempts: 0 })],
    });

    const notify = new actions.SnsAction(this.topic);
    this.failoverAlarm = new cloudwatch.Alarm(this, "FailoverAlarm", {
      alarmDescription: `hafleet ${this.fleetId}: a failover happened (a standby took the Elastic IP over, a node left DNS or was marked failed, or an Elastic IP was moved back)`,
      metric: this.metricFailovers(),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.checkerErrorsAlarm = new cloudwatch.Alarm(this, "CheckerErrorsAlarm", {
      alarmDescription: `hafleet ${this.fleetId}: the health checker failed (an invocation, or a run inside one)`,
      metric: this.metricCheckerErrors(),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.checkerStoppedAlarm = new cloudwatch.Alarm(this, "CheckerStoppedAlarm", {
      alarmDescription: `hafleet ${this.fleetId}: the health checker has not run for 5 minutes`,
      metric: this.checker.metricInvocations({ period: Duration.minutes(5), statistic: "Sum" }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    // A node whose instance or system status check fails (a dead host, an exhausted disk) is
    // failed over by the fleet, but it stays broken until someone replaces it.
    this.statusCheckAlarms = fleet.nodes.map(
      (n, i) =>
        new cloudwatch.Alarm(this, `StatusCheckAlarm${i}`, {
          alarmDescription: `hafleet ${this.fleetId}: ${n.name}'s EC2 status checks fail`,
          metric: new cloudwatch.Metric({
            namespace: "AWS/EC2",
            metricName: "StatusCheckFailed",
            dimensionsMap: { InstanceId: n.instance.ref },
            statistic: "Maximum",
            period: Duration.minutes(1),
          }),
          threshold: 1,
          evaluationPeriods: 2,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
    );
    for (const alarm of [
      this.failoverAlarm,
      this.checkerErrorsAlarm,
      this.checkerStoppedAlarm,
      ...this.statusCheckAlarms,
    ]) {
      alarm.addAlarmAction(notify);
    }

    // The alarms' thresholds are drawn on the graphs rather than shown by an alarm-status widget:
    // such a widget references the alarms' ARNs, which the emulator (that creates no alarms)
    // cannot resolve, and the alarms have their own console page.
    const alarmAt = (value: number): cloudwatch.HorizontalAnnotation => ({
      value,
      label: "alarm",
      color: "#d62728",
    });
    this.dashboard = new cloudwatch.Dashboard(this, "Dashboard", {
      defaultInterval: Duration.hours(3),
      widgets: [
        [
          new cloudwatch.GraphWidget({
            title: "Failovers",
            left: [this.metricFailovers()],
            leftAnnotations: [alarmAt(1)],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: "Health checker runs and errors",
            left: [
              this.checker.metricInvocations(),
              this.metricChecker("CheckerRuns"),
              this.metricCheckerErrors(),
            ],
            leftAnnotations: [alarmAt(1)],
            width: 8,
          }),
          new cloudwatch.GraphWidget({
            title: "Health checker duration (ms)",
            left: [this.checker.metricDuration({ statistic: "p99" }), this.checker.metricDuration()],
            width: 8,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: "State table: throttled requests",
            left: [
              tables.state.metric("ThrottledRequests", { statistic: "Sum" }),
              tables.sessions.metric("ThrottledRequests", { statistic: "Sum" }),
            ],
            width: 12,
          }),
          new cloudwatch.GraphWidget({
            title: "State table: consumed capacity",
            left: [
              tables.state.metricConsumedWriteCapacityUnits(),
              tables.state.metricConsumedReadCapacityUnits(),
            ],
            width: 12,
          }),
        ],
      ],
    });
  }

  /**
   * Failovers of this fleet: Elastic IP takeovers by a standby (the nodes' logs), nodes the
   * checker took out of DNS or marked failed, and Elastic IPs it moved back. One failure can
   * count twice (a gray failure is marked, then its standby takes over); the alarm is on any.
   */
  metricFailovers(props: cloudwatch.MathExpressionOptions = {}): cloudwatch.MathExpression {
    return new cloudwatch.MathExpression({
      label: "Failovers",
      expression: "FILL(takeovers, 0) + FILL(outOfDns, 0) + FILL(marked, 0) + FILL(moved, 0)",
      usingMetrics: {
        takeovers: this.fleet.metricTakeovers(),
        outOfDns: this.metricChecker("NodesOutOfDns"),
        marked: this.metricChecker("NodesMarkedFailed"),
        moved: this.metricChecker("ElasticIpsReassociated"),
      },
      period: Duration.minutes(1),
      ...props,
    });
  }

  private get fleetId(): string {
    return this.fleet.fleetId;
  }

  /** Failed invocations of the checker plus failed runs inside invocations. */
  metricCheckerErrors(props: cloudwatch.MathExpressionOptions = {}): cloudwatch.MathExpression {
    return new cloudwatch.MathExpression({
      label: "Checker errors",
      expression: "FILL(invocations, 0) + FILL(runs, 0)",
      usingMetrics: {
        invocations: this.checker.metricErrors({ statistic: "Sum" }),
        runs: this.metricChecker("CheckerErrors"),
      },
      period: Duration.minutes(1),
      ...props,
    });
  }

  /** One of the checker's own metrics (`CheckerRuns`, `NodesMarkedFailed`, ...), summed per minute. */
  metricChecker(metricName: string, props: cloudwatch.MetricOptions = {}): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName,
      dimensionsMap: { service: CHECKER_SERVICE, fleet: this.fleetId },
      statistic: "Sum",
      period: Duration.minutes(1),
      ...props,
    });
  }
}
