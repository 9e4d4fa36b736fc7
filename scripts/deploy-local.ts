/**
 * `npm run deploy:local`: deploys both presets of the CDK app to the local AWS
 * emulator (moto server, started here) with cdklocal, checks through the AWS SDK
 * that what the fleet needs exists, says what the emulator skipped, destroys the
 * stacks and stops the emulator. Exits non-zero on any failure.
 *
 * Steps, per preset (active-passive, then active-active):
 *  0. cdklocal bootstrap (the emulator starts empty);
 *  1. cdklocal deploy --method=direct (moto's change sets fail on update);
 *  2. an update deploy with a changed value and --no-previous-parameters;
 *  3. SDK checks: tables, Elastic IPs, nodes, weighted and failover records, Route 53
 *     health checks, the health-checker Lambda;
 *  4. the report of what the emulator's CloudFormation did not create (from moto's own
 *     log and from DescribeStackResources), compared with the list below;
 *  5. cdklocal destroy, then an emulator reset (moto's destroy leaves things behind).
 *
 * Options: `--keep` skips the destroy and leaves the emulator running with the stacks
 * deployed (its endpoint is printed) until Ctrl-C; `HAFLEET_DEPLOY_PRESETS=active-active`
 * deploys one preset only; `HAFLEET_VERBOSE=1` shows the CLI's output.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CloudFormationClient, DescribeStackResourcesCommand } from "@aws-sdk/client-cloudformation";
import {
  DescribeContinuousBackupsCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  DynamoDBClient,
} from "@aws-sdk/client-dynamodb";
import {
  CreateManagedPrefixListCommand,
  DescribeAddressesCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
} from "@aws-sdk/client-ec2";
import { GetFunctionConfigurationCommand, LambdaClient } from "@aws-sdk/client-lambda";
import {
  GetHealthCheckCommand,
  ListResourceRecordSetsCommand,
  Route53Client,
} from "@aws-sdk/client-route-53";
import { PRESET_CONFIG } from "../lib/infra/app";
import {
  EMULATOR_ACCOUNT_ID,
  EMULATOR_REGION,
  emulatorClientConfig,
  emulatorEnv,
  REPO_ROOT,
  startEmulator,
  WORK_DIR,
} from "../test/harness/emulator";

/**
 * Resource types that moto 5.2's CloudFormation does not implement: it logs a warning, marks
 * them complete and creates nothing. Nothing in them is checked here, so they are listed in
 * the report every run. A type missing from this list that gets skipped fails the run.
 */
export const KNOWN_SKIPPED_TYPES: Record<string, string> = {
  "AWS::CloudWatch::Alarm": "failover, checker-error and checker-stopped alarms",
  "AWS::EC2::EIPAssociation": "not used: associations are run-time state owned by the agents",
  "AWS::EC2::SecurityGroupEgress": "egress rules",
  "AWS::Logs::MetricFilter": "the takeover count from the nodes' log lines (for the failover alarm)",
  "AWS::Lambda::EventInvokeConfig": "the checker's no-retry setting",
  "AWS::SNS::TopicPolicy": "the notice topic's TLS-only policy",
  "AWS::SNS::Subscription": "e-mail subscriptions",
  "AWS::CDK::Metadata": "CDK's version report (not a real resource)",
};

interface Preset {
  readonly mode: "active-passive" | "active-active";
  readonly fleetId: string;
  readonly nodes: number;
  readonly context: Record<string, string>;
  /** A change for the update deploy. */
  readonly update: Record<string, string>;
}

/**
 * The update: the preset config with a second backend, which is new user data and so a new
 * launch template version, the change that replaces every node on AWS. (It used to narrow
 * `listenerCidrs`; with DNS that now adds an ingress rule from Route 53's health-checker prefix
 * list, which moto's CloudFormation cannot create: it fails the whole update and reports it
 * complete. The unit tests check that rule in the template.)
 */
