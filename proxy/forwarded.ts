/**
 * Which peers are trusted proxies (a listener's `trustedProxies`): their
 * X-Forwarded-* headers are believed, anyone else's replaced. One BlockList
 * per configured list, built once; a reload brings a new list, and so a new
 * BlockList.
 */
import { BlockList, isIPv6 } from "node:net";
import { parseCidr } from "../lib/core/cidr";

const lists = new WeakMap<readonly string[], BlockList>();

/** True when `ip` (as `clientAddress` gives it) is inside one of `cidrs`, which the config validated. */
export function isTrustedPeer(cidrs: readonly string[], ip: string): boolean {
  if (cidrs.length === 0) return false;
  let list = lists.get(cidrs);
  if (list === undefined) {
    list = new BlockList();
    for (const text of cidrs) {
      const c = parseCidr(text);
      if (typeof c !== "string") list.addSubnet(c.address, c.prefix, c.family);
    }
    lists.set(cidrs, list);
  }
  return list.check(ip, isIPv6(ip) ? "ipv6" : "ipv4");
}
