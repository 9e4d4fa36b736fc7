/**
 * The data plane's machines: EC2 nodes that run the proxy bundle (built from
 * `proxy/main.ts` with esbuild) under systemd, their network, their Elastic IPs
 * and their logs.
 *
 * Why plain instances and not Auto Scaling groups: each node has an identity the
 * rest of the system keys on (its `node#` item, in active-active its own Elastic
 * IP, weighted record and Route 53 health check). Failover is the fleet's own
 * job, done in seconds by the lease and the Elastic IP move, not by replacing a
 * machine in minutes; an ASG would replace a failed node under a new instance id
 * and leave that wiring to be redone. EC2's automatic recovery (on by default on
 * current instance types) brings a node back after a host failure with the same
 * id, addresses and disk, and systemd restarts a crashed proxy. A change to the
 * launch template replaces the instances: CloudFormation creates every
 * replacement first and deletes the old nodes only in its clean-up step, so a
 * node is serving at every moment of an update (the old active hands its lease
 * over when systemd stops it).
 *
 * Elastic IP associations are not declared here: which node holds an address is
 * run-time state owned by the lease holder (active-passive) or by each node's
 * agent (active-active), and a template that re-applied an association on every
 * update would fight the failover.
 */
import { existsSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import {
  Annotations,
  AssetHashType,
  Aws,
  BundlingOutput,
  DockerImage,
  Duration,
  RemovalPolicy,
  Stack,
  Tags,
  Token,
  Validations,
} from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import * as s3assets from "aws-cdk-lib/aws-s3-assets";
import { Construct } from "constructs";
import { buildSync } from "esbuild";
import { parseCidr } from "../core/cidr";
import type { FleetConfig } from "../core/config";
import { dnsDrainMs } from "../core/failover";
import { checkFleetId, type StateTables } from "./state-tables";

/** The tag that scopes the fleet's resources in IAM conditions (`aws:ResourceTag/hafleet:fleet`). */
export const FLEET_TAG = "hafleet:fleet";
/** Instance tags the node reads from instance metadata at boot. */
export const NODE_TAG = "hafleet:node";
export const ALLOCATION_TAG = "hafleet:allocation-id";
/** Tag naming a node instance's logical id in the stack: its user data signals readiness for it. */
export const CFN_RESOURCE_TAG = "hafleet:cfn-resource";
/** How long CloudFormation waits for a new node's readiness signal before it rolls the update back. */
const READY_TIMEOUT = "PT15M";
/** The CloudWatch namespace of hafleet's metrics (the checker's and the nodes'). */
export const METRICS_NAMESPACE = "hafleet";
/** The metric the nodes' log lines give, by a metric filter: Elastic IP takeovers by a new lease holder. */
export const TAKEOVERS_METRIC = "ElasticIpTakeovers";

const REPO_ROOT = resolve(__dirname, "..", "..");
/** The proxy's entry point, bundled into one file for the nodes. */
export const DEFAULT_PROXY_ENTRY = join(REPO_ROOT, "proxy", "main.ts");
/** Where the proxy keeps its last good config (`--state-file`). */
const STATE_FILE = "/var/lib/hafleet/state.json";
/** Where a node keeps the admin token (`proxy/admin-token.ts`), copied from the fleet's secret at boot. */
const ADMIN_TOKEN_FILE = "/etc/hafleet/admin-token";
/** User data is limited to 16 KiB; the rest of the script takes about 4. */
const MAX_CONFIG_JSON_BYTES = 10 * 1024;

export interface ProxyFleetProps {
  /** The fleet's id: its partition in the tables, its tag, the prefix of its names. */
  readonly fleetId: string;
  /**
   * The validated fleet config (`parseFleetConfig`). Its listeners give the ports the security
   * group opens and `failover.mode` the number of Elastic IPs; it is also written to each node as
   * its first last-good config, used until the store has one.
   */
  readonly config: FleetConfig;
  /** Where the nodes keep their state; the nodes get their fleet's items only. */
  readonly tables: StateTables;
  /**
   * The VPC to run in; the nodes go in its public subnets (an Elastic IP needs them).
   * @default a new VPC over `maxAzs` zones with public subnets for the nodes, private subnets with
   * `natGateways` NAT gateways for the control plane, a DynamoDB gateway endpoint and rejected-traffic
   * flow logs.
   */
  readonly vpc?: ec2.IVpc;
  /**
   * Zones of the new VPC; ignored when `vpc` is given. An environment-agnostic stack (no account and
   * region) can only see 2 zones.
   * @default 3
   */
  readonly maxAzs?: number;
  /**
   * NAT gateways of the new VPC, which the in-VPC health checker needs to reach the EC2 and Route 53
   * APIs; ignored when `vpc` is given.
   * @default 1 (one zone's outage takes the checker's egress, not the data plane, down)
   */
  readonly natGateways?: number;
  /**
   * How many nodes, spread round-robin over the public subnets' zones.
   * @default 2 in active-passive (one active, one standby), 3 in active-active
   */
  readonly nodeCount?: number;
  /**
   * Instance type of the nodes; its architecture must match `machineImage`.
   * @default t3.small (x86_64)
   */
  readonly instanceType?: ec2.InstanceType;
  /**
   * Image of the nodes: an Amazon Linux 2023 (dnf, systemd) image of `instanceType`'s architecture.
   * @default the latest Amazon Linux 2023 x86_64 image, read from SSM at deploy time
   */
  readonly machineImage?: ec2.IMachineImage;
  /**
   * Who may connect to the listener ports of the config.
   * @default ["0.0.0.0/0"]: a load balancer in front of public services
   */
  readonly listenerCidrs?: string[];
  /**
   * Port of the proxy's admin endpoint (`/healthz`, `/readyz`, `/metrics`, drain); open only to what
   * `allowAdminFrom` names. Must not be a listener port of the config.
   * @default 9900 (the proxy's own default)
   */
  readonly adminPort?: number;
  /**
   * Entry point of the proxy, bundled with esbuild (locally, no Docker) into one file.
   * @default `proxy/main.ts` of this repository
   */
  readonly proxyEntry?: string;
  /**
   * How long the nodes' logs stay in CloudWatch.
   * @default one month
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the log groups and the Elastic IPs when they leave the stack.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * A log line per request on every node, shipped to CloudWatch Logs with the rest. At 1,000
   * requests a second that is about 600 GB a month, some $300 of ingestion at $0.50 per GB.
   * @default false (the nodes log failovers, errors and refusals; `/metrics` counts requests)
   */
  readonly accessLog?: boolean;
  /**
   * Attach `AmazonSSMManagedInstanceCore`, so operators reach a node with Session Manager instead of
   * SSH (no key pair and no port 22 are ever set up).
   * @default true
   */
  readonly sessionManager?: boolean;
}

/** One node: its instance and the Elastic IP that is its own (active-active) or shared (active-passive). */
export interface ProxyNode {
  /**
   * `node-<index>`: the node's stable name (`--node-name`), in tags, in its Route 53 health check's
   * Name tag and in its weighted record's SetIdentifier; a replacement instance keeps it. Its
   * runtime id (`--node-id`, the fleet lease's holder id) is the instance id, `instance.ref`.
   */
  readonly name: string;
  readonly instance: ec2.CfnInstance;
  readonly elasticIp: ec2.CfnEIP;
}

export class ProxyFleet extends Construct {
  readonly fleetId: string;
  readonly mode: FleetConfig["failover"]["mode"];
  readonly vpc: ec2.IVpc;
  readonly securityGroup: ec2.SecurityGroup;
  readonly role: iam.Role;
  readonly launchTemplate: ec2.LaunchTemplate;
  readonly logGroup: logs.LogGroup;
  /** Counts the agents' `"event":"vip-moved"` log lines with a `from`: a standby took the Elastic IP over. */
  readonly takeoverFilter: logs.MetricFilter;
  readonly nodes: ProxyNode[];
  /** One Elastic IP in active-passive, one per node in active-active. */
  readonly elasticIps: ec2.CfnEIP[];
  readonly adminPort: number;
  /** Whether the nodes log a line per request. */
  readonly accessLog: boolean;
  /** What happens to the log groups and Elastic IPs when they leave the stack. */
  readonly removalPolicy: RemovalPolicy;
  /** The listener ports opened to `listenerCidrs`, ascending. */
  readonly listenerPorts: number[];

  constructor(scope: Construct, id: string, props: ProxyFleetProps) {
    super(scope, id);
    const fleetId = checkFleetId(props.fleetId);
    this.fleetId = fleetId;
    const config = props.config;
    this.mode = config.failover.mode;
    const nodeCount = props.nodeCount ?? (this.mode === "active-active" ? 3 : 2);
    if (!Number.isInteger(nodeCount) || nodeCount < 2 || nodeCount > 32) {
      throw new Error(`\`nodeCount\` must be an integer from 2 to 32 (got ${nodeCount})`);
    }
    this.adminPort = props.adminPort ?? 9900;
    checkPort(this.adminPort, "adminPort");
    const clash = config.listeners.findIndex((l) => l.port === this.adminPort);
    if (clash >= 0) {
      throw new Error(
        `\`adminPort\` ${this.adminPort} is also the port of listener '${config.listeners[clash]!.name}' ` +
          `(config listeners[${clash}].port): choose another admin port`,
      );
    }
    const listenerCidrs = props.listenerCidrs ?? ["0.0.0.0/0"];
    if (listenerCidrs.length === 0) {
      throw new Error("`listenerCidrs` is empty: no client could reach the listeners");
    }
    const configJson = JSON.stringify(config);
    if (Buffer.byteLength(configJson) > MAX_CONFIG_JSON_BYTES) {
      throw new Error(
        `\`config\` is ${Buffer.byteLength(configJson)} bytes as JSON, above the ${MAX_CONFIG_JSON_BYTES} ` +
          "that fit in EC2 user data: deploy a smaller seed config and load the full one into the store",
      );
    }
    const proxyEntry = props.proxyEntry ?? DEFAULT_PROXY_ENTRY;
    if (!existsSync(proxyEntry)) {
      throw new Error(`\`proxyEntry\` ${proxyEntry} does not exist: the node bundle is built from it`);
    }
    Tags.of(this).add(FLEET_TAG, fleetId);
    this.removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.accessLog = props.accessLog ?? false;

    this.vpc = props.vpc ?? this.createVpc(props);

    this.securityGroup = new ec2.SecurityGroup(this, "NodeSecurityGroup", {
      vpc: this.vpc,
      description: `hafleet ${fleetId} nodes: listener ports from the configured CIDRs, admin port from the control plane`,
      // Nodes reach backends on any port the config names (and may be changed at run time),
      // plus DynamoDB, EC2, S3 and the package mirrors over HTTPS.
      allowAllOutbound: true,
    });
    this.listenerPorts = [...new Set(config.listeners.map((l) => l.port))].sort((a, b) => a - b);
    listenerCidrs.forEach((cidr, i) => {
      const peer = cidrPeer(cidr, `listenerCidrs[${i}]`);
      for (const port of this.listenerPorts) {
        this.securityGroup.addIngressRule(peer, ec2.Port.tcp(port), `listener port ${port} from ${cidr}`);
      }
    });

    const open = listenerCidrs.filter((c) => c === "0.0.0.0/0" || c === "::/0");
    if (open.length > 0) {
      Validations.of(this.securityGroup).acknowledge({
        id: "AwsSolutions::AwsSolutions-EC23",
        reason:
          `The listener ports (${this.listenerPorts.join(", ")}) are open to ${open.join(" and ")} because this ` +
          "is a load balancer for public services; only those ports are open, and `listenerCidrs` narrows them.",
      });
    }

    this.logGroup = new logs.LogGroup(this, "Logs", {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    // The agents' takeovers as a metric from their log lines: no CloudWatch call on the node's
    // failover path, and none of its permissions.
    this.takeoverFilter = new logs.MetricFilter(this, "TakeoverMetric", {
      logGroup: this.logGroup,
      filterPattern: logs.FilterPattern.all(
        logs.FilterPattern.stringValue("$.event", "=", "vip-moved"),
        logs.FilterPattern.stringValue("$.fleet", "=", fleetId),
        logs.FilterPattern.exists("$.from"),
      ),
      metricNamespace: METRICS_NAMESPACE,
      metricName: TAKEOVERS_METRIC,
      metricValue: "1",
      dimensions: { fleet: "$.fleet" },
    });

    this.elasticIps =
      this.mode === "active-active"
        ? Array.from({ length: nodeCount }, (_, i) => this.createElasticIp(`ElasticIp${i}`, `node-${i}`))
        : [this.createElasticIp("ElasticIp", "active")];

    this.role = new iam.Role(this, "NodeRole", {
      assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com"),
      description: `hafleet ${fleetId} node: its fleet's items, its fleet's Elastic IPs, its log group`,
      managedPolicies:
        (props.sessionManager ?? true)
          ? [iam.ManagedPolicy.fromAwsManagedPolicyName("AmazonSSMManagedInstanceCore")]
          : [],
    });
    if (props.sessionManager ?? true) {
      Validations.of(this.role).acknowledge({
        id: "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
        reason:
          "Session Manager replaces SSH (no key pair, no port 22); AWS maintains this policy for exactly that. " +
          "Turn it off with `sessionManager: false`.",
      });
    }
    props.tables.grantStateReadWrite(this.role, fleetId);
    props.tables.grantSessionsReadWrite(this.role, fleetId);
    this.grantAssociateAddress(this.role);
    // The CloudWatch agent writes the proxy's log file to this group, a stream per instance.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
        resources: [this.logGroup.logGroupArn],
      }),
    );

    const bundle = this.bundleProxy(proxyEntry);
    // The one object the node downloads: s3:GetObject on its key, not on the asset bucket.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ["s3:GetObject"],
        resources: [bundle.bucket.arnForObjects(bundle.s3ObjectKey)],
      }),
    );

    const instanceType =
      props.instanceType ?? ec2.InstanceType.of(ec2.InstanceClass.T3, ec2.InstanceSize.SMALL);
    const machineImage = props.machineImage ?? this.defaultImage(instanceType);
    const userData = ec2.UserData.forLinux();
    this.writeUserData(userData, bundle, configJson, props.tables);
    this.launchTemplate = new ec2.LaunchTemplate(this, "LaunchTemplate", {
      instanceType,
      machineImage,
      userData,
      role: this.role,
      securityGroup: this.securityGroup,
      requireImdsv2: true,
      // The proxy runs on the host, not in a container: one hop is enough and keeps the
      // credentials out of reach of anything bridged behind the node.
      httpPutResponseHopLimit: 1,
      // The node reads its name and Elastic IP from its tags at boot.
      instanceMetadataTags: true,
      blockDevices: [
        {
          deviceName: "/dev/xvda",
          volume: ec2.BlockDeviceVolume.ebs(8, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
        },
      ],
    });

    // CDK tags the instances and volumes a template launches; their network interfaces need the
    // fleet tag too, since AssociateAddress checks it on them.
    (this.launchTemplate.node.defaultChild as ec2.CfnLaunchTemplate).addPropertyOverride(
      "LaunchTemplateData.TagSpecifications.2",
      { ResourceType: "network-interface", Tags: [{ Key: FLEET_TAG, Value: fleetId }] },
    );

    const subnets = this.vpc.publicSubnets;
    if (subnets.length === 0) {
      throw new Error("`vpc` has no public subnets: the nodes need them to hold Elastic IPs");
    }
    this.nodes = Array.from({ length: nodeCount }, (_, i) => {
      const name = `node-${i}`;
      const elasticIp = this.elasticIps[this.mode === "active-active" ? i : 0]!;
      const instance = new ec2.CfnInstance(this, `Node${i}`, {
        launchTemplate: {
          launchTemplateId: this.launchTemplate.launchTemplateId!,
          version: this.launchTemplate.latestVersionNumber,
        },
        // The template's image again: AWS takes it from either place, the emulator only from here.
        imageId: machineImage.getImage(this).imageId,
        // Round-robin over the zones: with 2 nodes in 2 zones, a zone outage leaves one node.
        subnetId: subnets[i % subnets.length]!.subnetId,
        tags: [
          { key: "Name", value: `hafleet-${fleetId}-${name}` },
          { key: NODE_TAG, value: name },
          { key: ALLOCATION_TAG, value: elasticIp.attrAllocationId },
        ],
      });
      // One-minute metrics: a node's CPU and network are what capacity planning and failover
      // post-mortems look at, and five-minute averages hide the spikes.
      instance.monitoring = true;
      Validations.of(instance).acknowledge({
        id: "AwsSolutions::AwsSolutions-EC29",
        reason:
          "Nodes are replaceable by design: the standby or the other nodes take over a lost node within " +
          "seconds, and termination protection would block the stack updates that replace nodes.",
      });
      // The agent acts at boot: its permissions must exist before the instance does.
      instance.node.addDependency(this.role);
      // Done only when the node serves: its user data signals after /readyz answers 200 (or
      // signals failure), so an update that breaks the nodes rolls back instead of going green.
      instance.cfnOptions.creationPolicy = { resourceSignal: { count: 1, timeout: READY_TIMEOUT } };
      Tags.of(instance).add(CFN_RESOURCE_TAG, Stack.of(this).getLogicalId(instance));
      return { name, instance, elasticIp };
    });
    // One at a time: a change of the launch template replaces every node, and CloudFormation
    // would create the new instances together and count each done when merely running. Chained,
    // each new node is ready (its signal) before the next one is created, and the old ones are
    // deleted one by one, in reverse, at the end of the update; each hands over as it stops.
    this.nodes.forEach((n, i) => {
      if (i > 0) n.instance.addResourceDependency(this.nodes[i - 1]!.instance);
    });
  }

  /**
   * Amazon Linux 2023 for the instance type's architecture. With an account and region, the
   * image id is looked up once and kept in cdk.context.json, so a deploy replaces the nodes only
   * when someone updates it on purpose (`cdk context --reset`). Without them, CloudFormation
   * resolves the latest image at every deploy: a new release replaces every node.
   */
  private defaultImage(instanceType: ec2.InstanceType): ec2.IMachineImage {
    const stack = Stack.of(this);
    const pinned = !Token.isUnresolved(stack.account) && !Token.isUnresolved(stack.region);
    if (!pinned) {
      Annotations.of(this).addWarningV2(
        "hafleet:unpinned-image",
        "The nodes' image is the latest Amazon Linux 2023 at each deploy, so a deploy after a new " +
          "release replaces every node: give the stack an account and region (the image is then kept " +
          "in cdk.context.json) or pin one with `machineImageId`.",
      );
    }
    return ec2.MachineImage.latestAmazonLinux2023({
      cpuType:
        instanceType.architecture === ec2.InstanceArchitecture.ARM_64
          ? ec2.AmazonLinuxCpuType.ARM_64
          : ec2.AmazonLinuxCpuType.X86_64,
      cachedInContext: pinned,
    });
  }

  /**
   * Lets `grantee` move this fleet's Elastic IPs between this fleet's nodes, and nothing else:
   * AssociateAddress is authorized against the address, the instance and its network interface,
   * and each must carry the fleet's tag. The Describe calls allow no resource scoping in IAM.
   */
  grantAssociateAddress(grantee: iam.IGrantable): iam.Grant {
    const stack = Stack.of(this);
    const arn = (resource: string, name: string) =>
      stack.formatArn({ service: "ec2", resource, resourceName: name });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["ec2:DescribeAddresses", "ec2:DescribeInstances"],
      resourceArns: ["*"],
    });
    const grant = iam.Grant.addToPrincipal({
      grantee,
      actions: ["ec2:AssociateAddress"],
      resourceArns: [
        // The addresses are known: name each one.
        ...this.elasticIps.map((eip) => arn("elastic-ip", eip.attrAllocationId)),
        // The nodes are not (naming them here would make each instance depend on itself
        // through its role): any instance and interface that carries the fleet's tag.
        arn("instance", "*"),
        arn("network-interface", "*"),
      ],
      conditions: { StringEquals: { [`aws:ResourceTag/${FLEET_TAG}`]: this.fleetId } },
    });
    const scope = grantee instanceof Construct ? grantee : undefined;
    if (scope) {
      // cdk-nag names a finding by the ARN as synthesized: pseudo parameters, or the stack's own
      // account and region when it has them.
      const region = Token.isUnresolved(stack.region) ? "<AWS::Region>" : stack.region;
      const account = Token.isUnresolved(stack.account) ? "<AWS::AccountId>" : stack.account;
      const prefix = `AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:${region}:${account}`;
      Validations.of(scope).acknowledge(
        {
          id: "AwsSolutions::AwsSolutions-IAM5[Resource::*]",
          reason:
            "ec2:DescribeAddresses and ec2:DescribeInstances support no resource-level permissions " +
            "(Service Authorization Reference, Amazon EC2); they read, never change.",
        },
        {
          id: `${prefix}:instance/*]`,
          reason: `ec2:AssociateAddress only on instances tagged ${FLEET_TAG}=${this.fleetId} (condition on the statement)`,
        },
        {
          id: `${prefix}:network-interface/*]`,
          reason: `ec2:AssociateAddress only on interfaces tagged ${FLEET_TAG}=${this.fleetId} (condition on the statement)`,
        },
      );
    }
    return grant;
  }

  /** Opens the admin port to `peer` (the health checker); nothing else may reach it. */
  allowAdminFrom(peer: ec2.IConnectable, description = "admin port from the control plane"): void {
    this.securityGroup.connections.allowFrom(peer, ec2.Port.tcp(this.adminPort), description);
  }

  /** Elastic IP takeovers by a standby that took the lease, summed per minute (from the nodes' logs). */
  metricTakeovers(props: cloudwatch.MetricOptions = {}): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName: TAKEOVERS_METRIC,
      dimensionsMap: { fleet: this.fleetId },
      statistic: "Sum",
      period: Duration.minutes(1),
      ...props,
    });
  }

  /** The public addresses: one in active-passive, one per node in active-active. */
  get publicAddresses(): string[] {
    // `.ref` of an EIP is its address on AWS, and the emulator supports it where it does not
    // support `Fn::GetAtt PublicIp` (docs/architecture.md §10).
    return this.elasticIps.map((eip) => eip.ref);
  }

  private createVpc(props: ProxyFleetProps): ec2.Vpc {
    const vpc = new ec2.Vpc(this, "Vpc", {
      maxAzs: props.maxAzs ?? 3,
      natGateways: props.natGateways ?? 1,
      subnetConfiguration: [
        { name: "nodes", subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: "control", subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 24 },
      ],
      // Free, and keeps the state store's traffic off the NAT gateway and the internet.
      gatewayEndpoints: { DynamoDb: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB } },
    });
    const flowLogs = new logs.LogGroup(this, "FlowLogs", {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    // Rejected traffic only: what a security-group mistake or a probe looks like, at a fraction
    // of the cost of logging every accepted flow of a load balancer.
    vpc.addFlowLog("FlowLog", {
      trafficType: ec2.FlowLogTrafficType.REJECT,
      destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
    });
    return vpc;
  }

  private createElasticIp(id: string, role: string): ec2.CfnEIP {
    const eip = new ec2.CfnEIP(this, id, { domain: "vpc" });
    // Clients (and allow-lists, and DNS outside the stack) use the address itself: kept with the
    // stack's removal policy, retained by default, so that a replaced stack can take it back.
    eip.applyRemovalPolicy(this.removalPolicy);
    Tags.of(eip).add("Name", `hafleet-${this.fleetId}-${role}`);
    return eip;
  }

  private bundleProxy(entry: string): s3assets.Asset {
    return new s3assets.Asset(this, "ProxyBundle", {
      path: dirname(entry),
      // The bundle also holds lib/core and the dependencies: hash what was built, not the folder.
      assetHashType: AssetHashType.OUTPUT,
      bundling: {
        // Never pulled: local bundling below either succeeds or throws.
        image: DockerImage.fromRegistry("public.ecr.aws/docker/library/node:22-slim"),
        outputType: BundlingOutput.SINGLE_FILE,
        local: {
          tryBundle(outputDir: string): boolean {
            writeFileSync(join(outputDir, "proxy.js"), bundleOnce(entry));
            return true;
          },
        },
      },
    });
  }

  private writeUserData(
    userData: ec2.UserData,
    bundle: s3assets.Asset,
    configJson: string,
    tables: StateTables,
  ): void {
    const region = Stack.of(this).region;
    // The drain, the agent's handover (6 s) with room, and in active-active its wait to leave DNS.
    const config = JSON.parse(configJson) as FleetConfig;
    const dnsWaitMs = this.mode === "active-active" ? dnsDrainMs(config.dns.ttlS) : 0;
    const stopTimeoutS = Math.ceil((config.timeouts.drainMs + dnsWaitMs) / 1000) + 10;
    // The address of the instance's allocation tag: its own in active-active, the shared one in
    // active-passive (see ExecStart below).
    const allocationFlag =
      this.mode === "active-active"
        ? "--own-allocation-id $ALLOCATION_ID"
        : // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
          "${ALLOCATION_ID:+--allocation-id $ALLOCATION_ID}";
    const signal = (code: string) =>
      `/opt/aws/bin/cfn-signal -e ${code} --stack ${Aws.STACK_NAME} --resource "$CFN_RESOURCE" --region ${region}`;
    userData.addCommands(
      "set -euo pipefail",
      // What a boot fetches over the network is retried: a package mirror, the metadata service
      // or S3 answering an error once must not leave a node that never starts.
      'retry() { local n=1; until "$@"; do [ "$n" -ge 5 ] && return 1; sleep $((n * 3)); n=$((n + 1)); done; }',
      // 1. Who this node is, from instance metadata (IMDSv2 only) and its tags.
      'IMDS_TOKEN="$(retry curl -sSf -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 21600")"',
      'imds() { retry curl -sSf -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "http://169.254.169.254/latest/meta-data/$1"; }',
      `CFN_RESOURCE="$(imds tags/instance/${CFN_RESOURCE_TAG})"`,
      // 2. The readiness signal (the instance's CreationPolicy): failure on any error from here on.
      "retry dnf install -y aws-cfn-bootstrap",
      `trap '${signal("1")}' ERR`,
      `NODE_NAME="$(imds tags/instance/${NODE_TAG})"`,
      `ALLOCATION_ID="$(imds tags/instance/${ALLOCATION_TAG})"`,
      'INSTANCE_ID="$(imds instance-id)"',
      'LOCAL_IP="$(imds local-ipv4)"',
      'ZONE="$(imds placement/availability-zone)"',
      // 3. Node.js from the distribution (22, else 20), the CloudWatch agent, an unprivileged user.
      "retry dnf install -y nodejs22 || retry dnf install -y nodejs20",
      "retry dnf install -y amazon-cloudwatch-agent",
      'NODE_BIN="$(command -v node-22 || command -v node-20 || command -v node)"',
      "id hafleet >/dev/null 2>&1 || useradd --system --home-dir /var/lib/hafleet --shell /sbin/nologin hafleet",
      "install -d -o hafleet -g hafleet /var/lib/hafleet /var/log/hafleet",
      "install -d /opt/hafleet /etc/hafleet",
      // 4. The proxy bundle and the seed config (the last good config until the store has one).
      `retry aws s3 cp 's3://${bundle.s3BucketName}/${bundle.s3ObjectKey}' '/opt/hafleet/proxy.js' --region ${region}`,
    );
    userData.addCommands(
      // The deploy-time config as the proxy's state file (its last good config), only when the
      // node has none yet: the proxy starts from it while the store has no config for the fleet,
      // and replaces it with every newer config it reads from the store.
      `if [ ! -e ${STATE_FILE} ]; then`,
      `cat > ${STATE_FILE} <<'HAFLEET_CONFIG'`,
      `{"version":0,"config":${configJson}}`,
      "HAFLEET_CONFIG",
      `chown hafleet:hafleet ${STATE_FILE} && chmod 600 ${STATE_FILE}`,
      "fi",
      "cat > /etc/hafleet/env <<HAFLEET_ENV",
      `AWS_REGION=${region}`,
      `HAFLEET_FLEET_ID=${this.fleetId}`,
      "HAFLEET_NODE_ID=$INSTANCE_ID",
      "HAFLEET_NODE_NAME=$NODE_NAME",
      `HAFLEET_MODE=${this.mode}`,
      "HAFLEET_ALLOCATION_ID=$ALLOCATION_ID",
      `HAFLEET_STATE_TABLE=${tables.tableNames.state}`,
      `HAFLEET_SESSIONS_TABLE=${tables.tableNames.sessions}`,
      `HAFLEET_ADMIN_PORT=${this.adminPort}`,
      "NODE_ENV=production",
      "HAFLEET_ENV",
      // The admin token that POST /drain needs (proxy/admin-token.ts): made on the node, once, and
      // readable by the node's user alone. Nothing else needs it: the checker and `hafleet drain`
      // change node state through the state table, authorized by IAM.
      `if [ ! -s ${ADMIN_TOKEN_FILE} ]; then`,
      `install -m 600 -o hafleet -g hafleet /dev/null ${ADMIN_TOKEN_FILE}`,
      `od -An -N32 -tx1 /dev/urandom | tr -d ' \\n' > ${ADMIN_TOKEN_FILE}`,
      "fi",
      // 5. The proxy under systemd: restarted whatever way it exits, given the drain time to stop.
      "cat > /etc/systemd/system/hafleet-proxy.service <<HAFLEET_UNIT",
      "[Unit]",
      "Description=hafleet proxy and node agent",
      "After=network-online.target",
      "Wants=network-online.target",
      "StartLimitIntervalSec=0",
      "[Service]",
      "User=hafleet",
      "EnvironmentFile=/etc/hafleet/env",
      // The admin endpoint listens on the instance's private address, which the health checker
      // probes from the VPC; the security group lets only the checker in, and state changes
      // need the admin token.
      // --node-id is the instance id, unique per instance (the fleet lease's holder id);
      // --node-name the node's stable name, which a replacement instance keeps: it owns the node's
      // own Elastic IP (the newer live node of a name holds it) and its weighted record.
      // --agent: heartbeats, and the Elastic IP of the instance's allocation tag. In active-active
      // that address is the node's own (--own-allocation-id: it holds it and contends for no shared
      // one); in active-passive it is the fleet's shared address, which the lease holder takes. The
      // own flag has no `:+` guard: a node given neither flag would contend for every fleet-tagged
      // address, the other nodes' own ones included (the script stops above if the tag is missing).
      `ExecStart=$NODE_BIN /opt/hafleet/proxy.js --fleet ${this.fleetId} --state-file ${STATE_FILE} ` +
        `--admin-port ${this.adminPort} --admin-host $LOCAL_IP --admin-token-file ${ADMIN_TOKEN_FILE} ` +
        `--node-id $INSTANCE_ID --node-name $NODE_NAME --workers auto ${this.accessLog ? "" : "--no-access-log "}` +
        `--agent --instance-id $INSTANCE_ID --address $LOCAL_IP --zone $ZONE ${allocationFlag}`,
      "Restart=always",
      "RestartSec=1",
      "KillSignal=SIGTERM",
      `TimeoutStopSec=${stopTimeoutS}`,
      "AmbientCapabilities=CAP_NET_BIND_SERVICE",
      "NoNewPrivileges=true",
      "LimitNOFILE=1048576",
      "StandardOutput=append:/var/log/hafleet/proxy.log",
      "StandardError=append:/var/log/hafleet/proxy.log",
      "[Install]",
      "WantedBy=multi-user.target",
      "HAFLEET_UNIT",
      "cat > /etc/logrotate.d/hafleet <<'HAFLEET_LOGROTATE'",
      "/var/log/hafleet/*.log {",
      "  daily",
      "  maxsize 100M",
      "  rotate 5",
      "  compress",
      "  missingok",
      "  copytruncate",
      "}",
      "HAFLEET_LOGROTATE",
      // logrotate's own timer runs daily; maxsize needs it to look more often than that.
      "mkdir -p /etc/systemd/system/logrotate.timer.d",
      "printf '[Timer]\nOnCalendar=\nOnCalendar=hourly\n' > /etc/systemd/system/logrotate.timer.d/hourly.conf",
      // 6. The log file to CloudWatch Logs, one stream per instance.
      "cat > /opt/aws/amazon-cloudwatch-agent/etc/hafleet.json <<'HAFLEET_CWAGENT'",
      JSON.stringify({
        logs: {
          logs_collected: {
            files: {
              collect_list: [
                {
                  file_path: "/var/log/hafleet/proxy.log",
                  log_group_name: this.logGroup.logGroupName,
                  log_stream_name: "{instance_id}",
                },
              ],
            },
          },
        },
      }),
      "HAFLEET_CWAGENT",
      "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s " +
        "-c file:/opt/aws/amazon-cloudwatch-agent/etc/hafleet.json",
      "systemctl daemon-reload",
      "systemctl enable --now hafleet-proxy.service",
      // 7. Ready when the proxy says so (a config in force, listeners open): then CloudFormation
      // may go on to the next node. Not ready within 4 minutes: the ERR trap signals failure.
      `for i in $(seq 1 120); do curl -sf "http://$LOCAL_IP:${this.adminPort}/readyz" >/dev/null && break; sleep 2; done`,
      `curl -sf "http://$LOCAL_IP:${this.adminPort}/readyz" >/dev/null`,
      signal("0"),
    );
  }
}

/**
 * One esbuild run per entry and process: an app with several fleets (or a test file with many
 * stacks) bundles the proxy once. `cdk synth` starts a new process, so a changed proxy is
 * always rebuilt.
 */
const bundles = new Map<string, Uint8Array>();
function bundleOnce(entry: string): Uint8Array {
  let bytes = bundles.get(entry);
  if (!bytes) {
    const result = buildSync({
      entryPoints: [entry],
      outfile: "proxy.js",
      write: false,
      bundle: true,
      platform: "node",
      target: "node20",
      format: "cjs",
      logLevel: "error",
      legalComments: "none",
    });
    bytes = result.outputFiles[0]!.contents;
    bundles.set(entry, bytes);
  }
  return bytes;
}

function checkPort(port: number, prop: string): void {
  if (Token.isUnresolved(port) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`\`${prop}\` must be a port number from 1 to 65535 (got ${port})`);
  }
}

function cidrPeer(cidr: string, prop: string): ec2.IPeer {
  const c = parseCidr(cidr);
  if (typeof c === "string") throw new Error(`\`${prop}\`: ${c}`);
  return c.family === "ipv4" ? ec2.Peer.ipv4(cidr) : ec2.Peer.ipv6(cidr);
}