const UPDATED_CONFIG_FILE = join(WORK_DIR, "deploy-local-update.json");
const UPDATED_BACKEND = "10.0.100.11";
const UPDATED_CONFIG = {
  ...PRESET_CONFIG,
  pools: { web: { backends: [...PRESET_CONFIG.pools.web!.backends, { host: UPDATED_BACKEND, port: 8080 }] } },
};

const ALL_PRESETS: Preset[] = [
  {
    mode: "active-passive",
    fleetId: "local-ap",
    nodes: 2,
    context: { zoneName: "ap.hafleet.test", createZone: "true", secondaryAddresses: "192.0.2.10" },
    update: { config: UPDATED_CONFIG_FILE },
  },
  {
    mode: "active-active",
    fleetId: "local-aa",
    nodes: 3,
    context: { zoneName: "aa.hafleet.test", createZone: "true", secondaryAddresses: "192.0.2.20" },
    update: { config: UPDATED_CONFIG_FILE },
  },
];

/** `HAFLEET_DEPLOY_PRESETS=active-active` deploys one preset only. */
const PRESETS = ALL_PRESETS.filter(
  (p) =>
    !process.env.HAFLEET_DEPLOY_PRESETS || process.env.HAFLEET_DEPLOY_PRESETS.split(",").includes(p.mode),
);

class CheckFailed extends Error {
  override readonly name = "CheckFailed";
}

const log = (line: string) => process.stdout.write(`${line}\n`);
const elapsed = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

