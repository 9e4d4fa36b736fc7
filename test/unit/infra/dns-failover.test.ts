import { Duration } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as iam from "aws-cdk-lib/aws-iam";
import { DnsFailover, type DnsFailoverProps } from "../../../lib/infra/dns-failover";
import { actionsOf, newStack, resourcesOf, statements } from "./support";

const endpoints = [
  { name: "node-0", address: "198.51.100.10" },
  { name: "node-1", address: "198.51.100.11" },
];

function build(props: Partial<DnsFailoverProps> = {}) {
  const stack = newStack();
  const dns = new DnsFailover(stack, "Dns", {
    fleetId: "blue",
    zoneName: "example.org",
    endpoints,
    healthCheckPort: 80,
    ...props,
  });
  return { stack, dns, t: Template.fromStack(stack) };
}

describe("DnsFailover", () => {
  test("creates a public hosted zone named zoneName by default", () => {
    const { t } = build();
    t.resourceCountIs("AWS::Route53::HostedZone", 1);
    t.hasResourceProperties("AWS::Route53::HostedZone", { Name: "example.org." });
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
        SetIdentifier: `blue-${e.name}`,
        // Ref, not Fn::GetAtt HealthCheckId: the emulator resolves only the former.
        HealthCheckId: { Ref: stack.getLogicalId(dns.healthChecks[i]!) },
      });
    });
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
      SetIdentifier: "blue-primary",
      AliasTarget: {
        DNSName: "blue.example.org.",
        HostedZoneId: stack.resolve(dns.zone.hostedZoneId),
        EvaluateTargetHealth: true,
      },
    });
    t.hasResourceProperties("AWS::Route53::RecordSet", {
      Name: "app.example.org.",
      Failover: "SECONDARY",
      SetIdentifier: "blue-secondary",
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
    const { t } = build({ secondaryAddresses: ["192.0.2.10"] });
    const ids = Object.values(t.findResources("AWS::Route53::RecordSet")).map(
      (r) => r.Properties.SetIdentifier,
    );
    expect(ids).toHaveLength(4);
    expect(new Set(ids).size).toBe(4);
  });

  test("grantWeightChanges lets UPSERTs of A records at recordName through, in this zone only", () => {
    const stack = newStack();
    const dns = new DnsFailover(stack, "Dns", {
      fleetId: "blue",
      zoneName: "example.org",
      endpoints,
      healthCheckPort: 80,
    });
    const role = new iam.Role(stack, "Role", { assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com") });
    dns.grantWeightChanges(role);
    const all = statements(Template.fromStack(stack), role);
    const change = all.find((s) => actionsOf(s).includes("route53:ChangeResourceRecordSets"))!;
    expect(change.Condition).toEqual({
      "ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["blue.example.org"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
        "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
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
        build({ endpoints: [endpoints[0]!, { name: "node-0", address: "198.51.100.12" }] }),
      ).toThrow("`endpoints` names 'node-0' twice: names must be unique");
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
