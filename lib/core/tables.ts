/**
 * The two DynamoDB tables and their item keys (docs/architecture.md §2).
 * The CDK construct `StateTables` deploys the same definitions;
 * `ensureTables` creates them for local mode and tests.
 */
import {
  CreateTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  ResourceInUseException,
  UpdateContinuousBackupsCommand,
  UpdateTimeToLiveCommand,
} from "@aws-sdk/client-dynamodb";

export interface TableNames {
  /** pk, sk: config, leases, nodes, desired Elastic IP and DNS state, events. */
  readonly state: string;
  /** pk, sk: sticky session and connection mappings. */
  readonly sessions: string;
}

/** `HAFLEET_STATE_TABLE` and `HAFLEET_SESSIONS_TABLE`, or the names the CDK stacks use by default. */
export function tableNamesFromEnv(env: NodeJS.ProcessEnv = process.env): TableNames {
  return {
    state: env.HAFLEET_STATE_TABLE || "hafleet-state",
    sessions: env.HAFLEET_SESSIONS_TABLE || "hafleet-sessions",
  };
}

/** The TTL attribute of both tables: epoch seconds. Reads filter on it themselves (TTL deletes lazily). */
export const TTL_ATTRIBUTE = "expiresAt";

/** Item keys. One partition per fleet in `State`; one per fleet and listener in `Sessions`. */
export const keys = {
  fleet: (fleetId: string) => `fleet#${fleetId}`,
  config: "config",
  lease: (name: string) => `lease#${name}`,
  /** The token floor: per lease, the highest token recorded under it (docs/architecture.md §3). */
  tokens: "tokens",
  node: (nodeId: string) => `node#${nodeId}`,
  vip: (allocationId: string) => `vip#${allocationId}`,
  dns: (record: string) => `dns#${record}`,
  /** Sorts by time: `event#<ISO time>#<id>`. */
  event: (isoTime: string, id: string) => `event#${isoTime}#${id}`,
  sessions: (fleetId: string, listener: string) => `fleet#${fleetId}#${listener}`,
} as const;

/** Creates both tables (on demand, TTL, point-in-time recovery) unless they exist; waits until active. */
export async function ensureTables(ddb: DynamoDBClient, names: TableNames): Promise<void> {
  for (const table of [names.state, names.sessions]) {
    try {
      await ddb.send(
        new CreateTableCommand({
          TableName: table,
          BillingMode: "PAY_PER_REQUEST",
          AttributeDefinitions: [
            { AttributeName: "pk", AttributeType: "S" },
            { AttributeName: "sk", AttributeType: "S" },
          ],
          KeySchema: [
            { AttributeName: "pk", KeyType: "HASH" },
            { AttributeName: "sk", KeyType: "RANGE" },
          ],
          SSESpecification: { Enabled: true },
        }),
      );
    } catch (err) {
      if (!(err instanceof ResourceInUseException)) throw err;
    }
    for (let i = 0; i < 100; i++) {
      const d = await ddb.send(new DescribeTableCommand({ TableName: table }));
      if (d.Table?.TableStatus === "ACTIVE") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await ddb
      .send(
        new UpdateTimeToLiveCommand({
          TableName: table,
          TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
        }),
      )
      .catch((err: Error) => {
        // Already enabled is fine; anything else is not.
        if (!/already enabled/i.test(err.message)) throw err;
      });
    await ddb.send(
      new UpdateContinuousBackupsCommand({
        TableName: table,
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      }),
    );
  }
}
