import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App, RemovalPolicy } from "aws-cdk-lib";
import { Annotations, Match, Template } from "aws-cdk-lib/assertions";
import type { FleetConfigInput } from "../../../lib/core/config";
import { buildApp, PRESET_CONFIG, PRESET_NOTICE, stackPropsFromContext } from "../../../lib/infra/app";
import { type HafleetDnsProps, HafleetStack, type HafleetStackProps } from "../../../lib/infra/hafleet-stack";
import { fleetConfig } from "./support";

const ctx = (values: Record<string, unknown>) => ({ tryGetContext: (key: string) => values[key] });
const dir = mkdtempSync(join(tmpdir(), "hafleet-app-test-"));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

describe("stackPropsFromContext", () => {
  test("builds the active-passive preset of fleet 'main' without any context", () => {
    const { id, props } = stackPropsFromContext(ctx({}));
    expect(id).toBe("hafleet-main");
    expect(props.fleetId).toBe("main");
    expect(props.config.failover.mode).toBe("active-passive");
    expect(props.config.listeners).toEqual([expect.objectContaining(PRESET_CONFIG.listeners[0])]);
    expect(props.dns).toBeUndefined();
    expect(props.env).toBeUndefined();
  });

  test("mode=active-active sets the config's failover mode", () => {
    const { props } = stackPropsFromContext(ctx({ mode: "active-active", zoneName: "example.org" }));
    expect(props.config.failover.mode).toBe("active-active");
    expect(props.dns).toEqual({ zoneName: "example.org" });
  });

  test("refuses an unknown mode", () => {
    expect(() => stackPropsFromContext(ctx({ mode: "hot" }))).toThrow(
      "context `mode` must be 'active-passive' or 'active-active' (got 'hot')",
    );
  });

  test("reads and validates a YAML config file relative to the working directory", () => {
    file(
      "fleet.yaml",
      "listeners:\n  - { name: api, protocol: http, port: 8080, pool: api }\npools:\n  api:\n    backends: [{ host: 10.0.0.5, port: 3000 }]\n",
    );
    const { props } = stackPropsFromContext(ctx({ config: "fleet.yaml" }), dir);
    expect(props.config.listeners[0]).toMatchObject({ name: "api", port: 8080 });
  });

  test("fails on a bad value in the config file, naming the file and the field", () => {
    const path = file(
      "bad.yaml",
      "listeners:\n  - { name: api, protocol: http, port: 70000, pool: api }\npools:\n  api:\n    backends: [{ host: a, port: 1 }]\n",
    );
    expect(() => stackPropsFromContext(ctx({ config: path }))).toThrow(
      `invalid fleet config in ${path}: listeners[0].port: Too big: expected number to be <=65535`,
    );
  });

  test("fails on a config file that cannot be read", () => {
    const path = join(dir, "missing.yaml");
    expect(() => stackPropsFromContext(ctx({ config: path }))).toThrow(
      `context \`config\`: cannot read ${path}: ENOENT: no such file or directory, open '${path}'`,
    );
  });

  test("takes the config from the context `fleet` as JSON text", () => {
    const { props } = stackPropsFromContext(
      ctx({
        fleet: JSON.stringify({
          ...PRESET_CONFIG,
          listeners: [{ name: "tcp", protocol: "tcp", port: 6379, pool: "web" }],
        }),
      }),
    );
    expect(props.config.listeners[0]).toMatchObject({ name: "tcp", port: 6379 });
  });

  test("fails on a bad value in the context `fleet`, naming the field", () => {
    expect(() => stackPropsFromContext(ctx({ fleet: { ...PRESET_CONFIG, listners: [] } }))).toThrow(
      'invalid fleet config in context `fleet`: (root): Unrecognized key: "listners"',
    );
  });

  test("refuses both `config` and `fleet`", () => {
    expect(() => stackPropsFromContext(ctx({ config: "a.yaml", fleet: PRESET_CONFIG }))).toThrow(
      "context `config` (a file) and `fleet` (a document) are both set: give one",
    );
  });

  test("refuses a mode that contradicts the config's failover.mode", () => {
    expect(() =>
      stackPropsFromContext(
        ctx({ mode: "active-active", fleet: { ...PRESET_CONFIG, failover: { mode: "active-passive" } } }),
      ),
    ).toThrow(
      "context `mode` is 'active-active' but failover.mode is 'active-passive' in context `fleet`: make them agree",
    );
  });

  test("reads numbers and lists from strings, as `cdk -c` passes them", () => {
    const { props } = stackPropsFromContext(
      ctx({
        nodeCount: "3",
        adminPort: "9000",
        listenerCidrs: "10.0.0.0/8, 192.168.0.0/16",
        removalPolicy: "destroy",
      }),
    );
    expect(props).toMatchObject({
      nodeCount: 3,
      adminPort: 9000,
      listenerCidrs: ["10.0.0.0/8", "192.168.0.0/16"],
    });
    expect(props.removalPolicy).toBe(RemovalPolicy.DESTROY);
  });

  test.each([
    [{ nodeCount: "two" }, "context `nodeCount` must be an integer from 2 to 32 (got 'two')"],
    [{ adminPort: "70000" }, "context `adminPort` must be an integer from 1 to 65535 (got '70000')"],
    [{ removalPolicy: "keep" }, "context `removalPolicy` must be 'retain' or 'destroy' (got 'keep')"],
    [{ hostedZoneId: "Z123" }, "context `hostedZoneId` needs `zoneName` too"],
    [{ fleetId: { a: 1 } }, 'context `fleetId` must be a string (got {"a":1})'],
  ])("refuses %j", (values, message) => {
    expect(() => stackPropsFromContext(ctx(values))).toThrow(message);
  });

  test("passes checkerConcurrency to the checker's reserved concurrency, 0 for none", () => {
    expect(stackPropsFromContext(ctx({ checkerConcurrency: "0" })).props.checkerConcurrency).toBe(0);
    expect(() => stackPropsFromContext(ctx({ checkerConcurrency: "11" }))).toThrow(
      "context `checkerConcurrency` must be an integer from 0 to 10 (got '11')",
    );
    const t = Template.fromStack(dnsStackWith({ checkerConcurrency: 0 }));
    t.hasResourceProperties("AWS::Lambda::Function", { ReservedConcurrentExecutions: Match.absent() });
  });

  test("accessLog=true turns the nodes' per-request log on; anything but true or false is refused", () => {
    expect(stackPropsFromContext(ctx({ accessLog: "true" })).props.accessLog).toBe(true);
    expect(stackPropsFromContext(ctx({})).props.accessLog).toBeUndefined();
    expect(() => stackPropsFromContext(ctx({ accessLog: "yes" }))).toThrow(
      "context `accessLog` must be true or false (got 'yes')",
    );
  });

  test("passes healthCheckPrefixListId", () => {
    expect(
      stackPropsFromContext(ctx({ healthCheckPrefixListId: "pl-0fed" })).props.healthCheckPrefixListId,
    ).toBe("pl-0fed");
  });

  test("pins the environment only with both account and region", () => {
    expect(stackPropsFromContext(ctx({ account: "123456789012", region: "eu-west-1" })).props.env).toEqual({
      account: "123456789012",
      region: "eu-west-1",
    });
    expect(stackPropsFromContext(ctx({ region: "eu-west-1" }), dir, {}).props.env).toBeUndefined();
  });

  test("takes the environment the CDK CLI found in the credentials, so the image gets pinned", () => {
    const cli = { CDK_DEFAULT_ACCOUNT: "210987654321", CDK_DEFAULT_REGION: "us-west-2" };
    expect(stackPropsFromContext(ctx({}), dir, cli).props.env).toEqual({
      account: "210987654321",
      region: "us-west-2",
    });
    expect(stackPropsFromContext(ctx({ region: "eu-west-1" }), dir, cli).props.env).toEqual({
      account: "210987654321",
      region: "eu-west-1",
    });
    expect(stackPropsFromContext(ctx({}), dir, {}).props.env).toBeUndefined();
  });
});

