import type { PoolConfig } from "../../../lib/core/config";
import { LeastOutstanding, Maglev, RoundRobin, SmoothWeighted, type Weighted } from "../../../proxy/balancer";
import { hash32 } from "../../../proxy/hash";
import { Pool } from "../../../proxy/pool";
import { config } from "./helpers";

const node = (id: string, weight = 1): Weighted => ({
  id,
  weight,
  effectiveWeight: weight,
  outstanding: 0,
  current: 0,
});

function counts<B extends Weighted>(picks: B[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of picks) out[p.id] = (out[p.id] ?? 0) + 1;
  return out;
}

describe("round robin", () => {
  it("rotates in order", () => {
    const set = [node("a"), node("b"), node("c")];
    const rr = new RoundRobin<Weighted>();
    const order = Array.from({ length: 7 }, () => rr.pick(set, 1, 0, undefined, false).id);
    expect(order).toEqual(["a", "b", "c", "a", "b", "c", "a"]);
  });

  it("skips the excluded backend of a retry", () => {
    const set = [node("a"), node("b")];
    const rr = new RoundRobin<Weighted>();
    expect(rr.pick(set, 1, 0, set[0], false).id).toBe("b");
  });
});

describe("smooth weighted round robin", () => {
  // nginx's documented sequence for weights 5, 1, 1.
  it("spreads a heavy backend's turns: 5,1,1 gives a a b a c a a", () => {
    const set = [node("a", 5), node("b", 1), node("c", 1)];
    const swrr = new SmoothWeighted<Weighted>();
    const order = Array.from({ length: 7 }, () => swrr.pick(set, 1, 0, undefined).id);
    expect(order).toEqual(["a", "a", "b", "a", "c", "a", "a"]);
  });

  it.each([
    [[3, 1], 400, [300, 100]],
    [[1, 2, 7], 1000, [100, 200, 700]],
  ])("weights %j over %i picks give exactly %j", (weights, n, expected) => {
    const set = weights.map((w, i) => node(`b${i}`, w));
    const swrr = new SmoothWeighted<Weighted>();
    const c = counts(Array.from({ length: n }, () => swrr.pick(set, 1, 0, undefined)));
    expect(set.map((b) => c[b.id] ?? 0)).toEqual(expected);
  });
});

describe("least outstanding (power of two choices)", () => {
  it("never picks the busier of two", () => {
    const set = [node("idle"), node("busy")];
    set[1]!.outstanding = 5;
    const p2c = new LeastOutstanding<Weighted>();
    for (let i = 0; i < 50; i++) expect(p2c.pick(set, 1, 0, undefined).id).toBe("idle");
  });

  it("keeps outstanding requests level when requests finish at different speeds", () => {
    // Backend "slow" holds each request 4 times longer: it must get fewer.
    const set = [node("fast"), node("slow"), node("mid")];
    const holdFor: Record<string, number> = { fast: 1, slow: 4, mid: 2 };
    const p2c = new LeastOutstanding<Weighted>();
    const inFlight: { b: Weighted; until: number }[] = [];
    const picks: Weighted[] = [];
    for (let t = 0; t < 3000; t++) {
      for (let i = inFlight.length - 1; i >= 0; i--) {
        if (inFlight[i]!.until <= t) {
          inFlight[i]!.b.outstanding--;
          inFlight.splice(i, 1);
        }
      }
      const b = p2c.pick(set, 1, 0, undefined);
      b.outstanding++;
      inFlight.push({ b, until: t + holdFor[b.id]! });
      picks.push(b);
    }
    const c = counts(picks);
    expect(c.fast!).toBeGreaterThan(c.mid!);
    expect(c.mid!).toBeGreaterThan(c.slow!);
  });

  it("divides by weight: a backend of weight 3 takes about 3 times the share", () => {
    const set = [node("heavy", 3), node("light", 1)];
    const p2c = new LeastOutstanding<Weighted>();
    const picks: Weighted[] = [];
    // Every request stays in flight: shares follow outstanding / weight.
    for (let i = 0; i < 400; i++) {
      const b = p2c.pick(set, 1, 0, undefined);
      b.outstanding++;
      picks.push(b);
    }
    const c = counts(picks);
    expect(c.heavy! / c.light!).toBeGreaterThan(2.5);
    expect(c.heavy! / c.light!).toBeLessThan(3.5);
  });
});

describe("Maglev consistent hashing", () => {
  const keys = Array.from({ length: 20_000 }, (_, i) => hash32(`client-${i}`));

  it("spreads keys evenly (each backend within 10% of its share)", () => {
    const set = Array.from({ length: 5 }, (_, i) => node(`b${i}`));
    const m = new Maglev<Weighted>();
    const c = counts(keys.map((k) => m.lookup(set, 1, k)));
    for (const b of set) expect(Math.abs(c[b.id]! - 4000)).toBeLessThan(400);
  });

  it("honours weights", () => {
    const set = [node("a", 3), node("b", 1)];
    const m = new Maglev<Weighted>();
    const c = counts(keys.map((k) => m.lookup(set, 1, k)));
    expect(c.a! / c.b!).toBeGreaterThan(2.7);
    expect(c.a! / c.b!).toBeLessThan(3.3);
  });

  it("moves few keys when a backend leaves: only its own keys, plus at most 3% of the rest", () => {
    const set = Array.from({ length: 5 }, (_, i) => node(`b${i}`));
    const m = new Maglev<Weighted>();
    const before = keys.map((k) => m.lookup(set, 1, k).id);
    const fewer = set.filter((b) => b.id !== "b2");
    const after = keys.map((k) => m.lookup(fewer, 2, k).id);
    let movedOthers = 0;
    before.forEach((id, i) => {
      if (id !== "b2" && after[i] !== id) movedOthers++;
    });
    expect(after).not.toContain("b2");
    expect(movedOthers / keys.length).toBeLessThan(0.03);
  });

  it("gives the same answer on two nodes that build their tables separately", () => {
    const a = new Maglev<Weighted>();
    const b = new Maglev<Weighted>();
    const setA = [node("x"), node("y"), node("z")];
    const setB = [node("x"), node("y"), node("z")];
    for (const k of keys.slice(0, 500)) expect(a.lookup(setA, 1, k).id).toBe(b.lookup(setB, 1, k).id);
  });
});