async function main(): Promise<void> {
  const keep = process.argv.includes("--keep");
  const t0 = Date.now();
  const motoLog = join(WORK_DIR, "logs", "deploy-local-moto.log");
  await mkdir(join(WORK_DIR, "logs"), { recursive: true });
  await rm(motoLog, { force: true });
  await writeFile(UPDATED_CONFIG_FILE, `${JSON.stringify(UPDATED_CONFIG, null, 2)}\n`);
  const emulator = await startEmulator({ localhostName: true, logFile: motoLog, log });
  log(`emulator: ${emulator.endpoint} (account ${EMULATOR_ACCOUNT_ID}), started in ${elapsed(t0)}`);
  const failures: string[] = [];
  const timings: Record<string, string> = {};
  // The CLI keeps what it looks up (zones, the image) in cdk.context.json, which pins a real
  // deployment's image: the emulator's answers must not stay there.
  const contextFile = join(REPO_ROOT, "cdk.context.json");
  const savedContext = await readFile(contextFile, "utf8").catch(() => undefined);
  try {
    const env = cdkEnv(emulator.endpoint);
    for (const preset of PRESETS) {
      const t1 = Date.now();
      const stack = `hafleet-${preset.fleetId}`;
      const outDir = join(WORK_DIR, `cdk.out-${preset.fleetId}`);
      const context: Record<string, string> = {
        mode: preset.mode,
        fleetId: preset.fleetId,
        removalPolicy: "destroy",
        ...preset.context,
      };
      log(`\n== ${preset.mode} (${stack}) ==`);
      // Every preset starts from a reset emulator, so each one bootstraps. Run outside the
      // project, so that the CLI bootstraps without synthesizing the app first.
      await cdk(env, ["bootstrap", `aws://${EMULATOR_ACCOUNT_ID}/${EMULATOR_REGION}`], outDir, WORK_DIR);
      timings[`${preset.mode} bootstrap`] = elapsed(t1);
      log(`bootstrap: ${elapsed(t1)}`);
      // Route 53's health checkers as AWS manages them (the emulator has no such list): the
      // update narrows listenerCidrs, which opens the health-checked port to this list.
      const healthCheckers = await new EC2Client(emulatorClientConfig(emulator.endpoint)).send(
        new CreateManagedPrefixListCommand({
          PrefixListName: `com.amazonaws.${EMULATOR_REGION}.route53-healthchecks`,
          AddressFamily: "IPv4",
          MaxEntries: 2,
          Entries: [{ Cidr: "54.183.255.128/26" }, { Cidr: "54.228.16.0/26" }],
        }),
      );
      context.healthCheckPrefixListId = healthCheckers.PrefixList!.PrefixListId!;
      // Only this preset's part of moto's log is read for skipped resources.
      const logStart = (await readFile(motoLog, "utf8")).length;
      const t2 = Date.now();
      const outputsFile = join(outDir, "outputs.json");
      await cdk(
        env,
        [
          "deploy",
          stack,
          "--method=direct",
          "--require-approval=never",
          `--outputs-file=${outputsFile}`,
          ...ctxArgs(context),
        ],
        outDir,
      );
      timings[`${preset.mode} deploy`] = elapsed(t2);
      log(`deploy: ${elapsed(t2)}`);
      // Checked here, before the update: moto updates a security group by deleting and
      // re-creating it, which drops the ingress rules that live in resources of their own.
      const first = JSON.parse(await readFile(outputsFile, "utf8"))[stack] as Record<string, string>;
      if (await adminOpenToChecker(emulator.endpoint, first)) {
        log("  ok    node security group: the admin port is open to the health checker's group");
      } else {
        failures.push(
          `${preset.mode}: the admin port is not open to the health checker's group after deploy`,
        );
        log("FAILED: the admin port is not open to the health checker's group after deploy");
      }
      const t3 = Date.now();
      await cdk(
        env,
        [
          "deploy",
          stack,
          "--method=direct",
          "--no-previous-parameters",
          "--require-approval=never",
          `--outputs-file=${outputsFile}`,
          ...ctxArgs({ ...context, ...preset.update }),
        ],
        outDir,
      );
      timings[`${preset.mode} update`] = elapsed(t3);
      log(`update (a config with backend ${UPDATED_BACKEND} added): ${elapsed(t3)}`);

      const outputs = JSON.parse(await readFile(outputsFile, "utf8"))[stack] as Record<string, string>;
      if (first.NodeInstanceIds !== outputs.NodeInstanceIds) {
        log(`  ok    the update replaced the nodes: ${outputs.NodeInstanceIds}`);
      } else {
        log(
          "  NOTE  the emulator kept the nodes on a new launch template version (AWS replaces them; the " +
            "order, one at a time after each one's readiness signal, is the template's, checked by the unit tests)",
        );
      }
      const template = JSON.parse(await readFile(join(outDir, `${stack}.template.json`), "utf8")) as Template;
      try {
        await checkPreset(
          emulator.endpoint,
          preset,
          stack,
          outputs,
          template,
          (await readFile(motoLog, "utf8")).slice(logStart),
        );
      } catch (err) {
        failures.push(`${preset.mode}: ${(err as Error).message}`);
        log(`FAILED: ${(err as Error).message}`);
      }

      if (keep) {
        log(`--keep: ${stack} left deployed`);
        continue;
      }
      const t4 = Date.now();
      let destroyError: Error | undefined;
      try {
        await cdk(env, ["destroy", stack, "--force", ...ctxArgs(context)], outDir);
      } catch (err) {
        destroyError = err as Error;
      }
      log(`destroy: ${elapsed(t4)}`);
      try {
        await checkDestroyed(emulator.endpoint, outputs, destroyError);
      } catch (err) {
        failures.push(`${preset.mode}: ${(err as Error).message}`);
        log(`FAILED: ${(err as Error).message}`);
      }
      // moto's destroy leaves the VPC, addresses, zone and health checks behind (docs/architecture.md §10).
      await emulator.reset();
      timings[`${preset.mode} total`] = elapsed(t1);
    }
  } catch (err) {
    failures.push((err as Error).message);
  } finally {
    if (savedContext === undefined) await rm(contextFile, { force: true });
    else await writeFile(contextFile, savedContext);
    if (keep) {
      log(`\nemulator running at ${emulator.endpoint} with the stacks deployed; Ctrl-C stops it`);
      await new Promise<void>((resolveWait) => process.once("SIGINT", () => resolveWait()));
    }
    await emulator.stop();
  }
  timings.all = elapsed(t0);
  log(`\ntimings: ${JSON.stringify(timings)}`);
  if (failures.length > 0) {
    log(`\ndeploy:local FAILED:\n- ${failures.join("\n- ")}`);
    process.exitCode = 1;
  } else {
    log("\ndeploy:local passed (see above for what the emulator did not create)");
  }
}

