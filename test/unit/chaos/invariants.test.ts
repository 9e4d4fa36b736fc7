/**
 * Each chaos invariant fires on a hand-written observation that breaks it, and
 * stays quiet on the races a correct fleet shows to a sampler.
 */
import { CHAOS_BOUNDS as B } from "../../chaos/bounds";
import {
  checkInvariants,
  deadNodeWeight,
  dnsConverges,
  eipFollowsHolder,
  fenceMonotonic,
  leaderExists,
  sessionsStick,
} from "../../chaos/invariants";
import type {
  EipSample,
  Happening,
  LeaseSeen,
  Observation,
  PlanSeen,
  StateSample,
} from "../../chaos/observation";

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;
const NODES = [
  { nodeId: "node-1", instanceId: "i-1" },
  { nodeId: "node-2", instanceId: "i-2" },
  { nodeId: "node-3", instanceId: "i-3" },
];
const started: Happening[] = NODES.map((n) => ({ at: at(-10), kind: "start", node: n.nodeId }));

function observation(o: Partial<Observation>): Observation {
  return {
    startedAt: T0,
    healedAt: at(10),
    endedAt: at(20),
    initialMode: "active-passive",
    nodes: NODES,
    happenings: started,
    eip: [],
    state: [],
    sessions: [],
    answers: [],
    events: [],
    ...o,
  };
}

const lease = (holder: string | undefined, token: number): LeaseSeen => ({ holder, token });
/** A read of the Elastic IP at `s` seconds, bracketed by two reads that show the same lease (or the given after). */
function eip(s: number, instanceId: string, before: LeaseSeen, after: LeaseSeen = before): EipSample {
  return {
    startedAt: at(s) - 10,
    endedAt: at(s) + 30,
    readAt: at(s),
    doneAt: at(s) + 20,
    before,
    after,
    instanceId,
  };
}

function plan(
  weights: Record<string, number>,
  syncedAt: number | undefined,
  mode = "active-active",
): PlanSeen {
  return {
    mode,
    token: 1,
    syncedAt,
    weights: Object.fromEntries(
      Object.entries(weights).map(([id, w]) => [id, { address: `a-${id}`, weight: w }]),
    ),
  };
}

function state(s: number, o: Partial<StateSample> = {}): StateSample {
  const p = plan({ "node-1": 100, "node-2": 100, "node-3": 100 }, at(0));
  return {
    at: at(s),
    doneAt: at(s) + 30,
    lease: lease("node-1", 1),
    tokens: {},
    planBefore: p,
    planAfter: p,
    records: p.weights,
    ...o,
  };
}

const records = (weights: Record<string, number>) =>
  Object.fromEntries(Object.entries(weights).map(([id, w]) => [id, { address: `a-${id}`, weight: w }]));

describe("eip-follows-holder", () => {
  test("fires when the address goes back to the deposed node after the holder's move completed", () => {
    const o = observation({
      eip: [
        eip(1, "i-1", lease("node-1", 1)),
        eip(2, "i-2", lease("node-2", 2)), // node-2's move has completed
        eip(3, "i-1", lease("node-2", 2)), // a stale AssociateAddress put it back on node-1
      ],
    });
    const v = eipFollowsHolder(o, B);
    expect(v).toHaveLength(1);
    expect(v[0]!.message).toMatch(/on node-1 \(token 1\) while node-2 holds token 2/);
  });

  test("fires on the holder's audit event alone as proof of its completed move", () => {
    const o = observation({
      events: [{ at: at(2), kind: "vip-moved", by: "node-2", token: 2 }],
      eip: [eip(1, "i-1", lease("node-1", 1)), eip(3, "i-1", lease("node-2", 2))],
    });
    expect(eipFollowsHolder(o, B)).toHaveLength(1);
  });

  test("is quiet while the new holder has not moved the address yet", () => {
    const o = observation({
      eip: [
        eip(1, "i-1", lease("node-1", 1)),
        eip(2, "i-1", lease("node-2", 2)),
        eip(3, "i-2", lease("node-2", 2)),
      ],
    });
    expect(eipFollowsHolder(o, B)).toEqual([]);
  });

  test("ignores a read during which the lease changed hands", () => {
    const o = observation({
      eip: [eip(2, "i-2", lease("node-2", 2)), eip(3, "i-2", lease("node-2", 2), lease("node-1", 3))],
    });
    expect(eipFollowsHolder(o, B)).toEqual([]);
  });
});

