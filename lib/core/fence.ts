/**
 * Fenced writes: side effects of a leader, made through the store, stamped
 * with its lease token: the store refuses a token lower than the one
 * recorded (docs/architecture.md §6). A resumed ex-leader (paused past its lease) therefore cannot
 * undo what its successor wrote.
 *
 * Two strengths:
 * - `fencedPut`: refused when the item records a higher token.
 *     condition: attribute_not_exists(sk) OR fenceToken <= :token
 * - with `lease`: also refused unless the lease item still shows this holder
 *   with this token, in one transaction. This closes the window in which a new
 *   leader holds a higher token but has not yet written the item.
 *     ConditionCheck on lease#<name>: holder = :me AND #token = :token
 */
import { FencedError } from "./errors";
import type { Item, StateStore } from "./store";
import { keys } from "./tables";

export interface FencedPutOptions {
  readonly fleetId: string;
  /** Sort key of the item, e.g. `vip#eipalloc-123`. */
  readonly sk: string;
  readonly token: number;
  /** Attributes of the item besides keys and fence fields. */
  readonly attrs: Item;
  /** Require that this lease is still held by `holder` with `token`. */
  readonly lease?: { readonly name: string; readonly holder: string };
  readonly deadlineMs?: number;
}

export const FENCE_ATTRIBUTE = "fenceToken";

/** Writes the item, or throws `FencedError` and changes nothing. */
export async function fencedPut(store: StateStore, o: FencedPutOptions): Promise<void> {
  const pk = keys.fleet(o.fleetId);
  const item = { ...o.attrs, pk, sk: o.sk, [FENCE_ATTRIBUTE]: o.token };
  const condition = {
    ConditionExpression: "attribute_not_exists(sk) OR #fence <= :token",
    ExpressionAttributeNames: { "#fence": FENCE_ATTRIBUTE },
    ExpressionAttributeValues: { ":token": o.token },
  };
  if (!o.lease) {
    const ok = await store.put(
      "state",
      item,
      {
        condition: condition.ConditionExpression,
        names: condition.ExpressionAttributeNames,
        values: condition.ExpressionAttributeValues,
      },
      { deadlineMs: o.deadlineMs },
    );
    if (!ok) throw new FencedError(o.sk, o.token, "a higher token is recorded on the item");
    return;
  }
  const failed = await store.transact(
    [
      {
        ConditionCheck: {
          TableName: store.tableName("state"),
          Key: { pk, sk: keys.lease(o.lease.name) },
          ConditionExpression: "holder = :me AND #token = :token",
          ExpressionAttributeNames: { "#token": "token" },
          ExpressionAttributeValues: { ":me": o.lease.holder, ":token": o.token },
        },
      },
      { Put: { TableName: store.tableName("state"), Item: item, ...condition } },
    ],
    { deadlineMs: o.deadlineMs },
  );
  if (failed.length === 0) return;
  const why = failed.includes(0)
    ? `lease '${o.lease.name}' is no longer held by ${o.lease.holder} with this token`
    : failed.includes(1)
      ? "a higher token is recorded on the item"
      : "the lease or the item moved on";
  throw new FencedError(o.sk, o.token, why);
}

export interface LeaseGuard {
  readonly name: string;
  readonly holder: string;
  readonly token: number;
}

/**
 * Updates an item only while `guard`'s lease is held by its holder with its
 * token, in one transaction; throws `FencedError` otherwise (nothing changed).
 * For writers whose item carries no token of its own, e.g. the checker's
 * `failed` mark on a `node#` item.
 */
export async function leaseGuardedUpdate(
  store: StateStore,
  o: {
    readonly fleetId: string;
    readonly sk: string;
    /** e.g. `SET failed = :f` */
    readonly update: string;
    readonly names?: Record<string, string>;
    readonly values?: Record<string, unknown>;
    readonly guard: LeaseGuard;
  },
): Promise<void> {
  const pk = keys.fleet(o.fleetId);
  const failed = await store.transact([
    {
      ConditionCheck: {
        TableName: store.tableName("state"),
        Key: { pk, sk: keys.lease(o.guard.name) },
        ConditionExpression: "holder = :guardHolder AND #guardToken = :guardToken",
        ExpressionAttributeNames: { "#guardToken": "token" },
        ExpressionAttributeValues: { ":guardHolder": o.guard.holder, ":guardToken": o.guard.token },
      },
    },
    {
      Update: {
        TableName: store.tableName("state"),
        Key: { pk, sk: o.sk },
        UpdateExpression: o.update,
        ConditionExpression: "attribute_exists(sk)",
        ...(o.names && Object.keys(o.names).length > 0 ? { ExpressionAttributeNames: o.names } : {}),
        ...(o.values && Object.keys(o.values).length > 0 ? { ExpressionAttributeValues: o.values } : {}),
      },
    },
  ]);
  if (failed.length === 0) return;
  throw new FencedError(
    o.sk,
    o.guard.token,
    failed.includes(1)
      ? "the item does not exist"
      : `lease '${o.guard.name}' is no longer held by ${o.guard.holder} with this token`,
  );
}