describe("buildApp", () => {
  const app = (context: Record<string, unknown>) =>
    new App({
      builtinCloudFormationValidation: false,
      context: { "aws:cdk:bundling-stacks": [], ...context },
    });

  test("without a config it says the preset is used, in the synth output", () => {
    const stack = buildApp(app({}));
    expect(PRESET_NOTICE).toContain("sample backend 10.0.100.10:8080");
    Annotations.fromStack(stack).hasWarning("*", Match.stringLikeRegexp("no fleet config given"));
  });

  test("with a config it does not", () => {
    const stack = buildApp(app({ fleet: JSON.stringify(PRESET_CONFIG) }));
    Annotations.fromStack(stack).hasNoWarning("*", Match.stringLikeRegexp("no fleet config given"));
  });
});

describe("HafleetStack", () => {
  test("refuses active-active without dns", () => {
    const app = new App({
      builtinCloudFormationValidation: false,
      context: { "aws:cdk:bundling-stacks": [] },
    });
    expect(() => new HafleetStack(app, "S", { config: fleetConfig("active-active") })).toThrow(
      "`dns` is required when config failover.mode is 'active-active': weighted Route 53 records are what spread " +
        "clients over the nodes (set the context `zoneName`, and `hostedZoneId` for an existing zone)",
    );
  });

  test("retains tables and logs by default", () => {
    const app = new App({
      builtinCloudFormationValidation: false,
      context: { "aws:cdk:bundling-stacks": [] },
    });
    const t = Template.fromStack(new HafleetStack(app, "S", { config: fleetConfig() }));
    for (const type of ["AWS::DynamoDB::Table", "AWS::Logs::LogGroup"]) {
      expect(new Set(Object.values(t.findResources(type)).map((r) => r.DeletionPolicy))).toEqual(
        new Set(["Retain"]),
      );
    }
  });

  const ENV = { account: "111111111111", region: "eu-west-1" };
  const PREFIX_LIST_KEY =
    "cc-api-provider:account=111111111111:expectedMatchCount=exactly-one:propertiesToReturn.0=PrefixListId:" +
    "propertyMatch.PrefixListName=com.amazonaws.eu-west-1.route53-healthchecks:region=eu-west-1:typeName=AWS$:$:EC2$:$:PrefixList";
  const envApp = () =>
    new App({
      builtinCloudFormationValidation: false,
      context: { "aws:cdk:bundling-stacks": [], [PREFIX_LIST_KEY]: [{ PrefixListId: "pl-0123abcd" }] },
    });

  test("with narrowed listenerCidrs and DNS, opens the health-check port to Route 53's health checkers", () => {
    const stack = new HafleetStack(envApp(), "S", {
      env: ENV,
      config: fleetConfig("active-active"),
      dns: { zoneName: "example.org" },
      listenerCidrs: ["203.0.113.0/24"],
    });
    Template.fromStack(stack).hasResourceProperties("AWS::EC2::SecurityGroupIngress", {
      SourcePrefixListId: "pl-0123abcd",
      FromPort: 80,
      ToPort: 80,
    });
  });

  test("opens nothing more when the listeners are open to all, or without DNS", () => {
    for (const [dns, cidrs] of [
      [true, ["0.0.0.0/0"]],
      [false, ["203.0.113.0/24"]],
    ] as const) {
      const stack = new HafleetStack(envApp(), "S", {
        env: ENV,
        config: fleetConfig(),
        ...(dns ? { dns: { zoneName: "example.org" } } : {}),
        listenerCidrs: [...cidrs],
      });
      expect(JSON.stringify(Template.fromStack(stack).toJSON())).not.toContain("SourcePrefixListId");
    }
  });

  test("refuses narrowed listenerCidrs with DNS when the stack has no account and region to look up the list", () => {
    expect(() => dnsStackWith({ listenerCidrs: ["203.0.113.0/24"] })).toThrow(
      "`listenerCidrs` narrows the listeners, so Route 53's health checkers need the " +
        "com.amazonaws.<region>.route53-healthchecks prefix list, which is looked up in your account: " +
        "give the stack an account and region (context `account` and `region`, or your credentials), " +
        "or the list's id as `healthCheckPrefixListId`",
    );
    const given = dnsStackWith({ listenerCidrs: ["203.0.113.0/24"], healthCheckPrefixListId: "pl-0fed" });
    Template.fromStack(given).hasResourceProperties("AWS::EC2::SecurityGroupIngress", {
      SourcePrefixListId: "pl-0fed",
    });
  });

  test("keeps the tables from accidental deletion and the Elastic IPs when the stack goes", () => {
    const stack = dnsStack("active-active");
    const t = Template.fromStack(stack);
    t.allResourcesProperties("AWS::DynamoDB::Table", { DeletionProtectionEnabled: true });
    const eips = t.findResources("AWS::EC2::EIP");
    expect(stack.fleet.elasticIps.map((e) => eips[stack.getLogicalId(e)]?.DeletionPolicy)).toEqual([
      "Retain",
      "Retain",
      "Retain",
    ]);
  });

  test("alarms on each node's failed status checks, to the notice topic", () => {
    const stack = dnsStack("active-active");
    const t = Template.fromStack(stack);
    for (const n of stack.fleet.nodes) {
      t.hasResourceProperties("AWS::CloudWatch::Alarm", {
        MetricName: "StatusCheckFailed",
        Namespace: "AWS/EC2",
        Dimensions: [{ Name: "InstanceId", Value: stack.resolve(n.instance.ref) }],
        AlarmActions: [stack.resolve(stack.controlPlane.topic.topicArn)],
      });
    }
  });

  test("points one weighted record, the checker's 'active', at the Elastic IP in active-passive", () => {
    const stack = dnsStack("active-passive");
    const t = Template.fromStack(stack);
    t.resourceCountIs("AWS::Route53::RecordSet", 1);
    t.hasResourceProperties("AWS::Route53::RecordSet", {
      ResourceRecords: [stack.resolve(stack.fleet.elasticIps[0]!.ref)],
      // setIdentifierFor(recordName, SHARED_ENDPOINT): what the health checker reads and swaps.
      SetIdentifier: "main.example.org#active",
    });
  });

  test("points a weighted record at each node's Elastic IP in active-active, health-checked on the first listener port", () => {
    const stack = dnsStack("active-active");
    const t = Template.fromStack(stack);
    t.resourceCountIs("AWS::Route53::RecordSet", 3);
    stack.fleet.nodes.forEach((n) => {
      t.hasResourceProperties("AWS::Route53::RecordSet", {
        ResourceRecords: [stack.resolve(n.elasticIp.ref)],
      });
    });
    t.allResourcesProperties("AWS::Route53::HealthCheck", {
      HealthCheckConfig: Match.objectLike({ Port: 80 }),
    });
  });

  test("identifies each node's record in active-active by its stable name, which a replacement keeps", () => {
    const stack = dnsStack("active-active");
    const t = Template.fromStack(stack);
    // setIdentifierFor(recordName, node name): what the checker plans from a node's `--node-name`,
    // not its instance id, which a replacement changes (and with it the record).
    stack.fleet.nodes.forEach((n, i) => {
      expect(n.name).toBe(`node-${i}`);
      t.hasResourceProperties("AWS::Route53::RecordSet", {
        ResourceRecords: [stack.resolve(n.elasticIp.ref)],
        SetIdentifier: `main.example.org#node-${i}`,
        HealthCheckId: Match.anyValue(),
      });
    });
  });

  test.each(["active-passive", "active-active"] as const)(
    "gives no two records in the zone one SetIdentifier (%s, with a failover pair)",
    (mode) => {
      const t = Template.fromStack(dnsStack(mode, { secondaryAddresses: ["192.0.2.10"] }));
      const ids = Object.values(t.findResources("AWS::Route53::RecordSet")).map((r) =>
        JSON.stringify(r.Properties.SetIdentifier),
      );
      expect(ids).toHaveLength(mode === "active-active" ? 5 : 3);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toEqual(
        expect.arrayContaining([
          JSON.stringify("app.example.org#primary"),
          JSON.stringify("app.example.org#secondary"),
        ]),
      );
    },
  );

  test.each(["active-passive", "active-active"] as const)(
    "gives the weighted records the config's dns.ttlS and dns.weight (%s)",
    (mode) => {
      const t = Template.fromStack(dnsStack(mode, {}, { dns: { ttlS: 45, weight: 30 } }));
      t.allResourcesProperties("AWS::Route53::RecordSet", { TTL: "45", Weight: 30 });
    },
  );

  test("gives the weighted records the config's defaults: TTL 10 s, weight 100", () => {
    const t = Template.fromStack(dnsStack("active-active"));
    t.allResourcesProperties("AWS::Route53::RecordSet", { TTL: "10", Weight: 100 });
  });
});

function dnsStackWith(extra: Partial<HafleetStackProps>): HafleetStack {
  const app = new App({
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  return new HafleetStack(app, "S", {
    config: fleetConfig("active-active"),
    dns: { zoneName: "example.org", createZone: true },
    ...extra,
  });
}

function dnsStack(
  mode: "active-passive" | "active-active",
  dns: Partial<HafleetDnsProps> = {},
  config: Partial<FleetConfigInput> = {},
): HafleetStack {
  const app = new App({
    builtinCloudFormationValidation: false,
    context: { "aws:cdk:bundling-stacks": [] },
  });
  return new HafleetStack(app, "S", {
    config: fleetConfig(mode, config),
    dns: { zoneName: "example.org", createZone: true, ...dns },
  });
}