interface Template {
  Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }>;
}

async function checkPreset(
  endpoint: string,
  preset: Preset,
  stack: string,
  outputs: Record<string, string>,
  template: Template,
  motoLog: string,
): Promise<void> {
  const config = emulatorClientConfig(endpoint);
  const ddb = new DynamoDBClient(config);
  const ec2 = new EC2Client(config);
  const r53 = new Route53Client(config);
  const fn = new LambdaClient(config);
  const cfn = new CloudFormationClient(config);
  const ok = (what: string) => log(`  ok    ${what}`);
  const note = (what: string) => log(`  NOTE  ${what}`);
  const expect = (cond: unknown, what: string) => {
    if (!cond) throw new CheckFailed(what);
    ok(what);
  };
  try {
    // Tables.
    for (const key of ["StateTableName", "SessionsTableName"]) {
      const name = outputs[key]!;
      const t = (await ddb.send(new DescribeTableCommand({ TableName: name }))).Table;
      expect(
        t?.TableStatus === "ACTIVE" &&
          t.BillingModeSummary?.BillingMode === "PAY_PER_REQUEST" &&
          t.KeySchema?.map((k) => `${k.AttributeName}:${k.KeyType}`).join(",") === "pk:HASH,sk:RANGE",
        `table ${name}: active, on demand, keys pk/sk`,
      );
      const ttl = (await ddb.send(new DescribeTimeToLiveCommand({ TableName: name }))).TimeToLiveDescription;
      if (ttl?.TimeToLiveStatus === "ENABLED" && ttl.AttributeName === "expiresAt")
        ok(`table ${name}: TTL on expiresAt`);
      else
        note(
          `table ${name}: the emulator ignored TimeToLiveSpecification (TTL ${ttl?.TimeToLiveStatus ?? "none"})`,
        );
      const pitr = (await ddb.send(new DescribeContinuousBackupsCommand({ TableName: name })))
        .ContinuousBackupsDescription?.PointInTimeRecoveryDescription?.PointInTimeRecoveryStatus;
      if (pitr === "ENABLED") ok(`table ${name}: point-in-time recovery`);
      else
        note(`table ${name}: the emulator ignored PointInTimeRecoverySpecification (PITR ${pitr ?? "none"})`);
    }

    // Elastic IPs and nodes.
    const allocationIds = outputs.AllocationIds!.split(",");
    const addresses = outputs.ElasticIps!.split(",");
    expect(
      allocationIds.length === (preset.mode === "active-active" ? preset.nodes : 1),
      `${allocationIds.length} Elastic IP(s) for ${preset.mode}`,
    );
    const described =
      (await ec2.send(new DescribeAddressesCommand({ AllocationIds: allocationIds }))).Addresses ?? [];
    expect(
      described.length === allocationIds.length && described.every((a) => addresses.includes(a.PublicIp!)),
      `Elastic IPs ${addresses.join(", ")} exist`,
    );
    if (
      described.every((a) => a.Tags?.some((t) => t.Key === "hafleet:fleet" && t.Value === preset.fleetId))
    ) {
      ok(`Elastic IPs tagged hafleet:fleet=${preset.fleetId}`);
    } else {
      note(
        "the emulator ignored Tags on AWS::EC2::EIP (the IAM scoping tag; the unit tests check the template)",
      );
    }
    const instanceIds = outputs.NodeInstanceIds!.split(",");
    const reservations =
      (await ec2.send(new DescribeInstancesCommand({ InstanceIds: instanceIds }))).Reservations ?? [];
    const instances = reservations.flatMap((r) => r.Instances ?? []);
    expect(
      instances.length === preset.nodes && instances.every((i) => i.State?.Name === "running"),
      `${preset.nodes} nodes running`,
    );
    const zones = new Set(instances.map((i) => i.Placement?.AvailabilityZone));
    expect(zones.size >= 2, `nodes spread over ${zones.size} availability zones`);
    if (instances.every((i) => i.MetadataOptions?.HttpTokens === "required")) ok("nodes require IMDSv2");
    else {
      note(
        "the emulator ignores LaunchTemplate on AWS::EC2::Instance: the template's IMDSv2 setting, user data, " +
          "security group and role are not on the instances (the unit tests check the template)",
      );
    }

    // The update applied: the launch template's newest version carries the changed config.
    const cfnResources =
      (await cfn.send(new DescribeStackResourcesCommand({ StackName: stack }))).StackResources ?? [];
    const lt = cfnResources.find((r) => r.ResourceType === "AWS::EC2::LaunchTemplate");
    const versions =
      (
        await ec2.send(
          new DescribeLaunchTemplateVersionsCommand({
            LaunchTemplateId: lt?.PhysicalResourceId,
            Versions: ["$Latest"],
          }),
        )
      ).LaunchTemplateVersions ?? [];
    const userData = Buffer.from(versions[0]?.LaunchTemplateData?.UserData ?? "", "base64").toString();
    expect(
      userData.includes(UPDATED_BACKEND),
      `the update applied: the launch template's latest version (${versions[0]?.VersionNumber}) has the changed config`,
    );

    // Security groups: listener ports from the configured CIDRs, the admin port from the health
    // checker's group and from no address range.
    const nodeSg = (
      await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [outputs.NodeSecurityGroupId!] }))
    ).SecurityGroups?.[0];
    const rules = nodeSg?.IpPermissions ?? [];
    expect(
      rules.some((r) => r.FromPort === 80 && r.IpRanges?.some((x) => x.CidrIp === "0.0.0.0/0")),
      "node security group: port 80 from 0.0.0.0/0 (listenerCidrs' default)",
    );
    expect(
      !rules.some(
        (r) => r.FromPort === 9900 && ((r.IpRanges?.length ?? 0) > 0 || (r.Ipv6Ranges?.length ?? 0) > 0),
      ),
      "node security group: the admin port is open to no address range",
    );
    if (await adminOpenToChecker(endpoint, outputs)) {
      ok("node security group: the admin port is still open to the health checker's group after the update");
    } else {
      note(
        "after the update, the admin-port rule (an AWS::EC2::SecurityGroupIngress of its own) is gone: moto " +
          "re-creates an updated security group without it (AWS keeps it)",
      );
    }

    // Records and health checks.
    const zoneId = outputs.HostedZoneId!.replace(/^\/hostedzone\//, "");
    const records =
      (await r53.send(new ListResourceRecordSetsCommand({ HostedZoneId: zoneId }))).ResourceRecordSets ?? [];
    const recordName = `${outputs.RecordName}.`;
    const weighted = records.filter((r) => r.Name === recordName && r.Weight !== undefined);
    expect(
      weighted.length === allocationIds.length &&
        weighted.every((r) => addresses.includes(r.ResourceRecords?.[0]?.Value ?? "") && r.HealthCheckId),
      `${weighted.length} weighted record(s) at ${recordName}, each with a health check`,
    );
    const ids = records.map((r) => r.SetIdentifier).filter(Boolean);
    expect(new Set(ids).size === ids.length, `SetIdentifiers unique in the zone (${ids.join(", ")})`);
    for (const r of weighted) {
      const hc = (await r53.send(new GetHealthCheckCommand({ HealthCheckId: r.HealthCheckId! }))).HealthCheck;
      expect(
        hc?.HealthCheckConfig?.Type === "TCP" &&
          hc.HealthCheckConfig.IPAddress === r.ResourceRecords?.[0]?.Value &&
          hc.HealthCheckConfig.Port === 80,
        `health check ${hc?.Id}: TCP ${hc?.HealthCheckConfig?.IPAddress}:${hc?.HealthCheckConfig?.Port}`,
      );
    }
    const failoverName = `${outputs.FailoverRecordName}.`;
    const pair = records.filter((r) => r.Name === failoverName && r.Failover);
    const primary = pair.find((r) => r.Failover === "PRIMARY");
    const secondary = pair.find((r) => r.Failover === "SECONDARY");
    expect(
      primary?.AliasTarget?.DNSName?.replace(/\.$/, "") === outputs.RecordName &&
        secondary?.ResourceRecords?.[0]?.Value === preset.context.secondaryAddresses,
      `failover pair at ${failoverName}: PRIMARY alias of ${outputs.RecordName}, SECONDARY ${secondary?.ResourceRecords?.[0]?.Value}`,
    );

    // The health checker.
    const f = await fn.send(
      new GetFunctionConfigurationCommand({ FunctionName: outputs.HealthCheckerName! }),
    );
    expect(
      f.Runtime === "nodejs22.x" &&
        (f.VpcConfig?.SubnetIds?.length ?? 0) > 0 &&
        f.Environment?.Variables?.HAFLEET_FLEET_ID === preset.fleetId &&
        f.Environment?.Variables?.HAFLEET_STATE_TABLE === outputs.StateTableName,
      `Lambda ${f.FunctionName}: nodejs22.x, in ${f.VpcConfig?.SubnetIds?.length} VPC subnets, fleet env set`,
    );

    // What the emulator did not create.
    const skippedInLog = new Set(
      [...motoLog.matchAll(/Tried to parse (AWS::[A-Za-z0-9]+::[A-Za-z0-9]+) but it's not supported/g)].map(
        (m) => m[1]!,
      ),
    );
    const resources =
      (await cfn.send(new DescribeStackResourcesCommand({ StackName: stack }))).StackResources ?? [];
    const listed = new Map(resources.map((r) => [r.LogicalResourceId!, r]));
    const byType = new Map<string, number>();
    for (const [logicalId, r] of Object.entries(template.Resources)) {
      const there = listed.get(logicalId);
      const skipped = skippedInLog.has(r.Type) || !there;
      if (skipped) byType.set(r.Type, (byType.get(r.Type) ?? 0) + 1);
    }
    const unexpected = [...byType.keys()].filter((t) => !(t in KNOWN_SKIPPED_TYPES));
    for (const [type, n] of [...byType].sort()) {
      note(
        `NOT CREATED by the emulator (so not checked): ${n} x ${type}${KNOWN_SKIPPED_TYPES[type] ? ` -- ${KNOWN_SKIPPED_TYPES[type]}` : ""}`,
      );
    }
    if (unexpected.length > 0) {
      throw new CheckFailed(
        `the emulator skipped resource types not known to be skipped: ${unexpected.join(", ")} ` +
          "(a new resource or a moto change: check it, then list it in KNOWN_SKIPPED_TYPES)",
      );
    }
    const total = Object.keys(template.Resources).length;
    const skippedCount = [...byType.values()].reduce((a, b) => a + b, 0);
    log(`  ${total - skippedCount} of ${total} template resources created by the emulator`);
  } finally {
    for (const c of [ddb, ec2, r53, fn, cfn]) c.destroy();
  }
}

