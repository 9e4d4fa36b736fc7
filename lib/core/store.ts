/**
 * Typed access to the `State` and `Sessions` tables. What it adds to the SDK:
 *
 * 1. AWS errors become `StoreError`s with stable codes (`errors.ts`); callers
 *    branch on `code` or `retryable`, never on AWS error names.
 * 2. Throttling, 5xx and timeouts (only those) are retried with full-jitter
 *    backoff, each attempt bounded by `attemptTimeoutMs` and all of them by the
 *    caller's `deadlineMs`. The SDK's own retries are off (`maxAttempts: 1`)
 *    so that the lease code controls how long a call may take.
 * 3. A failed condition is an answer, not an error: `put` returns false and
 *    `update` returns undefined.
 * 4. Every read filters items whose TTL (`expiresAt`, epoch seconds) has
 *    passed: DynamoDB deletes them lazily (hours late on AWS, never on moto).
 *
 * A retried conditional write whose first answer was lost may report a failed
 * condition although the first attempt succeeded. Callers that care write a
 * unique value (the lease's `rvn`, the config's `writeId`) and re-read.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  TransactWriteCommand,
  type TransactWriteCommandInput,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import { type AwsClientOptions, awsClientConfig, describeAwsFailure } from "./aws";
import { type Clock, systemClock } from "./clock";
import { type HafleetErrorCode, StoreError } from "./errors";
import { checkRetryPolicy, DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from "./retry";
import { type TableNames, TTL_ATTRIBUTE, tableNamesFromEnv } from "./tables";

// biome-ignore lint/suspicious/noExplicitAny: DynamoDB items are open maps
export type Item = Record<string, any>;
export type Key = { pk: string; sk: string };
type TableRef = keyof TableNames;

export interface Expression {
  /** e.g. `attribute_not_exists(sk) OR fenceToken <= :token` */
  readonly condition?: string;
  readonly names?: Record<string, string>;
  readonly values?: Record<string, unknown>;
}

export interface CallOptions {
  /** The whole call, retries included, ends after this many ms. @default no deadline beyond the attempts */
  readonly deadlineMs?: number;
}

export interface StateStoreOptions {
  /** @default `tableNamesFromEnv()` */
  readonly tables?: TableNames;
  /** An existing client (its own settings apply). @default a client from `aws` */
  readonly client?: DynamoDBClient;
  /** Settings of the client made when `client` is not given. */
  readonly aws?: AwsClientOptions;
  /** @default `DEFAULT_RETRY_POLICY` (4 attempts, 25 ms base, 1 s cap) */
  readonly retry?: Partial<RetryPolicy>;
  /** One attempt is aborted after this long. @default 2000 */
  readonly attemptTimeoutMs?: number;
  /** @default `systemClock` */
  readonly clock?: Clock;
}

export class StateStore {
  readonly tables: TableNames;
  readonly clock: Clock;
  readonly client: DynamoDBClient;
  private readonly doc: DynamoDBDocumentClient;
  private readonly retry: RetryPolicy;
  private readonly attemptTimeoutMs: number;
  private readonly ownsClient: boolean;

  constructor(options: StateStoreOptions = {}) {
    this.tables = options.tables ?? tableNamesFromEnv();
    this.clock = options.clock ?? systemClock;
    this.retry = checkRetryPolicy({ ...DEFAULT_RETRY_POLICY, ...options.retry });
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 2000;
    this.ownsClient = !options.client;
    this.client =
      options.client ??
      new DynamoDBClient(
        awsClientConfig({ maxAttempts: 1, requestTimeoutMs: this.attemptTimeoutMs, ...options.aws }),
      );
    this.doc = DynamoDBDocumentClient.from(this.client, {
      marshallOptions: { removeUndefinedValues: true, convertClassInstanceToMap: false },
    });
  }

  /** Reads one item; undefined when absent or expired. Strongly consistent unless told otherwise. */
  async get(table: TableRef, key: Key, options: CallOptions & { consistent?: boolean } = {}) {
    const out = await this.call("GetItem", table, options, (signal) =>
      this.doc.send(
        new GetCommand({
          TableName: this.tables[table],
          Key: key,
          ConsistentRead: options.consistent ?? true,
        }),
        { abortSignal: signal },
      ),
    );
    return this.live(out.Item);
  }