function poolConfig(extra: Record<string, unknown> = {}, n = 4): PoolConfig {
  return config({
    listeners: [{ name: "l", protocol: "http", port: 1, pool: "p" }],
    pools: {
      p: {
        backends: Array.from({ length: n }, (_, i) => ({ id: `b${i}`, host: "127.0.0.1", port: 1000 + i })),
        ...extra,
      },
    },
  }).pools.p!;
}

describe("pool: health, ejection, panic, slow start", () => {
  let now = 0;
  const clock = () => now;
  beforeEach(() => {
    now = 1_000_000;
  });

  it("leaves unhealthy backends out, and panics below the threshold (sends to all)", () => {
    // Scenario as data: which backends are down, the expected set, panic or not.
    const rows: [string[], string[], boolean][] = [
      [[], ["b0", "b1", "b2", "b3"], false],
      [["b0"], ["b1", "b2", "b3"], false],
      [["b0", "b1"], ["b2", "b3"], false], // 50% healthy: at the threshold, no panic
      [["b0", "b1", "b2"], ["b0", "b1", "b2", "b3"], true], // 25% < 50%: panic
      [["b0", "b1", "b2", "b3"], ["b0", "b1", "b2", "b3"], true],
    ];
    for (const [down, expected, panic] of rows) {
      const pool = new Pool("p", poolConfig({ panicThresholdPercent: 50 }), { now: clock });
      for (const b of pool.backends) pool.setHealthy(b, !down.includes(b.id));
      expect(pool.eligible().map((b) => b.id)).toEqual(expected);
      expect(pool.panic).toBe(panic);
    }
  });

  it("with panic disabled (0), answers no backend rather than sending to dead ones", () => {
    const pool = new Pool("p", poolConfig({ panicThresholdPercent: 0 }), { now: clock });
    for (const b of pool.backends) pool.setHealthy(b, false);
    expect(pool.pick(0)).toBeUndefined();
  });

  it("ejects after consecutive failures for a growing period, never above maxEjectionPercent", () => {
    const pool = new Pool(
      "p",
      poolConfig({ outlier: { consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionPercent: 50 } }),
      { now: clock },
    );
    const [b0, b1, b2] = pool.backends;
    // Failures as data: [backend, failures] in order; then the expected ejected set.
    const fail = (b: typeof b0, n: number) => {
      for (let i = 0; i < n; i++) pool.reportFailure(b!);
    };
    fail(b0, 2);
    pool.reportSuccess(b0!); // a success resets the streak
    fail(b0, 2);
    expect(b0!.ejected).toBe(false);
    fail(b0, 1);
    expect(b0!.ejected).toBe(true);
    expect(b0!.ejectedUntilMs).toBe(now + 1000);
    fail(b1, 3);
    expect(b1!.ejected).toBe(true);
    fail(b2, 3); // 3 of 4 would be 75% > 50%: refused
    expect(b2!.ejected).toBe(false);
    expect(pool.eligible().map((b) => b.id)).toEqual(["b2", "b3"]);

    now += 1000; // b0 and b1 return
    expect(pool.eligible().map((b) => b.id)).toEqual(["b0", "b1", "b2", "b3"]);
    fail(b0, 3); // second ejection lasts twice as long
    expect(b0!.ejectedUntilMs).toBe(now + 2000);
    expect(b0!.ejections).toBe(2);
    expect(pool.ejectionsTotal).toBe(3);
  });

  it("ramps a recovered backend's weight from 10% to 100% over slowStartMs", () => {
    const pool = new Pool("p", poolConfig({ algorithm: "weighted-round-robin", slowStartMs: 10_000 }, 2), {
      now: clock,
    });
    const [b0, b1] = pool.backends;
    pool.setHealthy(b1!, false);
    pool.setHealthy(b1!, true);
    const share = () => {
      const c = counts(Array.from({ length: 1000 }, () => pool.pick(0)!));
      return (c.b1 ?? 0) / 1000;
    };
    // Shares of the recovering backend as time passes: [ms since recovery, lowest, highest].
    const rows: [number, number, number][] = [
      [0, 0.07, 0.12], // weight 0.1 vs 1
      [5_000, 0.3, 0.4], // weight 0.55 vs 1
      [10_000, 0.48, 0.52], // full weight
    ];
    const start = now;
    for (const [at, lo, hi] of rows) {
      now = start + at;
      const s = share();
      expect(s).toBeGreaterThanOrEqual(lo);
      expect(s).toBeLessThanOrEqual(hi);
    }
    expect(b0!.effectiveWeight).toBe(1);
  });

  it("keeps backend state across a reload and retires removed backends", () => {
    const pool = new Pool("p", poolConfig({}, 3), { now: clock });
    const b0 = pool.byId("b0")!;
    pool.setHealthy(b0, false);
    const next = poolConfig({}, 2);
    pool.update({
      ...next,
      backends: [...next.backends, { host: "127.0.0.1", port: 2000, weight: 1, id: "new" }],
    });
    expect(pool.byId("b0")).toBe(b0);
    expect(b0.healthy).toBe(false);
    expect(pool.byId("b2")).toBeUndefined();
    expect(pool.eligible().map((b) => b.id)).toEqual(["b1", "new"]);
  });
});
