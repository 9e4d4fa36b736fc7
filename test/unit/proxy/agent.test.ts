/**
 * The node agent's promotion, repair and hand-over, on a manual clock with the
 * fleet's state, the leases and the Elastic IPs in memory (./agent-world.ts).
 * Each case is one ordering of the agent's steps against the lease and the
 * cloud, written as data; the same items run against the emulator and the
 * fault proxy in test/integration/proxy/agent.test.ts.
 */
import type { DnsPlan } from "../../../lib/core/dns";
import type { MovePlan } from "../../harness/fake-elastic-ips";
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
    // Its listeners closed only once the address served from the standby: no connection refused.
    const drained = w.drains.filter((d) => d.id === "a");
    for (const d of drained) expect(d.addressOn).toBe("i-b");
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

/** What happens to node a once its trigger came (a's release, or a cut from the store). */
type Action = "yield" | "drain" | "mark" | "stop" | "cut";

interface Ordering {
  readonly name: string;
  /** How a's moves go, in order (`leavesAfterMs`, `landsAfterMs`, `answersAfterMs`). */
  readonly aMoves: MovePlan[];
  /** When the action comes: once a's promotion move has started, or once a, active and idle, starts a repair. */
  readonly after: "promotion move started" | "repair move started";
  readonly action: Action;
  readonly expect: {
    /** How a's move ended for a: answered, aborted after it was sent, or aborted before it left. */
    readonly aMove: "answered" | "aborted" | "never sent";
    /** Whether b waited out a's move (`successorWaitMs`) before its own. */
    readonly bWaited: boolean;
    readonly aEvents: number;
  };
}

const RELEASES: Action[] = ["yield", "drain", "mark", "stop"];

/**
 * Every ordering of a move against a hand-over. The delays keep to the one
 * assumption of docs/architecture.md §6: EC2 applies a request, if ever,
 * within `leaseMs` after its caller gave up on it.
 */
const ORDERINGS: Ordering[] = [
  // Release during a move in flight: the release waits for it until the validity it began under.
  ...RELEASES.map(
    (action): Ordering => ({
      name: `${action} while a's promotion move is in flight past a's validity: a gives up at it, b waits, b's move lands last`,
      aMoves: [{ landsAfterMs: 2500, answersAfterMs: 2500 }],
      after: "promotion move started",
      action,
      expect: { aMove: "aborted", bWaited: true, aEvents: 0 },
    }),
  ),
  ...RELEASES.map(
    (action): Ordering => ({
      name: `${action} while a's promotion move is in flight, answered in 1.5 s: the release waits for the answer, and b need not wait`,
      aMoves: [{ landsAfterMs: 1500, answersAfterMs: 1500 }],
      after: "promotion move started",
      action,
      expect: { aMove: "answered", bWaited: false, aEvents: 1 },
    }),
  ),
  // Lost during a move: the validity runs out (a cut off from the store), and b takes over after the lease.
  {
    name: "a cut off while its move waits to leave (a slow connect): the abort at its validity means it never leaves",
    aMoves: [{ leavesAfterMs: 5000, landsAfterMs: 10 }],
    after: "promotion move started",
    action: "cut",
    expect: { aMove: "never sent", bWaited: true, aEvents: 0 },
  },
  {
    name: "a cut off with its move on the wire (lands after 3 s): b waits out the move before its own",
    aMoves: [{ landsAfterMs: 3000, answersAfterMs: 3000 }],
    after: "promotion move started",
    action: "cut",
    expect: { aMove: "aborted", bWaited: true, aEvents: 0 },
  },
  {
    name: "a cut off while a repair move is on the wire: the item said none in flight, so a said so before sending; b waits",
    aMoves: [{}, { landsAfterMs: 3000, answersAfterMs: 3000 }],
    after: "repair move started",
    action: "cut",
    expect: { aMove: "aborted", bWaited: true, aEvents: 1 },
  },
];

