/** Per-test AWS resources on the emulator: fresh tables, a store on them, unique ids. */
import { randomBytes } from "node:crypto";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { awsClientConfig } from "../../lib/core/aws";
import { StateStore, type StateStoreOptions } from "../../lib/core/store";
import { ensureTables, type TableNames } from "../../lib/core/tables";

/**
 * The emulator itself, past the realistic proxy when one runs (jest global
 * setup): what the network and DNS see, as opposed to what the AWS API says.
 */
export function emulatorEndpoint(): string {
  const endpoint = process.env.HAFLEET_EMULATOR_ENDPOINT ?? process.env.AWS_ENDPOINT_URL;
  if (!endpoint) throw new Error("no emulator: AWS_ENDPOINT_URL is not set (jest global setup sets it)");
  return endpoint;
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Creates a fresh pair of tables (named uniquely) on the emulator. */
export async function freshTables(): Promise<TableNames> {
  const names = { state: uniqueId("state"), sessions: uniqueId("sessions") };
  const client = new DynamoDBClient(awsClientConfig());
  try {
    await ensureTables(client, names);
  } finally {
    client.destroy();
  }
  return names;
}

/** A store on `tables`; through `endpoint` (e.g. a fault proxy) when given. */
export function storeOn(tables: TableNames, endpoint?: string, options: StateStoreOptions = {}): StateStore {
  return new StateStore({ tables, ...options, aws: { ...(endpoint ? { endpoint } : {}), ...options.aws } });
}