describe("fence-monotonic", () => {
  test("fires when a record's token goes down between two ordered reads", () => {
    const o = observation({
      state: [state(1, { tokens: { "vip#eipalloc-1": 3 } }), state(2, { tokens: { "vip#eipalloc-1": 2 } })],
    });
    const v = fenceMonotonic(o, B);
    expect(v).toHaveLength(1);
    expect(v[0]!.message).toMatch(/vip#eipalloc-1: token 2, after token 3/);
  });

  test("fires on the fleet lease read by the Elastic IP sampler too", () => {
    const o = observation({ eip: [eip(1, "i-1", lease("node-1", 4)), eip(2, "i-1", lease("node-1", 3))] });
    expect(fenceMonotonic(o, B)).toHaveLength(1);
  });

  test("does not order reads that overlapped in time", () => {
    const o = observation({
      state: [
        { ...state(1, { tokens: { "dns#x": 5 } }), doneAt: at(3) },
        state(2, { tokens: { "dns#x": 4 } }),
        state(4, { tokens: { "dns#x": 5 } }),
      ],
    });
    expect(fenceMonotonic(o, B)).toEqual([]);
  });
});

describe("dns-converges", () => {
  test("fires when Route 53 never matches the plan after the faults healed", () => {
    const p = plan({ "node-1": 0, "node-2": 100 }, at(5));
    const o = observation({
      state: [11, 12, 13].map((s) =>
        state(s, { planBefore: p, planAfter: p, records: records({ "node-1": 100, "node-2": 100 }) }),
      ),
      endedAt: at(10) + B.convergeMs + 1000,
    });
    const v = dnsConverges(o, B);
    expect(v.map((x) => x.message)).toEqual([expect.stringMatching(/did not converge.*node-1 100/)]);
  });

  test("fires when Route 53 differs from a synced plan for longer than the bound", () => {
    const p = plan({ "node-1": 0, "node-2": 100 }, at(1));
    const wrong = records({ "node-1": 100, "node-2": 100 });
    const seconds = Array.from({ length: Math.ceil(B.convergeMs / 1000) + 3 }, (_, i) => 1 + i);
    const o = observation({
      healedAt: at(0),
      state: [
        ...seconds.map((s) => state(s, { planBefore: p, planAfter: p, records: wrong })),
        state(seconds.length + 2, { planBefore: p, planAfter: p, records: p.weights }),
      ],
    });
    expect(dnsConverges(o, B).map((x) => x.message)).toEqual([
      expect.stringMatching(/has differed from the plan/),
    ]);
  });

  test("is quiet when the plan was not yet synced or changed during the read", () => {
    const unsynced = plan({ "node-1": 0 }, undefined);
    const next = plan({ "node-1": 25 }, at(11));
    const o = observation({
      state: [
        state(11, { planBefore: unsynced, planAfter: unsynced, records: records({ "node-1": 100 }) }),
        state(12, {
          planBefore: next,
          planAfter: plan({ "node-1": 50 }, at(12)),
          records: records({ "node-1": 50 }),
        }),
        state(13),
      ],
    });
    expect(dnsConverges(o, B)).toEqual([]);
  });

  test("fires when no plan was ever recorded", () => {
    const o = observation({
      state: [state(11, { planBefore: undefined, planAfter: undefined, records: {} })],
    });
    expect(dnsConverges(o, B).map((v) => v.message)).toEqual([expect.stringMatching(/no plan was recorded/)]);
  });
});

describe("dead-node-weight", () => {
  const killed: Happening[] = [...started, { at: at(1), kind: "kill", node: "node-2" }];
  const late = 1 + B.deadWeightMs / 1000 + 0.5;

  test("fires when a killed node keeps its weight past the bound in active-active", () => {
    const o = observation({
      initialMode: "active-active",
      happenings: killed,
      state: [state(late, { records: records({ "node-1": 100, "node-2": 100, "node-3": 100 }) })],
    });
    const v = deadNodeWeight(o, B);
    expect(v.map((x) => x.message)).toEqual([expect.stringMatching(/node-2 has been down since \+1\.00s/)]);
  });

  test("fires on a node paused that long too", () => {
    const o = observation({
      initialMode: "active-active",
      happenings: [...started, { at: at(1), kind: "pause", node: "node-3" }],
      state: [state(late, { records: records({ "node-1": 100, "node-3": 50 }) })],
    });
    expect(deadNodeWeight(o, B)).toHaveLength(1);
  });

  test.each<[string, Partial<Observation>]>([
    ["within the bound", { state: [state(1 + B.deadWeightMs / 1000 - 1)] }],
    ["in active-passive", { initialMode: "active-passive" }],
    [
      "after a switch to active-active within the bound",
      {
        initialMode: "active-passive",
        happenings: [...killed, { at: at(late - 2), kind: "mode", mode: "active-active" }],
      },
    ],
    [
      "while the checker's path was faulted",
      { happenings: [...killed, { at: at(2), kind: "checker-fault", until: at(3) }] },
    ],
    [
      "when no other node was healthy (failing open is right)",
      {
        happenings: [
          ...killed,
          { at: at(0), kind: "kill", node: "node-1" },
          { at: at(0), kind: "pause", node: "node-3" },
        ],
      },
    ],
  ])("is quiet %s", (_, o) => {
    const obs = observation({
      initialMode: "active-active",
      happenings: killed,
      state: [state(late, { records: records({ "node-1": 100, "node-2": 100, "node-3": 100 }) })],
      ...o,
    });
    expect(deadNodeWeight(obs, B)).toEqual([]);
  });
});

describe("leader-exists", () => {
  const reads = (from: number, to: number, l: LeaseSeen) =>
    Array.from({ length: (to - from) * 4 + 1 }, (_, i) => state(from + i / 4, { lease: l }));

  test("fires when the lease has no holder for longer than the bound while nodes are eligible", () => {
    const o = observation({ state: reads(1, 1 + B.leaderlessMs / 1000 + 1, lease(undefined, 3)) });
    const v = leaderExists(o, B);
    expect(v.map((x) => x.message)).toEqual([
      expect.stringMatching(/no live leader since \+1\.00s .*no holder.*node-1, node-2, node-3 could lead/),
    ]);
  });

  test("fires when the holder is a killed node and nobody takes over", () => {
    const o = observation({
      happenings: [...started, { at: at(0.5), kind: "kill", node: "node-1" }],
      state: reads(1, 1 + B.leaderlessMs / 1000 + 1, lease("node-1", 3)),
    });
    expect(leaderExists(o, B).map((x) => x.message)).toEqual([
      expect.stringMatching(/node-1, not live.*node-2, node-3/),
    ]);
  });

  test("fires when every node was marked failed by a probe cut of all of them", () => {
    const cut: Happening[] = NODES.map((n) => ({
      at: at(0),
      kind: "probe-cut",
      node: n.nodeId,
      all: true,
      until: at(9),
    }));
    const o = observation({ happenings: [...started, ...cut], state: reads(1, 8, lease(undefined, 4)) });
    expect(leaderExists(o, B)).toHaveLength(1);
  });

  test.each<[string, Happening[]]>([
    ["every node is down", NODES.map((n) => ({ at: at(0), kind: "kill", node: n.nodeId }))],
    [
      "every node is cut off from the store (an outage: nobody can acquire)",
      NODES.map((n) => ({ at: at(0), kind: "store-cut", node: n.nodeId, until: at(20) })),
    ],
    [
      "the only nodes left were each cut off from the checker alone (marked failed rightly)",
      [
        { at: at(0), kind: "kill", node: "node-1" },
        { at: at(0), kind: "probe-cut", node: "node-2", all: false, until: at(20) },
        { at: at(0), kind: "probe-cut", node: "node-3", all: false, until: at(20) },
      ],
    ],
  ])("is quiet when %s", (_, h) => {
    const o = observation({ happenings: [...started, ...h], state: reads(1, 8, lease(undefined, 3)) });
    expect(leaderExists(o, B)).toEqual([]);
  });

  test("is quiet for a takeover within the bound", () => {
    const o = observation({
      happenings: [...started, { at: at(1), kind: "kill", node: "node-1" }],
      state: [...reads(1, 3, lease("node-1", 1)), ...reads(3.25, 6, lease("node-2", 2))],
    });
    expect(leaderExists(o, B)).toEqual([]);
  });

  test("counts a resumed node as eligible only after its allowance", () => {
    const h: Happening[] = [
      ...started,
      { at: at(0), kind: "kill", node: "node-1" },
      { at: at(0), kind: "kill", node: "node-2" },
      { at: at(0), kind: "pause", node: "node-3" },
      { at: at(5), kind: "resume", node: "node-3" },
    ];
    const early = observation({
      happenings: h,
      state: reads(1, 5 + B.leaderlessMs / 1000, lease(undefined, 2)),
    });
    expect(leaderExists(early, B)).toEqual([]);
    const long = observation({
      happenings: h,
      state: reads(1, 5 + B.leaderlessMs / 1000 + 3, lease(undefined, 2)),
    });
    expect(leaderExists(long, B)).toHaveLength(1);
  });
});

describe("sessions-stick", () => {
  test("fires when a mapping in the session table moves while its backend is healthy", () => {
    const o = observation({
      sessions: [
        { at: at(1), mappings: { abcdefghijklmnop: "backend-1" } },
        { at: at(2), mappings: { abcdefghijklmnop: "backend-2" } },
      ],
    });
    expect(sessionsStick(o, B).map((v) => v.message)).toEqual([
      expect.stringMatching(/moved from backend-1 \(healthy\) to backend-2/),
    ]);
  });

  test("fires when a client's answers move to another backend", () => {
    const o = observation({
      answers: [
        { client: 0, at: at(1), backend: "backend-3" },
        { client: 1, at: at(1), backend: "backend-1" },
        { client: 0, at: at(2), backend: "backend-2" },
      ],
    });
    expect(sessionsStick(o, B).map((v) => v.message)).toEqual([
      expect.stringMatching(/client 0 .*backend-2 after backend-3/),
    ]);
  });

  test("is quiet when the backend it left was down", () => {
    const o = observation({
      happenings: [...started, { at: at(1.5), kind: "backend-down", backend: "backend-3", until: at(5) }],
      answers: [
        { client: 0, at: at(1), backend: "backend-3" },
        { client: 0, at: at(2), backend: "backend-2" },
      ],
    });
    expect(sessionsStick(o, B)).toEqual([]);
  });
});

test("a run that kept every invariant reports nothing", () => {
  const o = observation({
    eip: [eip(1, "i-1", lease("node-1", 1)), eip(2, "i-1", lease("node-1", 1))],
    state: Array.from({ length: 40 }, (_, i) => state(i / 2, { tokens: { "lease#fleet": 1 } })),
    sessions: [{ at: at(1), mappings: { k: "backend-1" } }],
    answers: [{ client: 0, at: at(1), backend: "backend-1" }],
  });
  expect(checkInvariants(o, B)).toEqual([]);
});