describe("a move in flight against a hand-over (orderings as data)", () => {
  test.each(ORDERINGS)("$name", async ({ aMoves, after, action, expect: want }) => {
    const w = newWorld(["a", "b"]);
    const a = w.node("a");
    w.ec2.plan("i-a", ...aMoves);
    await w.start("a");
    await w.start("b");
    const aCalls = () => w.ec2.calls.filter((c) => c.instanceId === "i-a");
    if (after === "repair move started") {
      await w.until(() => a.agent.role === "active", 1000, "a active");
      await w.run(1500); // renewals since: the item says no call is in flight
      expect(w.leases.records.get("fleet")?.inFlight).toBe(false);
      w.ec2.land(SHARED, "i-elsewhere"); // moved behind the system's back: a's next heartbeat repairs it
    }
    const index = after === "promotion move started" ? 0 : 1;
    await w.until(() => aCalls().length > index, 3000, "a's move started");
    let stopping: Promise<void> | undefined;
    if (action === "yield" || action === "drain") w.memory.command("a", action);
    else if (action === "mark") w.memory.markFailed("a", true);
    else if (action === "stop") stopping = a.agent.stop();
    else a.cut(true);
    await w.until(() => w.node("b").agent.role === "active", 10_000, "b active");
    await w.run(6000); // every move of a has landed or never will
    if (stopping) await w.during(stopping);

    const aMove = aCalls()[index]!;
    const bMove = w.ec2.calls.find((c) => c.instanceId === "i-b")!;
    expect(aMove.outcome === "aborted" && aMove.sentAtMs === undefined ? "never sent" : aMove.outcome).toBe(
      want.aMove,
    );
    // No call outlived the validity its caller had when it began.
    for (const c of w.ec2.calls) expect(c.endedAtMs!).toBeLessThanOrEqual(c.validUntilMs!);
    // b's move came last, and b waited out a's move only when a may have left one in flight.
    expect(w.addressOn()).toBe("i-b");
    expect(w.ec2.landings.at(-1)).toEqual([SHARED, "i-b", expect.any(Number)]);
    const waited = bMove.startedAtMs - w.acquiredAt.b!;
    if (want.bWaited)
      expect(waited).toBeGreaterThanOrEqual(2200); // successorWaitMs(2000): 2000 x 1.1
    else expect(waited).toBeLessThan(500);
    // ...and needed no repair: its one move stayed.
    expect(w.ec2.calls.filter((c) => c.instanceId === "i-b")).toHaveLength(1);
    // a wrote its events only while it held the lease.
    const aEvents = w.memory.events.filter((e) => e.by === "a");
    expect(aEvents).toHaveLength(want.aEvents);
    for (const e of aEvents) expect(e.atMs).toBeLessThan(w.acquiredAt.b!);
    a.cut(false);
  });
});

describe("lost during promotion: no move", () => {
  test("a cut off from the store as it acquires writes no vip# and sends no move", async () => {
    const w = newWorld(["a", "b"]);
    const a = w.node("a");
    a.lease.once("acquired", () => a.cut(true));
    await w.start("a");
    await w.start("b");
    await w.until(() => w.node("b").agent.role === "active", 10_000, "b active");
    expect(w.ec2.calls.filter((c) => c.instanceId === "i-a")).toEqual([]);
    expect(w.memory.vips.get(SHARED)).toMatchObject({ owner: "b", token: 2 });
    a.cut(false);
  });

  test("a whose renewals fail while it waits out its predecessor's move sends none", async () => {
    const w = newWorld(["a", "b"]);
    const a = w.node("a");
    // An earlier holder released the lease with a move possibly in flight.
    w.leases.records.set("fleet", {
      name: "fleet",
      holder: undefined,
      token: 4,
      rvn: "r-earlier",
      leaseMs: 2000,
      updatedAtMs: 0,
      inFlight: true,
    });
    // Its renewals fail from the start: its validity (1.8 s) ends before its wait (2.2 s) does.
    a.lease.once("acquired", () => {
      a.leaseView.down = true;
    });
    await w.start("a");
    await w.start("b");
    await w.until(() => w.node("b").agent.role === "active", 10_000, "b active");
    expect(w.leaseEvents.slice(0, 2)).toEqual(["a acquired 5", "a lost 5"]);
    expect(w.memory.refused).toEqual([]); // its vip# write went through while it held the lease
    expect(w.ec2.calls.filter((c) => c.instanceId === "i-a")).toEqual([]);
    a.leaseView.down = false;
  });
});

