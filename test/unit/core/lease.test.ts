import { Lease, resolveLeaseSettings, successorWaitMs } from "../../../lib/core/lease";
import { ManualClock, ManualTimerClock } from "../../harness/manual-clock";
import { MemoryLeaseStore, LeaseStoreView as View } from "../../harness/memory-lease-store";

interface World {
  clock: ManualClock;
  store: MemoryLeaseStore;
  views: Record<string, View>;
  leases: Record<string, Lease>;
  events: string[];
  /** Runs every contender's ticks when due, in 10 ms steps, checking no two leaders at any step. */
  run(ms: number): Promise<void>;
}

function world(ids: string[], settings: { leaseMs?: number } = { leaseMs: 2000 }): World {
  const clock = new ManualClock();
  const store = new MemoryLeaseStore();
  const views: Record<string, View> = {};
  const leases: Record<string, Lease> = {};
  const events: string[] = [];
  const due: Record<string, number> = {};
  for (const id of ids) {
    views[id] = new View(store);
    leases[id] = new Lease(views[id], { name: "fleet", holderId: id, ...settings }, clock);
    due[id] = clock.nowMs();
    for (const ev of ["acquired", "lost", "released"] as const) {
      leases[id].on(ev, (e: { token: number }) => events.push(`${id} ${ev} ${e.token}`));
    }
  }
  return {
    clock,
    store,
    views,
    leases,
    events,
    async run(ms) {
      const end = clock.nowMs() + ms;
      while (clock.nowMs() < end) {
        for (const id of ids) {
          if (due[id]! <= clock.nowMs()) due[id] = clock.nowMs() + (await leases[id]!.tick());
        }
        const leaders = ids.filter((id) => leases[id]!.isLeader());
        if (leaders.length > 1) throw new Error(`two leaders at ${clock.nowMs()}: ${leaders.join(", ")}`);
        clock.advance(10);
      }
    },
  };
}