/**
 * After destroy: what the stack must have deleted (the tables, removal policy DESTROY here; the
 * Lambda; the nodes), and what moto's CloudFormation is known to leave (docs/architecture.md §10): its destroy
 * fails on the VPC, since moto 5.2 cannot delete route tables, and it keeps the Elastic IPs,
 * the hosted zone and the health checks. The emulator is reset afterwards either way.
 */
async function checkDestroyed(
  endpoint: string,
  outputs: Record<string, string>,
  destroyError?: Error,
): Promise<void> {
  if (
    destroyError &&
    !/The vpc vpc-[0-9a-f]+ has dependencies and cannot be deleted/.test(destroyError.message)
  ) {
    throw destroyError;
  }
  const config = emulatorClientConfig(endpoint);
  const ddb = new DynamoDBClient(config);
  const ec2 = new EC2Client(config);
  const fn = new LambdaClient(config);
  const gone = async (what: string, call: () => Promise<unknown>, stillThere?: (r: unknown) => boolean) => {
    try {
      const r = await call();
      if (!stillThere || stillThere(r)) throw new CheckFailed(`destroy left ${what} behind`);
    } catch (err) {
      if (err instanceof CheckFailed) throw err;
      if (!/not ?found|does not exist/i.test(`${(err as Error).name} ${(err as Error).message}`)) throw err;
    }
    log(`  ok    destroy deleted ${what}`);
  };
  try {
    if (destroyError) {
      log(
        "  NOTE  destroy: the emulator cannot delete route tables, so its VPC delete failed (known, moto 5.2)",
      );
    }
    for (const key of ["StateTableName", "SessionsTableName"]) {
      await gone(`table ${outputs[key]}`, () =>
        ddb.send(new DescribeTableCommand({ TableName: outputs[key]! })),
      );
    }
    await gone(`Lambda ${outputs.HealthCheckerName}`, () =>
      fn.send(new GetFunctionConfigurationCommand({ FunctionName: outputs.HealthCheckerName! })),
    );
    const ids = outputs.NodeInstanceIds!.split(",");
    await gone(
      `nodes ${ids.join(", ")}`,
      () => ec2.send(new DescribeInstancesCommand({ InstanceIds: ids })),
      (r) =>
        ((r as { Reservations?: { Instances?: { State?: { Name?: string } }[] }[] }).Reservations ?? [])
          .flatMap((x) => x.Instances ?? [])
          .some((i) => i.State?.Name !== "terminated"),
    );
    const eips = (await ec2.send(new DescribeAddressesCommand({}))).Addresses?.length ?? 0;
    if (eips > 0)
      log(
        `  NOTE  destroy: the emulator kept ${eips} Elastic IP(s), the hosted zone and health checks (known)`,
      );
  } finally {
    for (const c of [ddb, ec2, fn]) c.destroy();
  }
}

