/**
 * The `vip#<allocationId>` items (docs/architecture.md §2): the desired owner
 * of an Elastic IP, written fenced by the fleet lease holder (§6). One reader
 * for the agent, the checker and the status.
 */
import type { VipDesired } from "./failover";
import { FENCE_ATTRIBUTE } from "./fence";
import type { Item, StateStore } from "./store";
import { keys } from "./tables";

/** A `vip#` item as its readers use it; a missing field reads as empty (owner, instance) or 0 (token). */
export function readVip(item: Item): VipDesired {
  return {
    allocationId: String(item.allocationId ?? String(item.sk).slice(keys.vip("").length)),
    owner: String(item.owner ?? ""),
    instanceId: String(item.instanceId ?? ""),
    token: Number(item[FENCE_ATTRIBUTE] ?? 0),
  };
}

/** The recorded owner of one Elastic IP, read strongly consistent; undefined when none is recorded. */
export async function getVip(
  store: StateStore,
  fleetId: string,
  allocationId: string,
): Promise<VipDesired | undefined> {
  const item = await store.get("state", { pk: keys.fleet(fleetId), sk: keys.vip(allocationId) });
  return item ? readVip(item) : undefined;
}

/** Every Elastic IP owner the fleet has recorded. */
export async function listVips(store: StateStore, fleetId: string): Promise<VipDesired[]> {
  return (await store.query("state", keys.fleet(fleetId), { prefix: keys.vip("") })).map(readVip);
}
