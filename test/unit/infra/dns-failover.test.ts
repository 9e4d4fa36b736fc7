import { App, Duration, Stack } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import { setIdentifierFor } from "../../../lib/core/dns";
import { type DnsEndpoint, DnsFailover, type DnsFailoverProps } from "../../../lib/infra/dns-failover";
import { actionsOf, newStack, resourcesOf, statements } from "./support";

const endpoints: DnsEndpoint[] = [
  { id: "i-0123456789abcdef0", name: "node-0", address: "198.51.100.10" },
  { id: "i-0123456789abcdef1", name: "node-1", address: "198.51.100.11" },
];

/** The SetIdentifiers of every record in the template, resolved (a token id gives an `Fn::Join`). */
function setIdentifiers(t: Template): unknown[] {
  return Object.values(t.findResources("AWS::Route53::RecordSet")).map((r) => r.Properties.SetIdentifier);
}

function build(props: Partial<DnsFailoverProps> = {}) {
  const stack = newStack();
  const dns = new DnsFailover(stack, "Dns", {
    fleetId: "blue",
    zoneName: "example.org",
    endpoints,
    healthCheckPort: 80,
    ...(props.hostedZoneId ? {} : { createZone: true }),
    ...props,
  });
  return { stack, dns, t: Template.fromStack(stack) };
}

