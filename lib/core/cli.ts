/**
 * Flag parsers shared by the command lines (the operator CLI and the proxy
 * process). A bad value throws commander's `InvalidArgumentError`, whose
 * message says what is allowed.
 */
import { InvalidArgumentError } from "commander";
import { NAME_PATTERN, NAME_RULE } from "./config";

/** A whole number in [min, max]. */
export function intFlag(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

/** A fleet id, as the config schema names things. */
export function fleetIdFlag(value: string): string {
  if (!NAME_PATTERN.test(value)) throw new InvalidArgumentError(NAME_RULE);
  return value;
}