/** Whether the nodes' admin port accepts the health checker's security group. */
async function adminOpenToChecker(endpoint: string, outputs: Record<string, string>): Promise<boolean> {
  const ec2 = new EC2Client(emulatorClientConfig(endpoint));
  try {
    const sg = (
      await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [outputs.NodeSecurityGroupId!] }))
    ).SecurityGroups?.[0];
    return (sg?.IpPermissions ?? []).some(
      (r) =>
        r.FromPort === 9900 && r.UserIdGroupPairs?.some((g) => g.GroupId === outputs.CheckerSecurityGroupId),
    );
  } finally {
    ec2.destroy();
  }
}

/** The CLI's environment: the emulator's endpoint for every service and S3, its account, a private CDK_HOME. */
function cdkEnv(endpoint: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Nothing from the user's own AWS setup may leak into the emulator run.
  for (const k of Object.keys(env)) if (k.startsWith("AWS_") || k.startsWith("CDK_")) delete env[k];
  return {
    ...env,
    ...emulatorEnv(endpoint),
    AWS_ENDPOINT_URL_S3: endpoint,
    // The CLI caches the account per access key: keep its home out of the user's.
    CDK_HOME: join(WORK_DIR, "cdk-home"),
    CDK_DISABLE_VERSION_CHECK: "1",
    CDK_DISABLE_CLI_TELEMETRY: "true",
  };
}

function ctxArgs(context: Record<string, string>): string[] {
  return Object.entries(context).flatMap(([k, v]) => ["-c", `${k}=${v}`]);
}

/** Runs cdklocal in the repository; throws with the tail of its output when it fails. */
function cdk(env: NodeJS.ProcessEnv, args: string[], outDir: string, cwd = REPO_ROOT): Promise<void> {
  const bin = join(REPO_ROOT, "node_modules", ".bin", "cdklocal");
  const full = [...args, `--output=${outDir}`, "--no-notices", "--ci"];
  return new Promise((resolveRun, reject) => {
    const child = spawn(bin, full, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const keep = (b: Buffer) => {
      out += b.toString();
      if (out.length > 200_000) out = out.slice(-100_000);
      if (process.env.HAFLEET_VERBOSE) process.stdout.write(b);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code === 0) resolveRun();
      else {
        const tail = out.trim().split("\n").slice(-25).join("\n");
        reject(new CheckFailed(`cdklocal ${args[0]} exited with ${code}:\n${tail}`));
      }
    });
  });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
