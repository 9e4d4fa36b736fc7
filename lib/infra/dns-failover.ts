/**
 * Route 53 in front of a fleet: a weighted record per endpoint (a node's Elastic
 * IP in active-active, the one Elastic IP in active-passive), each with its own
 * Route 53 health check, and optionally a PRIMARY/SECONDARY failover pair that
 * sends clients to a second fleet (another region, a static page) when every
 * endpoint of this one is unhealthy.
 *
 * The health checker moves the weights at run time (a failed node to 0, back up
 * with a ramp); Route 53's own health checks are the slower second line that still
 * works when the whole fleet and its control plane are gone.
 *
 * SetIdentifiers are the ones the health checker finds records by
 * (`setIdentifierFor` in lib/core/dns.ts): `<record name>#<endpoint id>` for a
 * weighted record, where the endpoint id is the node's stable name (`node-0`,
 * its `--node-name`, which a replacement instance keeps) or `active`
 * (`SHARED_ENDPOINT`) for the shared address; a record made under any other
 * identifier would stand beside the checker's as a duplicate, and one the
 * checker made itself would have no health check. The failover pair's are `<pair name>#primary` and
 * `<pair name>#secondary`. Each holds its record's name, so each is unique in the
 * zone and not only per name: the emulator deletes by SetIdentifier across names
 * (docs/architecture.md §10).
 */
import { Duration, Stack, Token, Validations } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import * as route53 from "aws-cdk-lib/aws-route53";
import { Construct } from "constructs";
import { setIdentifierFor } from "../core/dns";
import { checkFleetId } from "./state-tables";

/** Route 53's limit on a SetIdentifier's length. */
const MAX_SET_IDENTIFIER_LENGTH = 128;

/** One address behind the weighted record. */
export interface DnsEndpoint {
  /**
   * The id the health checker knows the endpoint by, unique among the endpoints: the node's stable
   * name (`node-0`, its `--node-name`) for a node's own address, `active` (`SHARED_ENDPOINT`) for the
   * fleet's shared one. The record's SetIdentifier is `<record name>#<id>`.
   */
  readonly id: string;
  /** Short name, unique among the endpoints (`node-0`): the health check's Name tag. */
  readonly name: string;
  /** IPv4 address (an Elastic IP's `.ref`). */
  readonly address: string;
}

export interface DnsFailoverProps {
  /**
   * The fleet's id, in the health checks' Name tags. Fleets that share a zone need a `recordName`
   * each: the SetIdentifiers hold the record names, not the fleet ids.
   */
  readonly fleetId: string;
  /** The zone's domain name (`example.org`); also needed to import a zone by id. */
  readonly zoneName: string;
  /**
   * Id of an existing public hosted zone named `zoneName` to put the records in.
   * @default looked up by `zoneName` in the stack's account (needs its account and region), unless
   * `createZone`
   */
  readonly hostedZoneId?: string;
  /**
   * Create a new public hosted zone named `zoneName` (delegate to its name servers yourself). Only
   * for a name nobody hosts yet: a second zone for a domain you already host is never answered.
   * @default false
   */
  readonly createZone?: boolean;
  /**
   * Name of the weighted record set, relative to the zone (`lb` makes `lb.example.org`).
   * @default the fleet id
   */
  readonly recordName?: string;
  /** The endpoints behind the weighted record: at least one. */
  readonly endpoints: DnsEndpoint[];
  /** TCP port that Route 53's health checkers probe on each endpoint: a listener port (the admin port is not public). */
  readonly healthCheckPort: number;
  /**
   * Initial weight of every endpoint (0 to 255); the health checker changes weights at run time,
   * from the fleet config's `dns` section.
   * @default 100
   */
  readonly weight?: number;
  /**
   * TTL of the records: how long a resolver keeps a weight change from clients. The health checker
   * rewrites a weighted record whose TTL differs from the fleet config's `dns.ttlS`.
   * @default 10 seconds (Route 53 bills queries, $0.40 per million; a longer TTL is cheaper and slower)
   */
  readonly ttl?: Duration;
  /**
   * Seconds between Route 53 health checks: 30, or 10 (fast, $1 per check per month more).
   * @default 30
   */
  readonly healthCheckIntervalS?: 10 | 30;
  /**
   * Failed checks in a row that make an endpoint unhealthy (1 to 10).
   * @default 3 (Route 53's default)
   */
  readonly failureThreshold?: number;
  /**
   * Addresses that the SECONDARY record of the failover pair answers with when every endpoint is
   * unhealthy. Setting it creates the pair at `failoverRecordName`.
   * @default no failover pair
   */
  readonly secondaryAddresses?: string[];
  /**
   * Name of the failover pair, relative to the zone; only used with `secondaryAddresses`, and
   * must differ from `recordName`. PRIMARY is an alias of the weighted set that follows its health.
   * @default `app`
   */
  readonly failoverRecordName?: string;
}

