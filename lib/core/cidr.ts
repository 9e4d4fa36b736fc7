/**
 * CIDR blocks as operators write them (`10.0.0.0/8`, `fd00::/8`): one parser
 * for the fleet config's `trustedProxies` and the CDK's `listenerCidrs`.
 */
import { isIPv4, isIPv6 } from "node:net";

export interface Cidr {
  readonly address: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
}

const EXAMPLE = "address/prefix, such as 10.0.0.0/8 or fd00::/8";

/** Parses `address/prefix`; returns why not (a sentence naming the text) when it is no CIDR block. */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = isIPv4(address) ? "ipv4" : isIPv6(address) ? "ipv6" : undefined;
  if (family === undefined) return `'${text}' is not a CIDR block (${EXAMPLE})`;
  if (slash < 0) {
    return `'${text}' is not a CIDR block: write the prefix too (${text}/${family === "ipv4" ? 32 : 128} for one address)`;
  }
  const max = family === "ipv4" ? 32 : 128;
  const digits = text.slice(slash + 1);
  const prefix = Number(digits);
  if (!/^\d{1,3}$/.test(digits) || prefix > max) {
    return `'${text}' is not a CIDR block: an ${family === "ipv4" ? "IPv4" : "IPv6"} prefix is 0 to ${max}`;
  }
  return { address, prefix, family };
}