describe("active-active replacement: the newer live node of a name holds its own address", () => {
  const OWN = "eipalloc-node-0";
  /** Associations of the node's own address that landed, as `instance@ms`. */
  const landings = (w: AgentWorld) =>
    w.ec2.landings.filter(([id]) => id === OWN).map(([, instance, at]) => `${instance}@${at}`);

  test("the node it replaces stops claiming the address once the newer one holds it", async () => {
    const w = newWorld([]);
    w.addNode("old", { name: "node-0", allocationId: OWN });
    await w.start("old");
    expect(w.ec2.addresses.get(OWN)).toBe("i-old");
    await w.run(5000);
    // Its replacement: a new instance under the same name, while the old one still runs.
    w.addNode("new", { name: "node-0", allocationId: OWN });
    await w.start("new");
    expect(w.ec2.addresses.get(OWN)).toBe("i-new");
    await w.run(60_000);
    expect(w.ec2.addresses.get(OWN)).toBe("i-new");
    // One association each: no tug of war every few seconds until the old one is gone.
    expect(landings(w).map((l) => l.split("@")[0])).toEqual(["i-old", "i-new"]);
    expect(w.node("old").logs.filter((l) => l.includes("a newer node named node-0"))).toHaveLength(1);
  });

  test("takes the address back when its newer namesake is no longer live", async () => {
    const w = newWorld([]);
    w.addNode("old", { name: "node-0", allocationId: OWN });
    await w.start("old");
    await w.run(5000);
    const replacement = w.addNode("new", { name: "node-0", allocationId: OWN });
    await w.start("new");
    await w.run(15_000);
    expect(w.ec2.addresses.get(OWN)).toBe("i-new");
    // The replacement dies: its heartbeat stops (it never reaches the store again).
    replacement.cut(true);
    // Within a few beats of the heartbeat rule's judgement (3 s stale, 2 readings): the address
    // is on a dead instance meanwhile, and the checker serves the name's record from the old node.
    const tookMs = await w.until(
      () => w.ec2.addresses.get(OWN) === "i-old",
      40_000,
      "the address back on i-old",
    );
    expect(tookMs).toBeLessThan(7000);
    replacement.cut(false);
  });

  test("a restart of the older node's process does not take the address back", async () => {
    const w = newWorld([]);
    w.addNode("old", { name: "node-0", allocationId: OWN });
    await w.start("old");
    await w.run(5000);
    w.addNode("new", { name: "node-0", allocationId: OWN });
    await w.start("new");
    await w.run(2000);
    // The same instance's agent again: its item keeps its first start.
    await w.during(w.node("old").agent.stop(), 60_000);
    w.addNode("old", { name: "node-0", allocationId: OWN });
    await w.start("old");
    await w.run(30_000);
    expect(landings(w).map((l) => l.split("@")[0])).toEqual(["i-old", "i-new"]);
  });
});

describe("active-active drain: a node waits to leave DNS only for the records it stands for", () => {
  const plan = (weights: DnsPlan["weights"], syncedAt: number): DnsPlan => ({
    name: "lb.example.org",
    mode: "active-active",
    ttlS: 10,
    token: 1,
    weights,
    syncedAt,
    changeId: undefined,
  });

  test("the replaced node stops at once; its replacement serves until its name's record is at 0 and the TTL passed", async () => {
    const w = newWorld([]);
    w.addNode("old", { name: "node-0", allocationId: "eipalloc-node-0" });
    w.addNode("one", { name: "node-1", allocationId: "eipalloc-node-1" });
    await w.start("old");
    await w.start("one");
    await w.run(1000);
    w.addNode("new", { name: "node-0", allocationId: "eipalloc-node-0" });
    await w.start("new");
    const address = "127.0.99.1";
    w.memory.dnsPlans = [
      plan(
        {
          "node-0": { address, weight: 100, nodeId: "new" },
          "node-1": { address, weight: 100, nodeId: "one" },
        },
        w.clock.wallMs(),
      ),
    ];
    // The record of node-0 is the replacement's: the node it replaced is in no plan.
    const oldStopped = w.clock.nowMs();
    await w.during(w.node("old").agent.stop(), 5000);
    expect(w.clock.nowMs() - oldStopped).toBeLessThan(1000);
    let newDone = false;
    void w
      .node("new")
      .agent.stop()
      .then(() => {
        newDone = true;
      });
    await w.run(5000);
    expect(newDone).toBe(false);
    const zeroAt = w.clock.wallMs();
    w.memory.dnsPlans = [
      plan(
        {
          "node-0": { address, weight: 0, nodeId: "new" },
          "node-1": { address, weight: 100, nodeId: "one" },
        },
        zeroAt,
      ),
    ];
    const waited = await w.until(() => newDone, 20_000, "the replacement stopped");
    // The TTL (10 s) and a second from when the plan with its record at 0 was in sync.
    expect(waited).toBeGreaterThanOrEqual(10_500);
    expect(waited).toBeLessThan(12_000);
  });
});
