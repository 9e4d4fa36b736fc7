/**
 * The node agent's promotion, repair and hand-over, on a manual clock with the
 * fleet's state, the leases and the Elastic IPs in memory (./agent-world.ts).
 * Each case is one ordering of the agent's steps against the lease and the
 * cloud, written as data; the same items run against the emulator and the
 * fault proxy in test/integration/proxy/agent.test.ts.
 */
import { AgentWorld, SHARED } from "./agent-world";

let world: AgentWorld | undefined;
/** A world for one test, stopped in its teardown. */
function newWorld(ids: string[], options?: ConstructorParameters<typeof AgentWorld>[1]): AgentWorld {
  world = new AgentWorld(ids, options);
  return world;
}
afterEach(async () => {
  await world?.stopAll();
  world = undefined;
});

describe("promotion and hand-over", () => {
  test("the first node takes the free lease, records itself in vip# and moves the address to itself", async () => {
    const w = newWorld(["a", "b"]);
    await w.start("a");
    await w.start("b");
    await w.until(() => w.node("a").agent.role === "active", 1000, "a active");
    expect(w.holder()).toBe("a");
    expect(w.memory.vips.get(SHARED)).toEqual({
      allocationId: SHARED,
      owner: "a",
      instanceId: "i-a",
      token: 1,
    });
    expect(w.addressOn()).toBe("i-a");
    expect(w.memory.events.map((e) => [e.kind, e.by, e.token, e.reason])).toEqual([
      ["vip-moved", "a", 1, "acquired the free fleet lease"],
    ]);
    expect(w.node("b").agent.role).toBe("standby");
  });

  const handovers: { name: string; release: (w: AgentWorld) => Promise<unknown> | undefined }[] = [
    { name: "an operator's yield", release: (w) => void w.memory.command("a", "yield") },
    { name: "an operator's drain", release: (w) => void w.memory.command("a", "drain") },
    { name: "the checker's failed mark", release: (w) => void w.memory.markFailed("a", true) },
    { name: "stop (SIGTERM)", release: (w) => w.node("a").agent.stop() },
  ];
  test.each(handovers)("$name hands the lease and the address to the standby", async ({ release }) => {
    const w = newWorld(["a", "b"]);
    await w.start("a");
    await w.start("b");
    await w.until(() => w.node("a").agent.role === "active", 1000, "a active");
    const stopping = release(w);
    await w.until(() => w.node("b").agent.role === "active", 5000, "b active");
    await w.during(Promise.resolve(stopping));
    expect(w.holder()).toBe("b");
    expect(w.leases.records.get("fleet")?.token).toBe(2);
    expect(w.memory.vips.get(SHARED)).toMatchObject({ owner: "b", token: 2 });
    expect(w.addressOn()).toBe("i-b");
    // A released lease is taken as a free one: no `from`, so the takeover alarm does not count a hand-over.
    expect(w.memory.events.at(-1)).toMatchObject({ kind: "vip-moved", by: "b", token: 2 });
  });

  test("a holder cut off from the store stops acting, and the standby takes over after the lease", async () => {
    const w = newWorld(["a", "b"]);
    await w.start("a");
    await w.start("b");
    await w.until(() => w.node("a").agent.role === "active", 1000, "a active");
    w.node("a").cut(true);
    const took = await w.until(() => w.node("b").agent.role === "active", 6000, "b active");
    expect(took).toBeGreaterThanOrEqual(2000);
    expect(w.node("a").agent.role).toBe("standby");
    expect(w.addressOn()).toBe("i-b");
    w.node("a").cut(false);
  });
});

describe("the vip# record comes before the move, and the repair path writes it when it is not the holder's", () => {
  const failures = [
    { name: "fails once", failVipWrites: 1 },
    { name: "fails three times in a row", failVipWrites: 3 },
  ];
  test.each(failures)(
    "the promotion's vip# write $name: no move and not active until the heartbeats' repair records it",
    async ({ failVipWrites }) => {
      const w = newWorld(["a"]);
      w.node("a").store.failVipWrites = failVipWrites;
      await w.start("a");
      await w.run(100);
      expect(w.holder()).toBe("a");
      expect(w.node("a").agent.role).toBe("standby");
      expect(w.ec2.calls).toEqual([]);
      expect(w.memory.vips.get(SHARED)).toBeUndefined();
      await w.until(() => w.node("a").agent.role === "active", failVipWrites * 1000 + 1000, "a active");
      expect(w.memory.vips.get(SHARED)).toMatchObject({ owner: "a", token: 1 });
      expect(w.addressOn()).toBe("i-a");
      // The move came after the record, and it is the takeover (not a repair) in the audit trail.
      expect(w.memory.events.map((e) => [e.kind, e.token])).toEqual([["vip-moved", 1]]);
    },
  );

  test("vip# lost while active (a restored table) is recorded again by the next heartbeat", async () => {
    const w = newWorld(["a"]);
    await w.start("a");
    await w.until(() => w.node("a").agent.role === "active", 1000, "a active");
    w.memory.vips.delete(SHARED);
    await w.run(1100);
    expect(w.memory.vips.get(SHARED)).toMatchObject({ owner: "a", token: 1 });
    expect(w.ec2.calls).toHaveLength(1);
  });
});
