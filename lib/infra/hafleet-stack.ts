/**
 * One fleet in one stack: the state tables, the proxy nodes, their DNS and the
 * control plane, wired together. `bin/app.ts` builds it from CDK context
 * (`lib/infra/app.ts`); tests and other apps can build it directly.
 */
import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Token } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import type { Construct } from "constructs";
import type { FleetConfig } from "../core/config";
import { SHARED_ENDPOINT } from "../core/failover";
import { ControlPlane } from "./control-plane";
import { DnsFailover } from "./dns-failover";
import { ProxyFleet } from "./proxy-fleet";
import { StateTables } from "./state-tables";

/**
 * Route 53 settings of a fleet; see `DnsFailoverProps` for each. The records' TTL and initial weight
 * come from the fleet config's `dns` section, which the health checker also writes them with.
 */
export interface HafleetDnsProps {
  readonly zoneName: string;
  readonly hostedZoneId?: string;
  readonly createZone?: boolean;
  readonly recordName?: string;
  readonly secondaryAddresses?: string[];
  readonly failoverRecordName?: string;
}

export interface HafleetStackProps extends StackProps {
  /**
   * The fleet's id: its partition in the tables, its tag, the prefix of its names.
   * @default "main"
   */
  readonly fleetId?: string;
  /**
   * The validated fleet config; `failover.mode` chooses active-passive or active-active, and `dns` the
   * TTL and initial weight of the weighted records.
   */
  readonly config: FleetConfig;
  /**
   * Route 53 records and health checks for the fleet's addresses. Required in active-active, where
   * DNS is what spreads clients over the nodes.
   * @default none in active-passive: clients use the Elastic IP
   */
  readonly dns?: HafleetDnsProps;
  /** @default see `ProxyFleetProps.nodeCount` */
  readonly nodeCount?: number;
  /** @default see `ProxyFleetProps.instanceType` */
  readonly instanceType?: ec2.InstanceType;
  /** @default see `ProxyFleetProps.machineImage` */
  readonly machineImage?: ec2.IMachineImage;
  /** @default see `ProxyFleetProps.listenerCidrs` */
  readonly listenerCidrs?: string[];
  /**
   * The id of Route 53's health-checker prefix list, opened to the health-checked port when DNS is
   * on and `listenerCidrs` narrows the listeners.
   * @default looked up by its name, `com.amazonaws.<region>.route53-healthchecks` (needs the stack's
   * account and region)
   */
  readonly healthCheckPrefixListId?: string;
  /** @default see `ProxyFleetProps.adminPort` */
  readonly adminPort?: number;
  /** @default see `ProxyFleetProps.accessLog` */
  readonly accessLog?: boolean;
  /** @default see `ProxyFleetProps.vpc` */
  readonly vpc?: ec2.IVpc;
  /** @default see `ProxyFleetProps.maxAzs` */
  readonly maxAzs?: number;
  /** @default see `ProxyFleetProps.natGateways` */
  readonly natGateways?: number;
  /** @default see `ControlPlaneProps.reservedConcurrency` */
  readonly checkerConcurrency?: number;
  /** @default see `ControlPlaneProps.notificationEmails` */
  readonly notificationEmails?: string[];
  /**
   * What happens to the tables, log groups and keys when the stack is destroyed.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /** @default see `ProxyFleetProps.proxyEntry` */
  readonly proxyEntry?: string;
  /** @default see `ControlPlaneProps.checkerEntry` */
  readonly checkerEntry?: string;
}

export class HafleetStack extends Stack {
  readonly tables: StateTables;
  readonly fleet: ProxyFleet;
  readonly dns?: DnsFailover;
  readonly controlPlane: ControlPlane;