describe("DnsFailover", () => {
  test("creates a public hosted zone named zoneName with createZone", () => {
    const { t } = build();
    t.resourceCountIs("AWS::Route53::HostedZone", 1);
    t.hasResourceProperties("AWS::Route53::HostedZone", { Name: "example.org." });
  });

  test("with neither hostedZoneId nor createZone, looks the zone up in the account (no second zone)", () => {
    const app = new App({
      builtinCloudFormationValidation: false,
      context: {
        "hosted-zone:account=111111111111:domainName=example.org:region=eu-west-1": {
          Id: "/hostedzone/Z0FOUND",
          Name: "example.org.",
        },
      },
    });
    const stack = new Stack(app, "S", { env: { account: "111111111111", region: "eu-west-1" } });
    new DnsFailover(stack, "Dns", {
      fleetId: "blue",
      zoneName: "example.org",
      endpoints,
      healthCheckPort: 80,
    });
    const t = Template.fromStack(stack);
    t.resourceCountIs("AWS::Route53::HostedZone", 0);
    t.allResourcesProperties("AWS::Route53::RecordSet", { HostedZoneId: "Z0FOUND" });
  });

  test("without an account and region to look it up in, asks for the zone's id or createZone", () => {
    const stack = newStack();
    expect(
      () =>
        new DnsFailover(stack, "Dns", {
          fleetId: "blue",
          zoneName: "example.org",
          endpoints,
          healthCheckPort: 80,
        }),
    ).toThrow(
      "`zoneName` example.org: give `hostedZoneId` (the zone you host it in), or an account and region so " +
        "that it is looked up, or `createZone` for a new zone that you delegate yourself",
    );
  });

  test("refuses hostedZoneId with createZone", () => {
    expect(() => build({ hostedZoneId: "Z0123456789ABC", createZone: true })).toThrow(
      "`hostedZoneId` and `createZone` are both set: give one",
    );
  });

  test("imports the zone by hostedZoneId and creates none", () => {
    const { t } = build({ hostedZoneId: "Z0123456789ABC" });
    t.resourceCountIs("AWS::Route53::HostedZone", 0);
    t.allResourcesProperties("AWS::Route53::RecordSet", { HostedZoneId: "Z0123456789ABC" });
  });

  test("names the weighted set after the fleet by default", () => {
    const { dns, t } = build();
    expect(dns.recordName).toBe("blue.example.org");
    t.allResourcesProperties("AWS::Route53::RecordSet", { Name: "blue.example.org." });
  });

  test("uses recordName, relative to the zone", () => {
    build({ recordName: "lb" }).t.allResourcesProperties("AWS::Route53::RecordSet", {
      Name: "lb.example.org.",
    });
  });

  test("makes one weighted A record per endpoint, each with its own health check by Ref", () => {
    const { t, dns, stack } = build();
    t.resourceCountIs("AWS::Route53::RecordSet", 2);
    endpoints.forEach((e, i) => {
      t.hasResourceProperties("AWS::Route53::RecordSet", {
        Type: "A",
        ResourceRecords: [e.address],
        SetIdentifier: `blue.example.org#${e.id}`,
        // Ref, not Fn::GetAtt HealthCheckId: the emulator resolves only the former.
        HealthCheckId: { Ref: stack.getLogicalId(dns.healthChecks[i]!) },
      });
    });
  });

  test("identifies each weighted record as the health checker does: <record name>#<endpoint id>", () => {
    const { t } = build({ recordName: "lb" });
    expect(setIdentifiers(t).sort()).toEqual(endpoints.map((e) => setIdentifierFor("lb.example.org.", e.id)));
    expect(setIdentifiers(t).sort()).toEqual([
      "lb.example.org#i-0123456789abcdef0",
      "lb.example.org#i-0123456789abcdef1",
    ]);
  });

  test("joins the record name and an unresolved id (an instance's Ref) in the template", () => {
    const stack = newStack();
    const instance = new ec2.CfnInstance(stack, "Node", { imageId: "ami-12345678" });
    new DnsFailover(stack, "Dns", {
      fleetId: "blue",
      zoneName: "example.org",
      endpoints: [{ id: instance.ref, name: "node-0", address: "198.51.100.10" }],
      healthCheckPort: 80,
      createZone: true,
    });
    expect(setIdentifiers(Template.fromStack(stack))).toEqual([
      { "Fn::Join": ["", ["blue.example.org#", { Ref: stack.getLogicalId(instance) }]] },
    ]);
  });

  test("names each health check after its endpoint's name", () => {
    const { t } = build();
    for (const e of endpoints) {
      t.hasResourceProperties("AWS::Route53::HealthCheck", {
        HealthCheckTags: [{ Key: "Name", Value: `hafleet-blue-${e.name}` }],
      });
    }
  });

  test("weighs every endpoint 100 by default", () => {
    build().t.allResourcesProperties("AWS::Route53::RecordSet", { Weight: 100 });
  });

  test("uses weight when given", () => {
    build({ weight: 0 }).t.allResourcesProperties("AWS::Route53::RecordSet", { Weight: 0 });
  });

  test("gives the records a 10 s TTL by default", () => {
    build().t.allResourcesProperties("AWS::Route53::RecordSet", { TTL: "10" });
  });

  test("uses ttl when given", () => {
    build({ ttl: Duration.minutes(1) }).t.allResourcesProperties("AWS::Route53::RecordSet", { TTL: "60" });
  });

  test("checks each endpoint over TCP on healthCheckPort every 30 s, 3 failures by default", () => {
    const { t } = build();
    t.resourceCountIs("AWS::Route53::HealthCheck", 2);
    for (const e of endpoints) {
      t.hasResourceProperties("AWS::Route53::HealthCheck", {
        HealthCheckConfig: {
          Type: "TCP",
          IPAddress: e.address,
          Port: 80,
          RequestInterval: 30,
          FailureThreshold: 3,
        },
      });
    }
  });

  test("uses healthCheckIntervalS and failureThreshold when given", () => {
    build({ healthCheckIntervalS: 10, failureThreshold: 2 }).t.allResourcesProperties(
      "AWS::Route53::HealthCheck",
      {
        HealthCheckConfig: Match.objectLike({ RequestInterval: 10, FailureThreshold: 2 }),
      },
    );
  });

  test("makes no failover pair by default", () => {
    build().t.allResourcesProperties("AWS::Route53::RecordSet", { Failover: Match.absent() });
  });

  test("makes a PRIMARY/SECONDARY pair at 'app' with secondaryAddresses", () => {
    const { t, stack, dns } = build({ secondaryAddresses: ["192.0.2.10"] });
    t.hasResourceProperties("AWS::Route53::RecordSet", {
      Name: "app.example.org.",
      Type: "A",
      Failover: "PRIMARY",
      SetIdentifier: "app.example.org#primary",
      AliasTarget: {
        DNSName: "blue.example.org.",
        HostedZoneId: stack.resolve(dns.zone.hostedZoneId),
        EvaluateTargetHealth: true,
      },
    });
    t.hasResourceProperties("AWS::Route53::RecordSet", {
      Name: "app.example.org.",
      Failover: "SECONDARY",
      SetIdentifier: "app.example.org#secondary",
      ResourceRecords: ["192.0.2.10"],
    });
  });

  test("names the pair failoverRecordName", () => {
    build({ secondaryAddresses: ["192.0.2.10"], failoverRecordName: "www" }).t.hasResourceProperties(
      "AWS::Route53::RecordSet",
      { Name: "www.example.org.", Failover: "PRIMARY" },
    );
  });

  test("gives every record a SetIdentifier unique in the zone", () => {
    const ids = setIdentifiers(build({ secondaryAddresses: ["192.0.2.10"] }).t);
    expect(ids).toHaveLength(4);
    expect(new Set(ids).size).toBe(4);
  });

  test("gives two fleets in one zone, each with its own recordName, no SetIdentifier in common", () => {
    const stack = newStack();
    for (const [fleetId, failoverRecordName] of [
      ["blue", "app"],
      ["green", "www"],
    ] as const) {
      new DnsFailover(stack, `Dns-${fleetId}`, {
        fleetId,
        zoneName: "example.org",
        hostedZoneId: "Z0123456789ABC",
        // The same endpoint ids in both: the shared address of each.
        endpoints: [{ id: "active", name: "active", address: "198.51.100.10" }],
        healthCheckPort: 80,
        secondaryAddresses: ["192.0.2.10"],
        failoverRecordName,
      });
    }
    const ids = setIdentifiers(Template.fromStack(stack));
    expect(ids).toHaveLength(6);
    expect(new Set(ids).size).toBe(6);
  });

  test("grantWeightChanges lets DELETEs and CREATEs (the checker's compare-and-swap) of A records at recordName through, in this zone only", () => {
    const stack = newStack();
    const dns = new DnsFailover(stack, "Dns", {
      fleetId: "blue",
      zoneName: "example.org",
      endpoints,
      healthCheckPort: 80,
      createZone: true,
    });
    const role = new iam.Role(stack, "Role", { assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com") });
    dns.grantWeightChanges(role);
    const all = statements(Template.fromStack(stack), role);
    const change = all.find((s) => actionsOf(s).includes("route53:ChangeResourceRecordSets"))!;
    expect(change.Condition).toEqual({
      "ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["blue.example.org"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
        "route53:ChangeResourceRecordSetsActions": ["CREATE", "DELETE"],
      },
    });
    expect(JSON.stringify(resourcesOf(change))).toContain(
      JSON.stringify(stack.resolve(dns.zone.hostedZoneId)),
    );
    expect(all.flatMap(resourcesOf)).not.toContain("*");
  });

  describe("refuses", () => {
    test("an empty endpoint list", () => {
      expect(() => build({ endpoints: [] })).toThrow("`endpoints` is empty: the weighted record needs one");
    });

    test("two endpoints with one name", () => {
      expect(() =>
        build({ endpoints: [endpoints[0]!, { id: "i-2", name: "node-0", address: "198.51.100.12" }] }),
      ).toThrow("`endpoints` names 'node-0' twice: names must be unique");
    });

    test("two endpoints with one id, which would share a SetIdentifier", () => {
      expect(() =>
        build({
          endpoints: [endpoints[0]!, { id: endpoints[0]!.id, name: "node-2", address: "198.51.100.12" }],
        }),
      ).toThrow("`endpoints` 'node-2' repeats an `id`: ids must be unique");
    });

    test("two endpoints with one instance's Ref as id", () => {
      const stack = newStack();
      const instance = new ec2.CfnInstance(stack, "Node", { imageId: "ami-12345678" });
      expect(
        () =>
          new DnsFailover(stack, "Dns", {
            fleetId: "blue",
            zoneName: "example.org",
            endpoints: [
              { id: instance.ref, name: "node-0", address: "198.51.100.10" },
              { id: instance.ref, name: "node-1", address: "198.51.100.11" },
            ],
            healthCheckPort: 80,
          }),
      ).toThrow("`endpoints` 'node-1' repeats an `id`: ids must be unique");
    });

    test("an empty id", () => {
      expect(() => build({ endpoints: [{ id: "", name: "node-0", address: "198.51.100.10" }] })).toThrow(
        "`endpoints` 'node-0' has an empty `id`",
      );
    });

    test("a record name that makes a SetIdentifier longer than Route 53 allows", () => {
      const recordName = `${"a".repeat(60)}.${"b".repeat(60)}`;
      expect(() => build({ recordName })).toThrow(
        `SetIdentifier '${recordName}.example.org#i-0123456789abcdef0' is longer than Route 53's 128 ` +
          "characters: shorten `recordName`",
      );
    });

    test("a bad zoneName", () => {
      expect(() => build({ zoneName: "not a domain" })).toThrow(
        "`zoneName` must be a domain name such as example.org (got 'not a domain')",
      );
    });

    test("a weight out of range", () => {
      expect(() => build({ weight: 256 })).toThrow("`weight` must be an integer from 0 to 255 (got 256)");
    });

    test("a health-check interval Route 53 does not offer", () => {
      expect(() => build({ healthCheckIntervalS: 20 as 10 })).toThrow(
        "`healthCheckIntervalS` must be 10 or 30 (got 20)",
      );
    });

    test("a failover pair named like the weighted set", () => {
      expect(() => build({ secondaryAddresses: ["192.0.2.10"], failoverRecordName: "blue" })).toThrow(
        "`failoverRecordName` and `recordName` are both 'blue.example.org': the pair needs a name of its own",
      );
    });

    test("an empty secondaryAddresses", () => {
      expect(() => build({ secondaryAddresses: [] })).toThrow(
        "`secondaryAddresses` is empty: give at least one address, or leave it out for no pair",
      );
    });
  });
});