  /** Writes an item; false when `condition` failed. */
  async put(table: TableRef, item: Item, expr: Expression = {}, options: CallOptions = {}): Promise<boolean> {
    return this.conditional(() =>
      this.call("PutItem", table, options, (signal) =>
        this.doc.send(
          new PutCommand({
            TableName: this.tables[table],
            Item: item,
            ConditionExpression: expr.condition,
            ExpressionAttributeNames: nonEmpty(expr.names),
            ExpressionAttributeValues: nonEmpty(expr.values),
          }),
          { abortSignal: signal },
        ),
      ),
    );
  }

  /** Updates an item and returns it as it is after the update; undefined when `condition` failed. */
  async update(
    table: TableRef,
    key: Key,
    update: string,
    expr: Expression = {},
    options: CallOptions = {},
  ): Promise<Item | undefined> {
    try {
      const out = await this.call("UpdateItem", table, options, (signal) =>
        this.doc.send(
          new UpdateCommand({
            TableName: this.tables[table],
            Key: key,
            UpdateExpression: update,
            ConditionExpression: expr.condition,
            ExpressionAttributeNames: nonEmpty(expr.names),
            ExpressionAttributeValues: nonEmpty(expr.values),
            ReturnValues: "ALL_NEW",
          }),
          { abortSignal: signal },
        ),
      );
      return out.Attributes ?? {};
    } catch (err) {
      if (isConditionFailed(err)) return undefined;
      throw err;
    }
  }

  /** Deletes an item; false when `condition` failed. */
  async delete(
    table: TableRef,
    key: Key,
    expr: Expression = {},
    options: CallOptions = {},
  ): Promise<boolean> {
    return this.conditional(() =>
      this.call("DeleteItem", table, options, (signal) =>
        this.doc.send(
          new DeleteCommand({
            TableName: this.tables[table],
            Key: key,
            ConditionExpression: expr.condition,
            ExpressionAttributeNames: nonEmpty(expr.names),
            ExpressionAttributeValues: nonEmpty(expr.values),
          }),
          { abortSignal: signal },
        ),
      ),
    );
  }

  /** Runs a conditional write: true when written, false when its condition failed. */
  private async conditional(write: () => Promise<unknown>): Promise<boolean> {
    try {
      await write();
      return true;
    } catch (err) {
      if (isConditionFailed(err)) return false;
      throw err;
    }
  }

  /** Every live item of a partition whose sort key starts with `prefix`, in sort-key order. */
  async query(
    table: TableRef,
    pk: string,
    options: CallOptions & {
      prefix?: string;
      consistent?: boolean;
      limit?: number;
      newestFirst?: boolean;
    } = {},
  ): Promise<Item[]> {
    const items: Item[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.call("Query", table, options, (signal) =>
        this.doc.send(
          new QueryCommand({
            TableName: this.tables[table],
            KeyConditionExpression: options.prefix ? "pk = :pk AND begins_with(sk, :prefix)" : "pk = :pk",
            ExpressionAttributeValues: {
              ":pk": pk,
              ...(options.prefix ? { ":prefix": options.prefix } : {}),
            },
            ConsistentRead: options.consistent ?? true,
            ScanIndexForward: !options.newestFirst,
            ExclusiveStartKey: start,
            Limit: options.limit,
          }),
          { abortSignal: signal },
        ),
      );
      for (const item of out.Items ?? []) {
        if (this.live(item)) items.push(item);
      }
      start = out.LastEvaluatedKey;
    } while (start && (options.limit === undefined || items.length < options.limit));
    return options.limit === undefined ? items : items.slice(0, options.limit);
  }