  constructor(scope: Construct, id: string, props: HafleetStackProps) {
    super(scope, id, props);
    const fleetId = props.fleetId ?? "main";
    const mode = props.config.failover.mode;
    if (mode === "active-active" && !props.dns) {
      throw new Error(
        "`dns` is required when config failover.mode is 'active-active': weighted Route 53 records are " +
          "what spread clients over the nodes (set the context `zoneName`, and `hostedZoneId` for an existing zone)",
      );
    }
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    this.tables = new StateTables(this, "Tables", { removalPolicy });
    this.fleet = new ProxyFleet(this, "Fleet", {
      fleetId,
      config: props.config,
      tables: this.tables,
      removalPolicy,
      ...pick(props, [
        "vpc",
        "maxAzs",
        "natGateways",
        "nodeCount",
        "instanceType",
        "machineImage",
        "listenerCidrs",
        "adminPort",
        "accessLog",
        "proxyEntry",
      ]),
    });
    if (props.dns) {
      // The endpoint ids the health checker keys the weighted set on: a node's stable name (its user
      // data passes `--node-name`, which a replacement instance keeps, so its record stays), the
      // shared address SHARED_ENDPOINT.
      const endpoints =
        mode === "active-active"
          ? this.fleet.nodes.map((n) => ({ id: n.name, name: n.name, address: n.elasticIp.ref }))
          : [{ id: SHARED_ENDPOINT, name: "active", address: this.fleet.elasticIps[0]!.ref }];
      // TTL and weight from config `dns`, as the checker writes them; `nodeWeights` (by node name)
      // the checker applies at run time.
      this.dns = new DnsFailover(this, "Dns", {
        fleetId,
        ...props.dns,
        endpoints,
        healthCheckPort: props.config.listeners[0]!.port,
        weight: props.config.dns.weight,
        ttl: Duration.seconds(props.config.dns.ttlS),
      });
    }
    if (this.dns && props.listenerCidrs && !props.listenerCidrs.some((c) => c === "0.0.0.0/0")) {
      this.allowRoute53HealthChecks(props.config.listeners[0]!.port, props.healthCheckPrefixListId);
    }
    this.controlPlane = new ControlPlane(this, "ControlPlane", {
      fleet: this.fleet,
      tables: this.tables,
      removalPolicy,
      ...(this.dns ? { dns: this.dns } : {}),
      ...pick(props, ["checkerEntry", "notificationEmails"]),
      ...(props.checkerConcurrency !== undefined ? { reservedConcurrency: props.checkerConcurrency } : {}),
    });

    // What an operator (and `npm run deploy:local`) needs to find the fleet.
    const out = (id: string, value: string, description: string) =>
      new CfnOutput(this, id, { value, description });
    out("FleetId", fleetId, "the fleet's partition in the tables");
    out("Mode", mode, "failover mode");
    out("StateTableName", this.tables.tableNames.state, "HAFLEET_STATE_TABLE");
    out("SessionsTableName", this.tables.tableNames.sessions, "HAFLEET_SESSIONS_TABLE");
    out("ElasticIps", this.fleet.publicAddresses.join(","), "the fleet's public addresses");
    out(
      "AllocationIds",
      this.fleet.elasticIps.map((e) => e.attrAllocationId).join(","),
      "the fleet's Elastic IP allocations",
    );
    out("NodeInstanceIds", this.fleet.nodes.map((n) => n.instance.ref).join(","), "the nodes");
    out("NodeSecurityGroupId", this.fleet.securityGroup.securityGroupId, "the nodes' security group");
    out(
      "CheckerSecurityGroupId",
      this.controlPlane.securityGroup.securityGroupId,
      "the health checker's security group",
    );
    out("HealthCheckerName", this.controlPlane.checker.functionName, "the health-checker Lambda");
    out("NoticeTopicArn", this.controlPlane.topic.topicArn, "failover notices");
    if (this.dns) {
      out("HostedZoneId", this.dns.zone.hostedZoneId, "the zone of the fleet's records");
      out("RecordName", this.dns.recordName, "the weighted record set");
      if (this.dns.failoverRecordName)
        out("FailoverRecordName", this.dns.failoverRecordName, "the failover pair");
    }
  }
  /**
   * Opens the health-checked port to Route 53's health checkers: with `listenerCidrs` narrowed,
   * they could not reach it, and a record whose health check always fails is never answered.
   */
  private allowRoute53HealthChecks(port: number, prefixListId: string | undefined): void {
    this.fleet.securityGroup.addIngressRule(
      ec2.Peer.prefixList(prefixListId ?? route53HealthCheckers(this).prefixListId),
      ec2.Port.tcp(port),
      `port ${port} from Route 53's health checkers`,
    );
  }
}

/** The prefix list of Route 53's health checkers in the stack's region. */
function route53HealthCheckers(stack: Stack): ec2.IPrefixList {
  if (Token.isUnresolved(stack.region) || Token.isUnresolved(stack.account)) {
    throw new Error(
      "`listenerCidrs` narrows the listeners, so Route 53's health checkers need the " +
        "com.amazonaws.<region>.route53-healthchecks prefix list, which is looked up in your account: " +
        "give the stack an account and region (context `account` and `region`, or your credentials), " +
        "or the list's id as `healthCheckPrefixListId`",
    );
  }
  return ec2.PrefixList.fromLookup(stack, "Route53HealthCheckers", {
    prefixListName: `com.amazonaws.${stack.region}.route53-healthchecks`,
  });
}

function pick<T extends object, K extends keyof T>(obj: T, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}
