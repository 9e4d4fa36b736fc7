import { readFileSync } from "node:fs";
import { join } from "node:path";
import { App, RemovalPolicy, Stack } from "aws-cdk-lib";
import { Annotations, Match, Template } from "aws-cdk-lib/assertions";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as s3assets from "aws-cdk-lib/aws-s3-assets";
import { DEFAULT_PROXY_ENTRY, ProxyFleet, type ProxyFleetProps } from "../../../lib/infra/proxy-fleet";
import { actionsOf, fleetConfig, newStack, resourcesOf, statements, tablesIn } from "./support";

type Props = Partial<ProxyFleetProps>;

function build(props: Props = {}, mode: "active-passive" | "active-active" = "active-passive") {
  const stack = newStack();
  const tables = tablesIn(stack);
  const fleet = new ProxyFleet(stack, "Fleet", {
    fleetId: "blue",
    config: fleetConfig(mode),
    tables,
    ...props,
  });
  return { stack, fleet, tables, t: Template.fromStack(stack) };
}

// One synthesis each for the many tests that only read the default templates.
let ap: ReturnType<typeof build> | undefined;
let aa: ReturnType<typeof build> | undefined;
const defaultAp = () => {
  ap ??= build();
  return ap;
};
const defaultAa = () => {
  aa ??= build({}, "active-active");
  return aa;
};

/** The launch template's user data, with every token shown as <token>. */
function userData(t: Template): string {
  const lt = Object.values(t.findResources("AWS::EC2::LaunchTemplate"))[0] as {
    Properties: { LaunchTemplateData: { UserData: { "Fn::Base64": { "Fn::Join": [string, unknown[]] } } } };
  };
  return lt.Properties.LaunchTemplateData.UserData["Fn::Base64"]["Fn::Join"][1]
    .map((p) => (typeof p === "string" ? p : "<token>"))
    .join("");
}