  /**
   * Writes several items atomically. Returns the index of each condition that
   * failed (empty when everything was written).
   */
  async transact(
    items: NonNullable<TransactWriteCommandInput["TransactItems"]>,
    options: CallOptions = {},
  ): Promise<number[]> {
    try {
      await this.call("TransactWriteItems", "state", options, (signal) =>
        this.doc.send(new TransactWriteCommand({ TransactItems: items }), { abortSignal: signal }),
      );
      return [];
    } catch (err) {
      if ((err as Error).name !== "TransactionCanceledException") throw err;
      const reasons = (err as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
      const failed = reasons
        .map((r, i) => (r.Code === "ConditionalCheckFailed" ? i : -1))
        .filter((i) => i >= 0);
      // The emulator may omit reasons; a cancelled transaction of conditional writes failed a condition.
      return failed.length > 0 ? failed : [-1];
    }
  }

  /** The table's name, for building transaction items. */
  tableName(table: TableRef): string {
    return this.tables[table];
  }

  /** Epoch seconds now, by the injected wall clock (TTL comparisons). */
  nowS(): number {
    return Math.floor(this.clock.wallMs() / 1000);
  }

  destroy(): void {
    if (this.ownsClient) this.client.destroy();
  }

  private live(item: Item | undefined): Item | undefined {
    if (!item) return undefined;
    const ttl = item[TTL_ATTRIBUTE];
    if (typeof ttl === "number" && ttl <= this.nowS()) return undefined;
    return item;
  }

  private async call<T>(
    operation: string,
    table: TableRef,
    options: CallOptions,
    send: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const deadlineAtMs =
      options.deadlineMs === undefined ? undefined : this.clock.nowMs() + options.deadlineMs;
    return withRetry(
      async () => {
        const left = deadlineAtMs === undefined ? this.attemptTimeoutMs : deadlineAtMs - this.clock.nowMs();
        if (left <= 0) {
          throw new StoreError(
            "HAFLEET_STORE_UNAVAILABLE",
            operation,
            "deadline passed before the call",
            true,
          );
        }
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), Math.min(left, this.attemptTimeoutMs));
        try {
          return await send(controller.signal);
        } catch (err) {
          if (isConditionFailed(err) || isCancelledByCondition(err)) throw err;
          throw translateAwsError(err, operation, this.tables[table], controller.signal.aborted);
        } finally {
          clearTimeout(timer);
        }
      },
      {
        policy: this.retry,
        clock: this.clock,
        deadlineAtMs,
        isRetryable: (err) => err instanceof StoreError && err.retryable,
      },
    );
  }
}

/** DynamoDB refuses empty expression maps: send none instead. */
function nonEmpty<T extends Record<string, unknown>>(map: T | undefined): T | undefined {
  return map && Object.keys(map).length > 0 ? map : undefined;
}

export function isConditionFailed(err: unknown): boolean {
  return (err as Error | undefined)?.name === "ConditionalCheckFailedException";
}

/** A transaction cancelled by a failed condition (not by a conflict, which is retryable). */
function isCancelledByCondition(err: unknown): boolean {
  const e = err as Error & { CancellationReasons?: { Code?: string }[] };
  if (e?.name !== "TransactionCanceledException") return false;
  const codes = (e.CancellationReasons ?? []).map((r) => r.Code);
  return !codes.some(
    (c) => c === "TransactionConflict" || c === "ThrottlingError" || c === "ProvisionedThroughputExceeded",
  );
}

/** Turns an AWS SDK (or network) error into a `StoreError` with a stable code. */
export function translateAwsError(
  err: unknown,
  operation: string,
  table: string,
  timedOut = false,
): StoreError {
  if (err instanceof StoreError) return err;
  const f = describeAwsFailure(err);
  const [code, message]: [HafleetErrorCode, string] = (() => {
    switch (timedOut ? "timeout" : f.kind) {
      case "timeout":
        return ["HAFLEET_STORE_UNAVAILABLE", `no answer from DynamoDB in time (${f.detail})`];
      case "throttled":
        return ["HAFLEET_STORE_THROTTLED", `throttled on table ${table} (${f.detail})`];
      case "not-found":
        return ["HAFLEET_STORE_TABLE_MISSING", `table ${table} does not exist (${f.detail})`];
      case "denied":
        return ["HAFLEET_STORE_ACCESS_DENIED", `access to table ${table} denied (${f.detail})`];
      case "invalid":
        return ["HAFLEET_STORE_REQUEST_INVALID", `request on table ${table} rejected (${f.detail})`];
      case "server":
        return ["HAFLEET_STORE_UNAVAILABLE", `DynamoDB failed (${f.detail})`];
      case "network":
        return ["HAFLEET_STORE_UNAVAILABLE", `DynamoDB unreachable (${f.detail})`];
      default:
        return ["HAFLEET_STORE", f.detail];
    }
  })();
  return new StoreError(code, operation, message, timedOut || f.retryable, err);
}
