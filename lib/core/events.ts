/**
 * The failover audit trail: `event#<ISO time>#<id>` items in the fleet's
 * partition, so a query returns them in time order. Who moved what, why, and
 * under which token. Kept 30 days (TTL).
 *
 * An event is fenced like every other write of a lease holder
 * (docs/architecture.md §6): it is written only while the lease still shows
 * its author (`by`) with its token, in one transaction, so a deposed holder
 * whose late move completed cannot add a `vip-moved` under its stale token
 * (the stack counts those as takeovers).
 */
import { randomBytes } from "node:crypto";
import { FencedError } from "./errors";
import { guardRefusal, leaseGuardItems } from "./fence";
import type { StateStore } from "./store";
import { keys } from "./tables";

export const EVENT_TTL_S = 30 * 24 * 3600;

export interface FleetEvent {
  /** e.g. `lease-acquired`, `vip-moved`, `node-marked-failed`, `weight-changed`. */
  readonly kind: string;
  /** Node or checker id that acted. */
  readonly by: string;
  /** The lease `by` held with `token` when it acted: the event is written only while it still does. */
  readonly lease: string;
  /** The token of that lease. */
  readonly token: number;
  /** Human-readable reason. */
  readonly reason: string;
  readonly detail?: Record<string, unknown>;
}

export interface StoredEvent extends FleetEvent {
  readonly at: string;
  readonly id: string;
}

/**
 * Writes an event, fenced: refused with `FencedError` (and nothing written)
 * unless `event.lease` still shows `event.by` with `event.token`.
 */
export async function appendEvent(
  store: StateStore,
  fleetId: string,
  event: FleetEvent,
  options: { readonly deadlineMs?: number } = {},
): Promise<StoredEvent> {
  const at = new Date(store.clock.wallMs()).toISOString();
  const id = randomBytes(6).toString("hex");
  const stored: StoredEvent = { ...event, at, id };
  const sk = keys.event(at, id);
  const guard = { name: event.lease, holder: event.by, token: event.token };
  const failed = await store.transact(
    [
      ...leaseGuardItems(store, fleetId, guard),
      {
        Put: {
          TableName: store.tableName("state"),
          Item: { pk: keys.fleet(fleetId), sk, ...stored, expiresAt: store.nowS() + EVENT_TTL_S },
          ConditionExpression: "attribute_not_exists(sk)",
        },
      },
    ],
    { deadlineMs: options.deadlineMs },
  );
  if (failed.length > 0)
    throw new FencedError(sk, event.token, guardRefusal(failed, guard, "the event exists"));
  return stored;
}

/** Events in time order, oldest first (or the newest `limit`, newest first). */
export async function listEvents(
  store: StateStore,
  fleetId: string,
  options: { limit?: number; newestFirst?: boolean } = {},
): Promise<StoredEvent[]> {
  const items = await store.query("state", keys.fleet(fleetId), { prefix: "event#", ...options });
  return items.map(({ pk: _pk, sk: _sk, expiresAt: _e, ...rest }) => rest as StoredEvent);
}