describe("lease state machine (injected clock; a 2000 ms lease: renewMs 666, safetyMs 200, pollMs 250)", () => {
  const cases: { name: string; test: () => Promise<void> }[] = [
    {
      name: "a contender acquires a lease nobody ever held, with token 1",
      test: async () => {
        const w = world(["a"]);
        await w.run(20);
        expect(w.leases.a!.isLeader()).toBe(true);
        expect(w.leases.a!.token).toBe(1);
        expect(w.events).toEqual(["a acquired 1"]);
      },
    },
    {
      name: "a holder that renews keeps the lease for as long as it runs, and no waiter takes it",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(20_000);
        expect(w.leases.a!.isLeader()).toBe(true);
        expect(w.leases.b!.isLeader()).toBe(false);
        expect(w.events).toEqual(["a acquired 1"]);
      },
    },
    {
      name: "a waiter takes over once the holder's rvn stayed the same for leaseMs, with the next token",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(100);
        const cutAt = w.clock.nowMs();
        w.views.a!.down = true; // a is cut off from the store: it cannot renew
        await w.run(4000);
        expect(w.leases.b!.token).toBe(2);
        expect(w.events).toEqual(["a acquired 1", "a lost 1", "b acquired 2"]);
        const rec = w.store.records.get("fleet")!;
        expect(rec.holder).toBe("b");
        expect(w.clock.nowMs() - cutAt).toBeGreaterThan(2000);
      },
    },
    {
      name: "the holder stops acting at leaseMs - safetyMs after its last renewal started, before any waiter can take over",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(100);
        w.views.a!.down = true;
        let lostAt = 0;
        let acquiredAt = 0;
        w.leases.a!.on("lost", () => {
          lostAt = w.clock.nowMs();
        });
        w.leases.b!.on("acquired", () => {
          acquiredAt = w.clock.nowMs();
        });
        await w.run(4000);
        expect(lostAt).toBeGreaterThan(0);
        expect(acquiredAt).toBeGreaterThan(lostAt);
        // The run() loop also checked at every 10 ms step that both were never leader together.
      },
    },
    {
      name: "a waiter never takes over before it has itself seen the same rvn for leaseMs, however old the wall clock says it is",
      test: async () => {
        const w = world(["a"]);
        await w.run(20);
        w.views.a!.down = true;
        const b = new Lease(new View(w.store), { name: "fleet", holderId: "b", leaseMs: 2000 }, w.clock);
        w.clock.skewWall(3_600_000); // an hour of wall-clock skew changes nothing
        await b.tick(); // first sight of the rvn
        w.clock.advance(1990);
        await b.tick();
        expect(b.isLeader()).toBe(false);
        w.clock.advance(20);
        await b.tick();
        expect(b.isLeader()).toBe(true);
      },
    },
    {
      name: "a waiter waits the holder's leaseMs, not its own",
      test: async () => {
        const w = world(["a"], { leaseMs: 6000 });
        await w.run(20);
        w.views.a!.down = true;
        const b = new Lease(new View(w.store), { name: "fleet", holderId: "b", leaseMs: 1000 }, w.clock);
        await b.tick();
        w.clock.advance(5000);
        await b.tick();
        expect(b.isLeader()).toBe(false);
        w.clock.advance(1010);
        await b.tick();
        expect(b.isLeader()).toBe(true);
      },
    },
    {
      name: "a released lease is taken at the waiter's next poll, without waiting out the lease",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(100);
        await w.leases.a!.release();
        const releasedAt = w.clock.nowMs();
        let acquiredAt = 0;
        w.leases.b!.on("acquired", () => {
          acquiredAt = w.clock.nowMs();
        });
        await w.run(1000);
        expect(w.leases.b!.token).toBe(2);
        expect(acquiredAt - releasedAt).toBeLessThanOrEqual(260); // one pollMs
        expect(w.events).toEqual(["a acquired 1", "a released 1", "b acquired 2"]);
      },
    },
    {
      name: "a renewal that landed but whose answer was lost keeps the lease after a re-read",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(100);
        w.store.loseAnswers = 1000; // every renewal lands, no answer arrives: only re-reads can confirm
        await w.run(5000);
        expect(w.store.loseAnswers).toBeLessThan(1000 - 5);
        expect(w.leases.a!.isLeader()).toBe(true);
        expect(w.events).toEqual(["a acquired 1"]);
      },
    },
    {
      name: "an acquisition that landed but whose answer was lost is recognised on the next read",
      test: async () => {
        const w = world(["a"]);
        w.store.loseAnswers = 1;
        await w.run(10);
        expect(w.leases.a!.isLeader()).toBe(false);
        await w.run(300);
        expect(w.leases.a!.isLeader()).toBe(true);
        expect(w.leases.a!.token).toBe(1);
      },
    },
    {
      name: "a holder whose lease was taken while it was paused learns it at its next renewal and gets the lost event",
      test: async () => {
        const w = world(["b"]);
        const a = new Lease(new View(w.store), { name: "fleet", holderId: "a", leaseMs: 2000 }, w.clock);
        const seen: string[] = [];
        a.on("lost", (e) => seen.push(e.reason));
        await a.tick(); // a acquires
        expect(a.token).toBe(1);
        // a is paused (no ticks) for 5 s while b runs
        await w.run(5000);
        expect(w.leases.b!.token).toBe(2);
        expect(a.isLeader()).toBe(false); // the clock alone says so
        await a.tick();
        expect(seen).toHaveLength(1);
        expect(a.token).toBeUndefined();
      },
    },
    {
      name: "an ineligible contender does not acquire a free lease, and a leader made ineligible releases",
      test: async () => {
        const w = world(["a", "b"]);
        await w.leases.b!.setEligible(false);
        await w.run(100);
        expect(w.leases.a!.isLeader()).toBe(true);
        await w.leases.a!.setEligible(false);
        await w.run(3000);
        expect(w.leases.a!.isLeader()).toBe(false);
        expect(w.leases.b!.isLeader()).toBe(false);
        await w.leases.b!.setEligible(true);
        await w.run(300);
        expect(w.leases.b!.token).toBe(2);
      },
    },
    {
      name: "after a store outage longer than the lease, the last holder takes it back and no waiter takes over",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(1000);
        w.views.a!.down = true;
        w.views.b!.down = true;
        await w.run(5000); // both cut off: a's validity runs out, b can observe nothing
        expect(w.leases.a!.isLeader()).toBe(false);
        w.views.a!.down = false;
        w.views.b!.down = false;
        await w.run(5000);
        expect(w.leases.a!.isLeader()).toBe(true);
        expect(w.leases.a!.token).toBe(2);
        expect(w.events).toEqual(["a acquired 1", "a lost 1", "a acquired 2"]);
      },
    },
    {
      name: "a waiter cut off from the store for half a lease or more waits a whole leaseMs afresh",
      test: async () => {
        const w = world(["a"]);
        await w.run(20);
        w.views.a!.down = true; // the holder is gone for good
        const view = new View(w.store);
        const b = new Lease(view, { name: "fleet", holderId: "b", leaseMs: 2000 }, w.clock);
        await b.tick(); // first sight
        view.down = true;
        await b.tick(); // reads fail from here...
        w.clock.advance(1500);
        await b.tick(); // ...for 1.5 s: an outage
        view.down = false;
        await b.tick(); // sees the same rvn again: the wait starts now
        w.clock.advance(1900);
        await b.tick();
        expect(b.isLeader()).toBe(false);
        w.clock.advance(200);
        await b.tick();
        expect(b.isLeader()).toBe(true);
      },
    },
    {
      name: "a single failed read does not restart a waiter's wait",
      test: async () => {
        const w = world(["a"]);
        await w.run(20);
        w.views.a!.down = true;
        const view = new View(w.store);
        const b = new Lease(view, { name: "fleet", holderId: "b", leaseMs: 2000 }, w.clock);
        await b.tick(); // first sight
        w.clock.advance(1000);
        view.down = true;
        await b.tick(); // one failed read
        view.down = false;
        w.clock.advance(100);
        await b.tick();
        w.clock.advance(950);
        await b.tick(); // 2050 ms since first sight
        expect(b.isLeader()).toBe(true);
      },
    },
    {
      name: "a holder whose monotonic clock stood still while the wall clock moved on (a suspend) stops acting at once",
      test: async () => {
        const w = world(["a"]);
        await w.run(100);
        const lost: string[] = [];
        w.leases.a!.on("lost", (e) => lost.push(e.reason));
        w.clock.skewWall(5000); // suspended for 5 s: CLOCK_MONOTONIC did not count them
        expect(w.leases.a!.isLeader()).toBe(false);
        expect(w.leases.a!.token).toBeUndefined();
        await w.leases.a!.tick();
        expect(lost).toEqual([expect.stringContaining("the wall clock moved on")]);
        // Nobody took it meanwhile: the lease is still recorded as its own, and it takes it back at once.
        await w.run(1000);
        expect(w.events).toEqual(["a acquired 1", "a lost 1", "a acquired 2"]);
      },
    },
    {
      name: "a wall clock stepped back changes nothing for the holder",
      test: async () => {
        const w = world(["a", "b"]);
        await w.run(100);
        w.clock.skewWall(-3_600_000);
        await w.run(5000);
        expect(w.leases.a!.isLeader()).toBe(true);
        expect(w.events).toEqual(["a acquired 1"]);
      },
    },
    {
      name: "a lease item deleted and created anew starts above the token floor the fleet recorded",
      test: async () => {
        const w = world(["a"]);
        await w.run(20);
        w.store.raiseFloor("fleet", 7); // e.g. vip# recorded under token 7 by an earlier holder
        w.store.records.delete("fleet");
        const b = new Lease(new View(w.store), { name: "fleet", holderId: "b", leaseMs: 2000 }, w.clock);
        await b.tick();
        expect(b.token).toBe(8);
      },
    },
    {
      name: "tokens increase by one with every change of holder, over many changes",
      test: async () => {
        const w = world(["a", "b", "c"]);
        for (let i = 0; i < 6; i++) {
          await w.run(300);
          const leader = Object.keys(w.leases).find((id) => w.leases[id]!.isLeader())!;
          await w.leases[leader]!.release();
        }
        await w.run(300);
        const tokens = w.events.filter((e) => e.includes("acquired")).map((e) => Number(e.split(" ")[2]));
        expect(tokens).toEqual([1, 2, 3, 4, 5, 6, 7]);
      },
    },
  ];
  test.each(cases.map((c) => [c.name, c.test] as const))("%s", async (_name, fn) => {
    await fn();
  });
});

