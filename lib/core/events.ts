/**
 * The failover audit trail: `event#<ISO time>#<id>` items in the fleet's
 * partition, so a query returns them in time order. Who moved what, why, and
 * under which token. Kept 30 days (TTL).
 */
import { randomBytes } from "node:crypto";
import type { StateStore } from "./store";
import { keys } from "./tables";

export const EVENT_TTL_S = 30 * 24 * 3600;

export interface FleetEvent {
  /** e.g. `lease-acquired`, `vip-moved`, `node-marked-failed`, `weight-changed`. */
  readonly kind: string;
  /** Node or checker id that acted. */
  readonly by: string;
  /** Lease token the action was fenced with, when any. */
  readonly token?: number;
  /** Human-readable reason. */
  readonly reason: string;
  readonly detail?: Record<string, unknown>;
}

export interface StoredEvent extends FleetEvent {
  readonly at: string;
  readonly id: string;
}

export async function appendEvent(
  store: StateStore,
  fleetId: string,
  event: FleetEvent,
): Promise<StoredEvent> {
  const at = new Date(store.clock.wallMs()).toISOString();
  const id = randomBytes(6).toString("hex");
  const stored: StoredEvent = { ...event, at, id };
  await store.put("state", {
    pk: keys.fleet(fleetId),
    sk: keys.event(at, id),
    ...stored,
    expiresAt: store.nowS() + EVENT_TTL_S,
  });
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