export class DnsFailover extends Construct {
  readonly zone: route53.IHostedZone;
  /** Fully qualified name of the weighted set, without the trailing dot. */
  readonly recordName: string;
  /** Fully qualified name of the failover pair, when there is one. */
  readonly failoverRecordName?: string;
  readonly weightedRecords: route53.CfnRecordSet[];
  readonly healthChecks: route53.CfnHealthCheck[];
  readonly failoverRecords: route53.CfnRecordSet[];

  constructor(scope: Construct, id: string, props: DnsFailoverProps) {
    super(scope, id);
    const fleetId = checkFleetId(props.fleetId);
    const zoneName = props.zoneName.replace(/\.$/, "").toLowerCase();
    if (
      Token.isUnresolved(props.zoneName) ||
      !/^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]+$/.test(zoneName)
    ) {
      throw new Error(`\`zoneName\` must be a domain name such as example.org (got '${props.zoneName}')`);
    }
    if (props.endpoints.length === 0) throw new Error("`endpoints` is empty: the weighted record needs one");
    const names = new Set<string>();
    const ids = new Set<string>();
    for (const e of props.endpoints) {
      if (names.has(e.name)) throw new Error(`\`endpoints\` names '${e.name}' twice: names must be unique`);
      names.add(e.name);
      if (e.id === "") throw new Error(`\`endpoints\` '${e.name}' has an empty \`id\``);
      // Tokens compare by their placeholder: the same instance's `.ref` twice is caught too.
      if (ids.has(e.id)) throw new Error(`\`endpoints\` '${e.name}' repeats an \`id\`: ids must be unique`);
      ids.add(e.id);
    }
    const weight = props.weight ?? 100;
    if (!Number.isInteger(weight) || weight < 0 || weight > 255) {
      throw new Error(`\`weight\` must be an integer from 0 to 255 (got ${weight})`);
    }
    const failureThreshold = props.failureThreshold ?? 3;
    if (!Number.isInteger(failureThreshold) || failureThreshold < 1 || failureThreshold > 10) {
      throw new Error(`\`failureThreshold\` must be an integer from 1 to 10 (got ${failureThreshold})`);
    }
    const interval = props.healthCheckIntervalS ?? 30;
    if (interval !== 10 && interval !== 30) {
      throw new Error(`\`healthCheckIntervalS\` must be 10 or 30 (got ${interval})`);
    }
    const port = props.healthCheckPort;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new Error(`\`healthCheckPort\` must be a port number from 1 to 65535 (got ${port})`);
    }
    const ttl = String((props.ttl ?? Duration.seconds(10)).toSeconds());

    this.zone = this.findZone(zoneName, props);
    const fqdn = (relative: string, prop: string) => {
      const name = relative.replace(/\.$/, "").toLowerCase();
      if (!/^[a-z0-9*]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(name)) {
        throw new Error(`\`${prop}\` must be a name relative to the zone such as 'lb' (got '${relative}')`);
      }
      return name.endsWith(`.${zoneName}`) ? name : `${name}.${zoneName}`;
    };
    this.recordName = fqdn(props.recordName ?? fleetId, "recordName");
    // `setIdentifierFor` concatenates: with an unresolved id (an instance's Ref) CDK turns the result
    // into an `Fn::Join`, whose length is only known at deploy.
    const setIdentifier = (name: string, id: string, prop: string) => {
      const value = setIdentifierFor(name, id);
      if (!Token.isUnresolved(value) && value.length > MAX_SET_IDENTIFIER_LENGTH) {
        throw new Error(
          `SetIdentifier '${value}' is longer than Route 53's ${MAX_SET_IDENTIFIER_LENGTH} characters: ` +
            `shorten \`${prop}\``,
        );
      }
      return value;
    };

    this.healthChecks = [];
    this.weightedRecords = props.endpoints.map((endpoint, i) => {
      const healthCheck = new route53.CfnHealthCheck(this, `HealthCheck${i}`, {
        healthCheckConfig: {
          type: "TCP",
          ipAddress: endpoint.address,
          port,
          requestInterval: interval,
          failureThreshold,
        },
        healthCheckTags: [{ key: "Name", value: `hafleet-${fleetId}-${endpoint.name}` }],
      });
      this.healthChecks.push(healthCheck);
      return new route53.CfnRecordSet(this, `Weighted${i}`, {
        hostedZoneId: this.zone.hostedZoneId,
        name: `${this.recordName}.`,
        type: "A",
        ttl,
        resourceRecords: [endpoint.address],
        weight,
        setIdentifier: setIdentifier(this.recordName, endpoint.id, "recordName"),
        // `.ref` is the health check's id on AWS; the emulator has no `Fn::GetAtt HealthCheckId`.
        healthCheckId: healthCheck.ref,
      });
    });

    this.failoverRecords = [];
    if (props.secondaryAddresses) {
      if (props.secondaryAddresses.length === 0) {
        throw new Error(
          "`secondaryAddresses` is empty: give at least one address, or leave it out for no pair",
        );
      }
      this.failoverRecordName = fqdn(props.failoverRecordName ?? "app", "failoverRecordName");
      if (this.failoverRecordName === this.recordName) {
        throw new Error(
          `\`failoverRecordName\` and \`recordName\` are both '${this.recordName}': the pair needs a name of its own`,
        );
      }
      const primary = new route53.CfnRecordSet(this, "Primary", {
        hostedZoneId: this.zone.hostedZoneId,
        name: `${this.failoverRecordName}.`,
        type: "A",
        failover: "PRIMARY",
        setIdentifier: setIdentifier(this.failoverRecordName, "primary", "failoverRecordName"),
        // Healthy while any weighted record is: the per-endpoint health checks decide.
        aliasTarget: {
          dnsName: `${this.recordName}.`,
          hostedZoneId: this.zone.hostedZoneId,
          evaluateTargetHealth: true,
        },
      });
      // cfn-lint 1.58 only accepts the canonical zone ids of AWS services (ELB, CloudFront, ...) in
      // an alias target, but an alias to a record in the same zone takes that zone's own id.
      primary.addMetadata("cfn-lint", { config: { ignore_checks: ["E1041"] } });
      // The alias target must exist before the alias.
      for (const r of this.weightedRecords) primary.node.addDependency(r);
      const secondary = new route53.CfnRecordSet(this, "Secondary", {
        hostedZoneId: this.zone.hostedZoneId,
        name: `${this.failoverRecordName}.`,
        type: "A",
        failover: "SECONDARY",
        setIdentifier: setIdentifier(this.failoverRecordName, "secondary", "failoverRecordName"),
        ttl,
        resourceRecords: props.secondaryAddresses,
      });
      this.failoverRecords.push(primary, secondary);
    }
  }

  /**
   * Lets `grantee` (the health checker) change the weights of this fleet's records: DELETEs and
   * CREATEs of A records named `recordName` only, in this zone only (each batch is a
   * compare-and-swap, a DELETE of the record as it was read and a CREATE of the new one, which
   * Route 53 refuses whole when the DELETE does not match; docs/architecture.md §6); plus reading
   * the zone's records and the state of its own changes, which IAM cannot narrow further.
   */
  grantWeightChanges(grantee: iam.IGrantable): iam.Grant {
    const zoneArn = Stack.of(this).formatArn({
      service: "route53",
      region: "",
      account: "",
      resource: "hostedzone",
      resourceName: this.zone.hostedZoneId,
    });
    // ForAllValues:StringEquals on the normalized names (lower case, no trailing dot), the record
    // types and the actions of the change batch: every change in the batch must match.
    const grant = iam.Grant.addToPrincipal({
      grantee,
      actions: ["route53:ChangeResourceRecordSets"],
      resourceArns: [zoneArn],
      conditions: {
        "ForAllValues:StringEquals": {
          "route53:ChangeResourceRecordSetsNormalizedRecordNames": [this.recordName],
          "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
          "route53:ChangeResourceRecordSetsActions": ["CREATE", "DELETE"],
        },
      },
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["route53:ListResourceRecordSets"],
      resourceArns: [zoneArn],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["route53:GetChange"],
      resourceArns: [
        Stack.of(this).formatArn({
          service: "route53",
          region: "",
          account: "",
          resource: "change",
          resourceName: "*",
        }),
      ],
    });
    if (grantee instanceof Construct) {
      Validations.of(grantee).acknowledge({
        id: "AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:route53:::change/*]",
        reason:
          "route53:GetChange reads the status of a change by the id ChangeResourceRecordSets returns; " +
          "change ids are not known in advance and reveal nothing else.",
      });
    }
    return grant;
  }

  /** The zone of `zoneName`: imported by id, created on request, or looked up in the account. */
  private findZone(zoneName: string, props: DnsFailoverProps): route53.IHostedZone {
    if (props.hostedZoneId && props.createZone) {
      throw new Error("`hostedZoneId` and `createZone` are both set: give one");
    }
    if (props.hostedZoneId) {
      return route53.PublicHostedZone.fromPublicHostedZoneAttributes(this, "Zone", {
        hostedZoneId: props.hostedZoneId,
        zoneName,
      });
    }
    if (props.createZone) return new route53.PublicHostedZone(this, "Zone", { zoneName });
    const stack = Stack.of(this);
    if (Token.isUnresolved(stack.account) || Token.isUnresolved(stack.region)) {
      throw new Error(
        `\`zoneName\` ${zoneName}: give \`hostedZoneId\` (the zone you host it in), or an account and region so ` +
          "that it is looked up, or `createZone` for a new zone that you delegate yourself",
      );
    }
    return route53.HostedZone.fromLookup(this, "Zone", { domainName: zoneName });
  }
}