describe("lease settings are checked when built, and errors name the fields", () => {
  test.each([
    [{ leaseMs: 10 }, "`leaseMs` must be at least 50, got 10"],
    [{ renewMs: 0 }, "`renewMs` must be above 0, got 0"],
    [{ safetyMs: -1 }, "`safetyMs` must be at least 0, got -1"],
    [
      { leaseMs: 2000, renewMs: 1000 },
      "`leaseMs` - `safetyMs` (1800) must exceed 2 x `renewMs` (2000), so that one lost renewal does not cost the lease",
    ],
    [{ leaseMs: 2000, pollMs: 1500 }, "`pollMs` must be above 0 and at most `leaseMs` / 2 (1000), got 1500"],
    [
      { leaseMs: 2000, safetyMs: 100 },
      "`safetyMs` (100) must be at least 182 with `leaseMs` 2000: the holder must stop before a waiter whose clock runs up to 10% faster (CLOCK_RATE_BOUND) can take over",
    ],
    [{ name: "bad name" }, "`name` 'bad name' must be 1-128 of [A-Za-z0-9._:-]"],
  ])("%j is refused", (bad, message) => {
    expect(() => resolveLeaseSettings({ name: "fleet", holderId: "a", ...bad })).toThrow(message);
  });

  test("a successor waits out a move in flight for the prior lease or 2 s, whichever is longer, 10% over", () => {
    expect(successorWaitMs(1200)).toBe(2200);
    expect(successorWaitMs(2000)).toBe(2200);
    // 3000 x 1.1, rounded up (in floating point, 3300.0000000000005).
    expect(successorWaitMs(3000)).toBeGreaterThanOrEqual(3300);
    expect(successorWaitMs(3000)).toBeLessThanOrEqual(3301);
  });

  test("defaults are leaseMs 1200, renewMs 400, safetyMs 120, pollMs 150", () => {
    expect(resolveLeaseSettings({ name: "fleet", holderId: "a" })).toEqual({
      name: "fleet",
      holderId: "a",
      leaseMs: 1200,
      renewMs: 400,
      safetyMs: 120,
      pollMs: 150,
    });
  });
});