describe("ProxyFleet", () => {
  describe("network", () => {
    test("creates a VPC with public subnets for the nodes and private ones for the control plane by default", () => {
      const { t } = defaultAp();
      t.resourceCountIs("AWS::EC2::VPC", 1);
      // An environment-agnostic stack sees 2 zones: a public and a private subnet in each.
      t.resourceCountIs("AWS::EC2::Subnet", 4);
      t.hasResourceProperties("AWS::EC2::Subnet", { MapPublicIpOnLaunch: true });
      t.hasResourceProperties("AWS::EC2::Subnet", { MapPublicIpOnLaunch: false });
    });

    test("gives the new VPC one NAT gateway by default", () => {
      defaultAp().t.resourceCountIs("AWS::EC2::NatGateway", 1);
    });

    test("gives the new VPC natGateways NAT gateways", () => {
      build({ natGateways: 2 }).t.resourceCountIs("AWS::EC2::NatGateway", 2);
    });

    test("logs the new VPC's rejected traffic to CloudWatch", () => {
      defaultAp().t.hasResourceProperties("AWS::EC2::FlowLog", {
        TrafficType: "REJECT",
        LogDestinationType: "cloud-watch-logs",
      });
    });

    test("routes DynamoDB through a gateway endpoint", () => {
      defaultAp().t.hasResourceProperties("AWS::EC2::VPCEndpoint", {
        VpcEndpointType: "Gateway",
        ServiceName: { "Fn::Join": ["", ["com.amazonaws.", { Ref: "AWS::Region" }, ".dynamodb"]] },
      });
    });

    test("uses the given vpc and creates none", () => {
      const stack = newStack();
      const vpc = new ec2.Vpc(stack, "Mine", { natGateways: 0 });
      new ProxyFleet(stack, "Fleet", {
        fleetId: "blue",
        config: fleetConfig(),
        tables: tablesIn(stack),
        vpc,
      });
      const t = Template.fromStack(stack);
      t.resourceCountIs("AWS::EC2::VPC", 1);
      t.resourceCountIs("AWS::EC2::FlowLog", 0);
    });

    test("refuses a vpc without public subnets", () => {
      const stack = newStack();
      const vpc = new ec2.Vpc(stack, "Mine", {
        natGateways: 0,
        subnetConfiguration: [{ name: "p", subnetType: ec2.SubnetType.PRIVATE_ISOLATED }],
      });
      expect(
        () =>
          new ProxyFleet(stack, "Fleet", {
            fleetId: "blue",
            config: fleetConfig(),
            tables: tablesIn(stack),
            vpc,
          }),
      ).toThrow("`vpc` has no public subnets: the nodes need them to hold Elastic IPs");
    });
  });

  describe("nodes", () => {
    test("runs 2 nodes in active-passive by default", () => {
      defaultAp().t.resourceCountIs("AWS::EC2::Instance", 2);
    });

    test("runs 3 nodes in active-active by default", () => {
      defaultAa().t.resourceCountIs("AWS::EC2::Instance", 3);
    });

    test("runs nodeCount nodes, spread round-robin over the zones' public subnets", () => {
      const { t, fleet, stack } = build({ nodeCount: 4 });
      t.resourceCountIs("AWS::EC2::Instance", 4);
      const publicSubnets = fleet.vpc.publicSubnets.map((s) => stack.resolve(s.subnetId));
      const used = fleet.nodes.map((n) => stack.resolve(n.instance.subnetId));
      expect(used).toEqual([publicSubnets[0], publicSubnets[1], publicSubnets[0], publicSubnets[1]]);
    });

    test.each([1, 33, 2.5])("refuses nodeCount %p", (nodeCount) => {
      expect(() => build({ nodeCount })).toThrow(
        `\`nodeCount\` must be an integer from 2 to 32 (got ${nodeCount})`,
      );
    });

    test("launches every node from one launch template", () => {
      const { t, stack, fleet } = defaultAp();
      t.resourceCountIs("AWS::EC2::LaunchTemplate", 1);
      t.allResourcesProperties("AWS::EC2::Instance", {
        LaunchTemplate: {
          LaunchTemplateId: stack.resolve(fleet.launchTemplate.launchTemplateId),
          Version: stack.resolve(fleet.launchTemplate.latestVersionNumber),
        },
      });
    });

    test("requires IMDSv2, with one hop and the instance tags readable", () => {
      defaultAp().t.hasResourceProperties("AWS::EC2::LaunchTemplate", {
        LaunchTemplateData: {
          MetadataOptions: {
            HttpTokens: "required",
            HttpPutResponseHopLimit: 1,
            InstanceMetadataTags: "enabled",
          },
        },
      });
    });

    test("encrypts the root volume", () => {
      defaultAp().t.hasResourceProperties("AWS::EC2::LaunchTemplate", {
        LaunchTemplateData: {
          BlockDeviceMappings: [{ DeviceName: "/dev/xvda", Ebs: { Encrypted: true, VolumeType: "gp3" } }],
        },
      });
    });

    test("uses t3.small by default", () => {
      defaultAp().t.hasResourceProperties("AWS::EC2::LaunchTemplate", {
        LaunchTemplateData: { InstanceType: "t3.small" },
      });
    });

    test("uses instanceType when given", () => {
      build({ instanceType: new ec2.InstanceType("c7i.large") }).t.hasResourceProperties(
        "AWS::EC2::LaunchTemplate",
        {
          LaunchTemplateData: { InstanceType: "c7i.large" },
        },
      );
    });

    test("uses the latest Amazon Linux 2023 image by default", () => {
      const { t } = defaultAp();
      const params = t.toJSON().Parameters as Record<string, { Default?: string }>;
      expect(Object.values(params).map((p) => p.Default)).toContain(
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64",
      );
    });

    test("uses the arm64 image for a Graviton instance type", () => {
      const { t } = build({ instanceType: new ec2.InstanceType("t4g.small") });
      const params = t.toJSON().Parameters as Record<string, { Default?: string }>;
      expect(Object.values(params).map((p) => p.Default)).toContain(
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-arm64",
      );
    });

    test("with an account and region, pins the image in context (cdk.context.json) instead of each deploy's latest", () => {
      const key =
        "ssm:account=111111111111:parameterName=/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64:region=eu-west-1";
      const app = new App({
        builtinCloudFormationValidation: false,
        context: { [key]: "ami-0123456789abcdef0" },
      });
      const stack = new Stack(app, "Pinned", { env: { account: "111111111111", region: "eu-west-1" } });
      new ProxyFleet(stack, "Fleet", { fleetId: "blue", config: fleetConfig(), tables: tablesIn(stack) });
      const t = Template.fromStack(stack);
      t.allResourcesProperties("AWS::EC2::Instance", { ImageId: "ami-0123456789abcdef0" });
      expect(JSON.stringify(t.toJSON().Parameters ?? {})).not.toContain("ami-amazon-linux-latest");
    });

    test("without an environment, warns that every deploy after a new image release replaces every node", () => {
      const { stack } = defaultAp();
      const warnings = Annotations.fromStack(stack).findWarning("*", Match.stringLikeRegexp("image"));
      expect(warnings.map((w) => w.entry.data)).toEqual([expect.stringContaining("machineImageId")]);
    });

    test("waits for each node's readiness signal, with a timeout", () => {
      defaultAp().t.hasResource("AWS::EC2::Instance", {
        CreationPolicy: { ResourceSignal: { Count: 1, Timeout: "PT15M" } },
      });
      const { t } = defaultAp();
      const instances = Object.values(t.findResources("AWS::EC2::Instance"));
      expect(instances.every((i) => (i as { CreationPolicy?: unknown }).CreationPolicy)).toBe(true);
    });

    test("replaces nodes one at a time: each node's instance waits for the one before it", () => {
      const { stack, fleet } = build({ nodeCount: 4 });
      const t = Template.fromStack(stack);
      const ids = fleet.nodes.map((n) => stack.getLogicalId(n.instance));
      const resources = t.toJSON().Resources as Record<string, { DependsOn?: string[] }>;
      for (let i = 1; i < ids.length; i++) expect(resources[ids[i]!]!.DependsOn).toContain(ids[i - 1]);
    });

    test("turns on detailed monitoring", () => {
      defaultAp().t.allResourcesProperties("AWS::EC2::Instance", { Monitoring: true });
    });

    test("tags each node with its name and its Elastic IP's allocation", () => {
      const { t, stack, fleet } = defaultAa();
      fleet.nodes.forEach((n, i) => {
        t.hasResourceProperties("AWS::EC2::Instance", {
          // Tags are sorted by key.
          Tags: Match.arrayWith([
            { Key: "hafleet:allocation-id", Value: stack.resolve(n.elasticIp.attrAllocationId) },
            { Key: "hafleet:node", Value: `node-${i}` },
          ]),
        });
      });
    });

    test("tags every node with the fleet, which the AssociateAddress condition checks", () => {
      defaultAp().t.allResourcesProperties("AWS::EC2::Instance", {
        Tags: Match.arrayWith([{ Key: "hafleet:fleet", Value: "blue" }]),
      });
    });

    test("tags the network interfaces a node launches with the fleet, for the AssociateAddress condition", () => {
      defaultAp().t.hasResourceProperties("AWS::EC2::LaunchTemplate", {
        LaunchTemplateData: {
          TagSpecifications: Match.arrayWith([
            { ResourceType: "network-interface", Tags: [{ Key: "hafleet:fleet", Value: "blue" }] },
          ]),
        },
      });
    });
  });

  describe("user data", () => {
    test("installs Node.js and the CloudWatch agent, and downloads the proxy bundle", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("retry dnf install -y nodejs22 || retry dnf install -y nodejs20");
      expect(ud).toContain("retry dnf install -y amazon-cloudwatch-agent");
      expect(ud).toMatch(/aws s3 cp 's3:\/\/<token>\/[0-9a-f]{64}\.js' '\/opt\/hafleet\/proxy\.js'/);
    });

    test("runs the proxy under systemd, restarted however it exits", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("Restart=always");
      expect(ud).toContain("StartLimitIntervalSec=0");
      expect(ud).toContain(
        "ExecStart=$NODE_BIN /opt/hafleet/proxy.js --fleet blue --state-file /var/lib/hafleet/state.json " +
          "--admin-port 9900 --admin-host $LOCAL_IP --admin-token-file /etc/hafleet/admin-token " +
          "--node-id $INSTANCE_ID --node-name $NODE_NAME --workers auto --no-access-log " +
          // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion in the user data, not a template
          "--agent --instance-id $INSTANCE_ID --address $LOCAL_IP --zone $ZONE ${ALLOCATION_ID:+--allocation-id $ALLOCATION_ID}",
      );
      expect(ud).toContain("systemctl enable --now hafleet-proxy.service");
    });

    test("passes the tagged allocation as the fleet's shared address in active-passive", () => {
      const ud = userData(defaultAp().t);
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, not a template
      expect(ud).toContain("--zone $ZONE ${ALLOCATION_ID:+--allocation-id $ALLOCATION_ID}\n");
      expect(ud).not.toContain("--own-allocation-id");
    });

    test("passes the tagged allocation as the node's own address in active-active, and no shared one", () => {
      const ud = userData(defaultAa().t);
      expect(ud).toContain(
        "--node-id $INSTANCE_ID --node-name $NODE_NAME --workers auto --no-access-log --agent --instance-id $INSTANCE_ID --address $LOCAL_IP " +
          "--zone $ZONE --own-allocation-id $ALLOCATION_ID\n",
      );
      expect(ud).not.toContain("--allocation-id");
      expect(ud).toContain("HAFLEET_MODE=active-active");
    });

    test("makes an admin token on the node, once, that only the node's user reads", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain(
        "if [ ! -s /etc/hafleet/admin-token ]; then\n" +
          "install -m 600 -o hafleet -g hafleet /dev/null /etc/hafleet/admin-token\n" +
          "od -An -N32 -tx1 /dev/urandom | tr -d ' \\n' > /etc/hafleet/admin-token\nfi\n",
      );
    });

    test("signals readiness to CloudFormation once /readyz answers, and failure on any error", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("dnf install -y aws-cfn-bootstrap");
      // The node's own logical id comes from its tag, since every node shares the launch template.
      expect(ud).toMatch(/CFN_RESOURCE="\$\(imds tags\/instance\/hafleet:cfn-resource\)"/);
      expect(ud).toMatch(/trap '.*cfn-signal -e 1 .*' ERR/);
      expect(ud).toMatch(/curl -sf "http:\/\/\$LOCAL_IP:9900\/readyz"/);
      expect(ud).toMatch(/cfn-signal -e 0 --stack <token> --resource "\$CFN_RESOURCE" --region <token>$/);
    });

    test("retries what a boot fetches over the network: packages, metadata, the bundle", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toMatch(/retry dnf install -y nodejs22/);
      expect(ud).toMatch(/retry dnf install -y amazon-cloudwatch-agent/);
      expect(ud).toMatch(/IMDS_TOKEN="\$\(retry curl/);
      expect(ud).toMatch(/retry aws s3 cp/);
    });

    test("logs no line per request by default, and one with accessLog", () => {
      expect(userData(defaultAp().t)).toMatch(/--workers auto --no-access-log --agent/);
      expect(userData(build({ accessLog: true }).t)).not.toContain("--no-access-log");
    });

    test("rotates the log by size as well as daily, so a burst cannot fill the disk", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("  daily\n  maxsize 100M\n  rotate 5\n");
      // Checked hourly: logrotate's own timer runs daily.
      expect(ud).toContain("OnCalendar=hourly");
    });

    test("gives the proxy the drain time plus 10 s to stop", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("TimeoutStopSec=40"); // drainMs 30000 by default
    });

    test("in active-active, adds the wait to leave DNS: 86 s plus the records' TTL", () => {
      const ud = userData(defaultAa().t);
      expect(ud).toContain("TimeoutStopSec=136"); // 30 s drain, 86 s + 10 s TTL, 10 s
    });

    test("seeds the state file with the config, unless the node has one", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("if [ ! -e /var/lib/hafleet/state.json ]; then");
      expect(ud).toContain(`{"version":0,"config":${JSON.stringify(fleetConfig())}}`);
    });

    test("passes the table names and the fleet to the proxy", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain("HAFLEET_STATE_TABLE=<token>");
      expect(ud).toContain("HAFLEET_SESSIONS_TABLE=<token>");
      expect(ud).toContain("HAFLEET_FLEET_ID=blue");
      expect(ud).toContain("HAFLEET_MODE=active-passive");
    });

    test("refuses a config too large for user data", () => {
      const backends = Array.from({ length: 300 }, (_, i) => ({
        host: `backend-${i}.internal.example.org`,
        port: 8080,
      }));
      const stack = newStack();
      expect(
        () =>
          new ProxyFleet(stack, "Fleet", {
            fleetId: "blue",
            config: fleetConfig("active-passive", { pools: { app: { backends } } }),
            tables: tablesIn(stack),
          }),
      ).toThrow(/^`config` is \d+ bytes as JSON, above the 10240 that fit in EC2 user data/);
    });
  });

  describe("bundle", () => {
    test("bundles proxy/main.ts by default", () => {
      expect(DEFAULT_PROXY_ENTRY).toBe(join(__dirname, "..", "..", "..", "proxy", "main.ts"));
    });

    test("the default bundle holds the proxy's code", () => {
      const stack = newStack();
      const fleet = new ProxyFleet(stack, "Fleet", {
        fleetId: "blue",
        config: fleetConfig(),
        tables: tablesIn(stack),
      });
      Template.fromStack(stack);
      const asset = fleet.node.findChild("ProxyBundle") as s3assets.Asset;
      const outdir = (stack.node.root as unknown as { outdir: string }).outdir;
      const bundle = readFileSync(join(outdir, asset.assetPath), "utf8");
      expect(bundle).toContain("// proxy/main.ts");
    });

    test("refuses a proxyEntry that does not exist", () => {
      const missing = join(__dirname, "no-such-entry.ts");
      expect(() => build({ proxyEntry: missing })).toThrow(
        `\`proxyEntry\` ${missing} does not exist: the node bundle is built from it`,
      );
    });
  });

  describe("security groups", () => {
    test("opens the listener ports to everyone by default", () => {
      const { t } = defaultAp();
      t.hasResourceProperties("AWS::EC2::SecurityGroup", {
        SecurityGroupIngress: [
          Match.objectLike({ CidrIp: "0.0.0.0/0", FromPort: 80, ToPort: 80, IpProtocol: "tcp" }),
          Match.objectLike({ CidrIp: "0.0.0.0/0", FromPort: 5432, ToPort: 5432, IpProtocol: "tcp" }),
        ],
      });
    });

    test("opens the listener ports to listenerCidrs only", () => {
      const { t } = build({ listenerCidrs: ["203.0.113.0/24", "2001:db8::/32"] });
      t.hasResourceProperties("AWS::EC2::SecurityGroup", {
        SecurityGroupIngress: [
          Match.objectLike({ CidrIp: "203.0.113.0/24", FromPort: 80 }),
          Match.objectLike({ CidrIp: "203.0.113.0/24", FromPort: 5432 }),
          Match.objectLike({ CidrIpv6: "2001:db8::/32", FromPort: 80 }),
          Match.objectLike({ CidrIpv6: "2001:db8::/32", FromPort: 5432 }),
        ],
      });
    });

    test("opens the admin port (9900 by default) to nothing until allowAdminFrom", () => {
      const { t } = defaultAp();
      t.resourceCountIs("AWS::EC2::SecurityGroupIngress", 0);
      const groups = Object.values(t.findResources("AWS::EC2::SecurityGroup"));
      const ports = groups.flatMap(
        (g) => (g.Properties.SecurityGroupIngress ?? []) as { FromPort: number }[],
      );
      expect(ports.map((p) => p.FromPort)).not.toContain(9900);
    });

    test("allowAdminFrom opens the admin port to that peer's group only", () => {
      const stack = newStack();
      const fleet = new ProxyFleet(stack, "Fleet", {
        fleetId: "blue",
        config: fleetConfig(),
        tables: tablesIn(stack),
        adminPort: 9000,
      });
      const checker = new ec2.SecurityGroup(stack, "Checker", { vpc: fleet.vpc });
      fleet.allowAdminFrom(checker);
      Template.fromStack(stack).hasResourceProperties("AWS::EC2::SecurityGroupIngress", {
        FromPort: 9000,
        ToPort: 9000,
        GroupId: stack.resolve(fleet.securityGroup.securityGroupId),
        SourceSecurityGroupId: stack.resolve(checker.securityGroupId),
        CidrIp: Match.absent(),
      });
    });

    test("refuses an adminPort that a listener uses", () => {
      expect(() => build({ adminPort: 5432 })).toThrow(
        "`adminPort` 5432 is also the port of listener 'db' (config listeners[1].port): choose another admin port",
      );
    });

    test("refuses a listenerCidrs entry that is not a CIDR block", () => {
      expect(() => build({ listenerCidrs: ["0.0.0.0/0", "10.0.0.300/8"] })).toThrow(
        "`listenerCidrs[1]`: '10.0.0.300/8' is not a CIDR block (address/prefix, such as 10.0.0.0/8 or fd00::/8)",
      );
    });

    test("refuses empty listenerCidrs", () => {
      expect(() => build({ listenerCidrs: [] })).toThrow(
        "`listenerCidrs` is empty: no client could reach the listeners",
      );
    });
  });

  describe("Elastic IPs", () => {
    test("one in active-passive", () => {
      defaultAp().t.resourceCountIs("AWS::EC2::EIP", 2); // the fleet's, and the NAT gateway's
    });

    test("one per node in active-active", () => {
      const { t, fleet } = build({ nodeCount: 4 }, "active-active");
      expect(fleet.elasticIps).toHaveLength(4);
      t.resourceCountIs("AWS::EC2::EIP", 5); // and the NAT gateway's
    });

    test("tagged with the fleet", () => {
      const { t, fleet, stack } = defaultAa();
      const eips = t.findResources("AWS::EC2::EIP", {
        Properties: { Tags: Match.arrayWith([{ Key: "hafleet:fleet", Value: "blue" }]) },
      });
      expect(Object.keys(eips)).toEqual(
        expect.arrayContaining(fleet.elasticIps.map((e) => stack.getLogicalId(e))),
      );
    });

    test("public addresses are the EIPs' Ref, which the emulator resolves", () => {
      const { stack, fleet } = defaultAa();
      expect(fleet.publicAddresses.map((a) => stack.resolve(a))).toEqual(
        fleet.elasticIps.map((e) => ({ Ref: stack.getLogicalId(e) })),
      );
    });

    test("are never associated by the template", () => {
      defaultAa().t.resourceCountIs("AWS::EC2::EIPAssociation", 0);
    });
  });

  describe("instance role", () => {
    test("gets its fleet's items in both tables", () => {
      const { t, fleet } = defaultAp();
      const dynamo = statements(t, fleet.role).filter((s) =>
        actionsOf(s).some((a) => a.startsWith("dynamodb:")),
      );
      expect(
        dynamo.map(
          (s) => s.Condition?.["ForAllValues:StringEquals"] ?? s.Condition?.["ForAllValues:StringLike"],
        ),
      ).toEqual([{ "dynamodb:LeadingKeys": ["fleet#blue"] }, { "dynamodb:LeadingKeys": ["fleet#blue#*"] }]);
    });

    test("may associate only the fleet's Elastic IPs, with instances and interfaces tagged with the fleet", () => {
      const { t, stack, fleet } = defaultAa();
      const assoc = statements(t, fleet.role).filter((s) => actionsOf(s).includes("ec2:AssociateAddress"));
      expect(assoc).toHaveLength(1);
      expect(actionsOf(assoc[0]!)).toEqual(["ec2:AssociateAddress"]);
      expect(assoc[0]!.Condition).toEqual({ StringEquals: { "aws:ResourceTag/hafleet:fleet": "blue" } });
      const resources = JSON.stringify(resourcesOf(assoc[0]!));
      for (const eip of fleet.elasticIps) {
        expect(resources).toContain(JSON.stringify(stack.resolve(eip.attrAllocationId)));
      }
      expect(resources).not.toContain("elastic-ip/*");
    });

    test("has a wildcard resource only for the Describe calls that allow no other", () => {
      const { t, fleet } = defaultAp();
      const wild = statements(t, fleet.role).filter((s) => resourcesOf(s).includes("*"));
      expect(wild.flatMap(actionsOf).sort()).toEqual(["ec2:DescribeAddresses", "ec2:DescribeInstances"]);
    });

    test("reads the one bundle object, not the asset bucket", () => {
      const { t, fleet } = defaultAp();
      const s3 = statements(t, fleet.role).filter((s) => actionsOf(s).some((a) => a.startsWith("s3:")));
      expect(s3.flatMap(actionsOf)).toEqual(["s3:GetObject"]);
      expect(JSON.stringify(resourcesOf(s3[0]!))).toMatch(/\/[0-9a-f]{64}\.js"/);
    });

    test("writes its own log group only", () => {
      const { t, stack, fleet } = defaultAp();
      const logsStatements = statements(t, fleet.role).filter((s) =>
        actionsOf(s).some((a) => a.startsWith("logs:")),
      );
      expect(logsStatements.flatMap(resourcesOf)).toEqual([stack.resolve(fleet.logGroup.logGroupArn)]);
    });

    test("attaches AmazonSSMManagedInstanceCore by default", () => {
      defaultAp().t.hasResourceProperties("AWS::IAM::Role", {
        AssumeRolePolicyDocument: Match.objectLike({
          Statement: [Match.objectLike({ Principal: { Service: "ec2.amazonaws.com" } })],
        }),
        ManagedPolicyArns: [
          {
            "Fn::Join": [
              "",
              ["arn:", { Ref: "AWS::Partition" }, ":iam::aws:policy/AmazonSSMManagedInstanceCore"],
            ],
          },
        ],
      });
    });

    test("attaches no managed policy with sessionManager false", () => {
      build({ sessionManager: false }).t.hasResourceProperties("AWS::IAM::Role", {
        AssumeRolePolicyDocument: Match.objectLike({
          Statement: [Match.objectLike({ Principal: { Service: "ec2.amazonaws.com" } })],
        }),
        ManagedPolicyArns: Match.absent(),
      });
    });

    test("grantAssociateAddress gives another principal the same scoped permission", () => {
      const stack = newStack();
      const fleet = new ProxyFleet(stack, "Fleet", {
        fleetId: "blue",
        config: fleetConfig(),
        tables: tablesIn(stack),
      });
      const other = new iam.Role(stack, "Other", {
        assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      });
      fleet.grantAssociateAddress(other);
      const t = Template.fromStack(stack);
      t.hasResourceProperties("AWS::IAM::Policy", {
        Roles: [stack.resolve(other.roleName)],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Action: "ec2:AssociateAddress",
              Condition: { StringEquals: { "aws:ResourceTag/hafleet:fleet": "blue" } },
            }),
          ]),
        },
      });
    });
  });

  describe("logs", () => {
    test("keeps the nodes' logs a month by default", () => {
      defaultAp().t.hasResourceProperties("AWS::Logs::LogGroup", { RetentionInDays: 30 });
    });

    test("retains the log groups by default", () => {
      const groups = Object.values(defaultAp().t.findResources("AWS::Logs::LogGroup"));
      expect(groups.map((g) => g.DeletionPolicy)).toEqual(["Retain", "Retain"]);
    });

    test("deletes the log groups with removalPolicy DESTROY", () => {
      const groups = Object.values(
        build({ removalPolicy: RemovalPolicy.DESTROY }).t.findResources("AWS::Logs::LogGroup"),
      );
      expect(groups.map((g) => g.DeletionPolicy)).toEqual(["Delete", "Delete"]);
    });

    test("counts the agents' Elastic IP takeovers from their log lines, per fleet", () => {
      defaultAp().t.hasResourceProperties("AWS::Logs::MetricFilter", {
        LogGroupName: { Ref: Match.stringLikeRegexp("^FleetLogs") },
        // `from = "*"`: any string, so a takeover from another node, not the fleet's first acquisition.
        FilterPattern: '{ ($.event = "vip-moved") && ($.fleet = "blue") && ($.from = "*") }',
        MetricTransformations: [
          {
            MetricNamespace: "hafleet",
            MetricName: "ElasticIpTakeovers",
            MetricValue: "1",
            Dimensions: [{ Key: "fleet", Value: "$.fleet" }],
          },
        ],
      });
    });

    test("ships the proxy's log file to its log group, a stream per instance", () => {
      const ud = userData(defaultAp().t);
      expect(ud).toContain(
        '"file_path":"/var/log/hafleet/proxy.log","log_group_name":"<token>","log_stream_name":"{instance_id}"',
      );
      expect(ud).toContain("StandardOutput=append:/var/log/hafleet/proxy.log");
    });
  });
});
