/**
 * The two DynamoDB tables of hafleet (docs/architecture.md §2, and
 * `lib/core/tables.ts`): `State` (pk `fleet#<fleetId>`, sk) and `Sessions`
 * (pk `fleet#<fleetId>#<listener>`, sk). Several fleets may share the tables;
 * the `grant*` methods give a principal one fleet's partitions only.
 */

import { RemovalPolicy, Token } from "aws-cdk-lib";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as kms from "aws-cdk-lib/aws-kms";
import { Construct } from "constructs";
import { NAME_PATTERN } from "../core/config";
import { keys, type TableNames, TTL_ATTRIBUTE } from "../core/tables";

export interface StateTablesProps {
  /**
   * Name of the `State` table.
   * @default a name CloudFormation generates, so that several stacks can live in one account;
   * the nodes and the checker get the real name through their environment either way.
   */
  readonly stateTableName?: string;
  /**
   * Name of the `Sessions` table.
   * @default a name CloudFormation generates, as for `stateTableName`.
   */
  readonly sessionsTableName?: string;
  /**
   * What happens to both tables when they leave the stack (or the stack is destroyed).
   * @default RemovalPolicy.RETAIN: leases, config and sessions outlive a mistaken `cdk destroy`;
   * use DESTROY only for throw-away stacks such as the emulator's.
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Customer-managed KMS key that encrypts both tables; the `grant*` methods then also grant
   * the key's use to the same principal.
   * @default the AWS-managed key `aws/dynamodb` (encrypted at rest, every use visible in CloudTrail,
   * nothing to rotate or pay for)
   */
  readonly encryptionKey?: kms.IKey;
}

/** Actions that always name one partition key, so that `dynamodb:LeadingKeys` restricts them. */
const READ_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:BatchGetItem",
  "dynamodb:Query",
  "dynamodb:ConditionCheckItem",
];
const WRITE_ACTIONS = [
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:BatchWriteItem",
];

/** Fleet ids end up in IAM conditions: no wildcard characters (`*`, `?`) and no `#`, by construction. */
const FLEET_ID = NAME_PATTERN;

export class StateTables extends Construct {
  /** `State`: config, leases, nodes, desired Elastic IP and DNS state, audit events. */
  readonly state: dynamodb.Table;
  /** `Sessions`: sticky session and connection mappings. */
  readonly sessions: dynamodb.Table;
  /** The two names (tokens until deploy), in the form `lib/core/tables.ts` reads. */
  readonly tableNames: TableNames;
  private readonly encryptionKey?: kms.IKey;

  constructor(scope: Construct, id: string, props: StateTablesProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.encryptionKey = props.encryptionKey;
    const common: dynamodb.TableProps = {
      partitionKey: { name: "pk", type: dynamodb.AttributeType.STRING },
      sortKey: { name: "sk", type: dynamodb.AttributeType.STRING },
      // On demand: a fleet's load is a few writes per node per second, bursty on failover;
      // provisioned capacity would either throttle the failover or pay for idle headroom.
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: TTL_ATTRIBUTE,
      encryption: props.encryptionKey
        ? dynamodb.TableEncryption.CUSTOMER_MANAGED
        : dynamodb.TableEncryption.AWS_MANAGED,
      ...(props.encryptionKey ? { encryptionKey: props.encryptionKey } : {}),
      removalPolicy,
      // Tables kept by the stack are also kept from a console slip; a stack that is told to
      // delete them (RemovalPolicy.DESTROY) must be able to.
      deletionProtection: removalPolicy !== RemovalPolicy.DESTROY,
    };
    this.state = new dynamodb.Table(this, "State", {
      ...common,
      ...(props.stateTableName ? { tableName: props.stateTableName } : {}),
    });
    this.sessions = new dynamodb.Table(this, "Sessions", {
      ...common,
      ...(props.sessionsTableName ? { tableName: props.sessionsTableName } : {}),
    });
    this.tableNames = { state: this.state.tableName, sessions: this.sessions.tableName };
  }

  /** Lets `grantee` read the items of fleet `fleetId` in `State`, and nothing else there. */
  grantStateRead(grantee: iam.IGrantable, fleetId: string): iam.Grant {
    return this.grantPartition(
      grantee,
      this.state,
      READ_ACTIONS,
      "StringEquals",
      keys.fleet(checkFleetId(fleetId)),
    );
  }

  /** Lets `grantee` read and write the items of fleet `fleetId` in `State`, and nothing else there. */
  grantStateReadWrite(grantee: iam.IGrantable, fleetId: string): iam.Grant {
    return this.grantPartition(
      grantee,
      this.state,
      [...READ_ACTIONS, ...WRITE_ACTIONS],
      "StringEquals",
      keys.fleet(checkFleetId(fleetId)),
    );
  }

  /** Lets `grantee` read the sessions of every listener of fleet `fleetId`, and nothing else. */
  grantSessionsRead(grantee: iam.IGrantable, fleetId: string): iam.Grant {
    // Listeners come and go with config changes at run time: match them all with `*`.
    return this.grantPartition(
      grantee,
      this.sessions,
      READ_ACTIONS,
      "StringLike",
      keys.sessions(checkFleetId(fleetId), "*"),
    );
  }

  /** Lets `grantee` read and write the sessions of every listener of fleet `fleetId`, and nothing else. */
  grantSessionsReadWrite(grantee: iam.IGrantable, fleetId: string): iam.Grant {
    return this.grantPartition(
      grantee,
      this.sessions,
      [...READ_ACTIONS, ...WRITE_ACTIONS],
      "StringLike",
      keys.sessions(checkFleetId(fleetId), "*"),
    );
  }

  private grantPartition(
    grantee: iam.IGrantable,
    table: dynamodb.Table,
    actions: string[],
    operator: "StringEquals" | "StringLike",
    partitionKey: string,
  ): iam.Grant {
    // The condition, written out:
    //   ForAllValues:<operator> { dynamodb:LeadingKeys: [partitionKey] }  every key touched is the fleet's
    //   Null { dynamodb:LeadingKeys: false }                              and there is a key at all
    // ForAllValues is true on an empty set, so without the Null check a request that names no
    // partition key would pass; that is also why Scan and DescribeTable (which name none) are
    // never granted.
    const grant = iam.Grant.addToPrincipal({
      grantee,
      actions,
      resourceArns: [table.tableArn],
      conditions: {
        [`ForAllValues:${operator}`]: { "dynamodb:LeadingKeys": [partitionKey] },
        Null: { "dynamodb:LeadingKeys": "false" },
      },
    });
    if (this.encryptionKey) {
      if (actions.some((a) => WRITE_ACTIONS.includes(a))) this.encryptionKey.grantEncryptDecrypt(grantee);
      else this.encryptionKey.grantDecrypt(grantee);
    }
    return grant;
  }
}

/** Throws unless `fleetId` is a literal that is safe inside an IAM condition. */
export function checkFleetId(fleetId: string, prop = "fleetId"): string {
  if (Token.isUnresolved(fleetId) || !FLEET_ID.test(fleetId)) {
    throw new Error(
      `\`${prop}\` must be 1-63 lowercase letters, digits or '-', starting with a letter or digit (got '${fleetId}')`,
    );
  }
  return fleetId;
}