describe("side effects of a holding (Lease.act), on a clock whose sleeps wait for the test", () => {
  function holder() {
    const clock = new ManualTimerClock();
    const store = new MemoryLeaseStore();
    const lease = new Lease(store, { name: "fleet", holderId: "a" }, clock);
    return { clock, store, lease };
  }

  test("an effect does not run without the lease", async () => {
    const { lease } = holder();
    let ran = false;
    await expect(
      lease.act(async () => {
        ran = true;
      }),
    ).rejects.toMatchObject({ code: "HAFLEET_LEASE_LOST" });
    expect(ran).toBe(false);
  });

  test("an effect's signal aborts at the validity it began under, though the holder renewed since", async () => {
    const { clock, lease } = holder();
    lease.start();
    await clock.run(20);
    const began = clock.nowMs();
    const validUntil = lease.validUntilMs!;
    let abortedAt: number | undefined;
    const effect = lease.act(
      (h) =>
        new Promise<void>((resolve) =>
          h.signal.addEventListener("abort", () => {
            abortedAt = clock.nowMs();
            resolve();
          }),
        ),
    );
    await clock.run(3000);
    await effect;
    expect(lease.isLeader()).toBe(true);
    expect(lease.validUntilMs).toBeGreaterThan(validUntil);
    expect(abortedAt).toBeGreaterThanOrEqual(validUntil);
    expect(abortedAt! - began).toBeLessThanOrEqual(2000 - 200);
    await lease.stop();
  });

  test("a release waits for an effect in flight, and says no call is left when it was answered", async () => {
    const { clock, store, lease } = holder();
    lease.start();
    await clock.run(1000);
    const call = lease.act(() => clock.sleep(500), { unfenced: true });
    await clock.run(10);
    expect(store.records.get("fleet")?.inFlight).toBe(true); // recorded before the call
    const released = lease.release();
    await clock.run(300);
    expect(store.records.get("fleet")?.holder).toBe("a"); // still held: the call is in flight
    await clock.run(300);
    await Promise.all([call, released]);
    expect(store.records.get("fleet")).toMatchObject({ holder: undefined, inFlight: false });
    await lease.stop();
  });
});
