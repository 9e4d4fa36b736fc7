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
 *
 * Every write guarded by a lease also raises the fleet's token floor (the
 * `tokens` item, one attribute per lease) to its token in the same
 * transaction, so that a lease item deleted and created anew starts above
 * every token recorded under it (docs/architecture.md §3):
 *     Update tokens: SET #lease = :token
 *       condition: attribute_not_exists(#lease) OR #lease <= :token
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

/** The attribute of the `tokens` item that holds lease `name`'s floor. */
export function floorAttribute(name: string): string {
  return keys.lease(name);
}

/**
 * The two items every lease-guarded transaction carries: the check that the
 * lease still shows `guard`'s holder with its token, and the raise of the
 * token floor to that token.
 */
export function leaseGuardItems(store: StateStore, fleetId: string, guard: LeaseGuard) {
  const pk = keys.fleet(fleetId);
  return [
    {
      ConditionCheck: {
        TableName: store.tableName("state"),
        Key: { pk, sk: keys.lease(guard.name) },
        ConditionExpression: "holder = :guardHolder AND #guardToken = :guardToken",
        ExpressionAttributeNames: { "#guardToken": "token" },
        ExpressionAttributeValues: { ":guardHolder": guard.holder, ":guardToken": guard.token },
      },
    },
    {
      Update: {
        TableName: store.tableName("state"),
        Key: { pk, sk: keys.tokens },
        UpdateExpression: "SET #floor = :floorToken",
        ConditionExpression: "attribute_not_exists(#floor) OR #floor <= :floorToken",
        ExpressionAttributeNames: { "#floor": floorAttribute(guard.name) },
        ExpressionAttributeValues: { ":floorToken": guard.token },
      },
    },
  ];
}

/** Why a lease-guarded transaction was refused, from the indexes of its failed conditions. */
export function guardRefusal(failed: readonly number[], guard: LeaseGuard, itemWhy: string): string {
  if (failed.includes(0)) return `lease '${guard.name}' is no longer held by ${guard.holder} with this token`;
  if (failed.includes(1)) return `the fleet has recorded a higher token under lease '${guard.name}'`;
  if (failed.includes(2)) return itemWhy;
  return "the lease or the item moved on";
}

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
  const guard = { name: o.lease.name, holder: o.lease.holder, token: o.token };
  const failed = await store.transact(
    [
      ...leaseGuardItems(store, o.fleetId, guard),
      { Put: { TableName: store.tableName("state"), Item: item, ...condition } },
    ],
    { deadlineMs: o.deadlineMs },
  );
  if (failed.length === 0) return;
  throw new FencedError(o.sk, o.token, guardRefusal(failed, guard, "a higher token is recorded on the item"));
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
    ...leaseGuardItems(store, o.fleetId, o.guard),
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
  throw new FencedError(o.sk, o.guard.token, guardRefusal(failed, o.guard, "the item does not exist"));
}
