/**
 * Seeded randomness for chaos runs: the same seed gives the same schedule, so a
 * violation's seed replays it. Run seeds come from the master seed and the run's
 * index through SHA-256, so run K's schedule does not depend on how many runs
 * came before it.
 */
import { createHash } from "node:crypto";

/** The seed of run `index` (0-based) of master seed `master`: 32 bits of sha256("master:index"). */
export function runSeed(master: number, index: number): number {
  return createHash("sha256").update(`${master}:${index}`).digest().readUInt32BE(0);
}

/** A new master seed when none is given. */
export function freshSeed(): number {
  return createHash("sha256")
    .update(`${Date.now()}:${process.pid}:${Math.random()}`)
    .digest()
    .readUInt32BE(0);
}

/** mulberry32: a small, fast generator with a 32-bit state; plenty for picking fault schedules. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** A whole number of ms in [min, max], rounded to 10 ms so schedules read well. */
  ms(min: number, max: number): number {
    return Math.round((min + this.next() * (max - min)) / 10) * 10;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error("pick from an empty list");
    return xs[Math.floor(this.next() * xs.length)]!;
  }

  /** One of the entries, with probability proportional to its weight. */
  weighted<T>(table: readonly (readonly [T, number])[]): T {
    const total = table.reduce((n, [, w]) => n + w, 0);
    let x = this.next() * total;
    for (const [value, w] of table) {
      x -= w;
      if (x < 0) return value;
    }
    return table.at(-1)![0];
  }
}
