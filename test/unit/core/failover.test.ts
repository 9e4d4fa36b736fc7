import { parseCheckerInvocation } from "../../../lib/core/checker";
import {
  judgeNode,
  type MarkCandidate,
  modeSwitchRefusal,
  type NodeSignals,
  ProbeTracker,
  planMarks,
  planVip,
} from "../../../lib/core/failover";

const base: NodeSignals = {
  heartbeat: "alive",
  probe: "up",
  isLeaseHolder: false,
  leaseExpired: false,
  markedFailed: false,
};

describe("judging a node from its signals", () => {
  test.each<[string, Partial<NodeSignals>, string, string]>([
    ["a node with a fresh heartbeat and answering probes is healthy", {}, "healthy", "keep"],
    [
      "a node not yet probed enough is healthy while its heartbeat is fresh",
      { probe: "unknown" },
      "healthy",
      "keep",
    ],
    ["a late heartbeat alone only makes it suspect", { heartbeat: "suspect" }, "suspect", "keep"],
    [
      "a dead heartbeat alone (probe answers) only makes it suspect: one signal is not enough",
      { heartbeat: "dead" },
      "suspect",
      "keep",
    ],
    [
      "a dead heartbeat and a failing probe agree: failed",
      { heartbeat: "dead", probe: "down" },
      "failed",
      "keep",
    ],
    [
      "the holder whose lease expired is failed on that alone",
      { isLeaseHolder: true, leaseExpired: true },
      "failed",
      "keep",
    ],
    [
      "the holder whose probes fail while it heartbeats is a gray failure, and gets marked",
      { isLeaseHolder: true, probe: "down" },
      "gray-failure",
      "set",
    ],
    [
      "a standby whose probes fail while it heartbeats is marked too, so it is never promoted",
      { probe: "down" },
      "gray-failure",
      "set",
    ],
    [
      "a marked node still failing probes stays failed, without writing again",
      { probe: "down", markedFailed: true },
      "failed",
      "keep",
    ],
    [
      "a marked node healthy on both signals is recovered, and the mark is cleared",
      { markedFailed: true },
      "recovered",
      "clear",
    ],
    [
      "a marked node with answering probes but a late heartbeat stays failed",
      { markedFailed: true, heartbeat: "suspect" },
      "failed",
      "keep",
    ],
  ])("%s", (_name, signals, verdict, mark) => {
    const j = judgeNode({ ...base, ...signals });
    expect([j.verdict, j.mark]).toEqual([verdict, mark]);
  });
});

describe("marking nodes failed: never all nodes or a majority of the live ones", () => {
  // Each node as a letter: s = judged gray (mark asked), m = marked already, r = marked with half
  // its TTL used up (renewal due), c = marked and recovered (clear asked), o = fine; upper case =
  // heartbeat dead (not live).
  const fleet = (spec: string): MarkCandidate[] =>
    [...spec].map((ch, i) => {
      const c = ch.toLowerCase();
      return {
        nodeId: `n${i + 1}`,
        mark: c === "s" ? "set" : c === "c" ? "clear" : "keep",
        markedFailed: "mrc".includes(c),
        renewDue: c === "r",
        live: ch === c,
      };
    });
  const acts = (spec: string, action: string) =>
    [...planMarks(fleet(spec)).marks].filter(([, m]) => m === action).map(([id]) => id);
  test.each<[string, string, string[], string[], string[]]>([
    ["one gray node of two is marked (one of two is no majority)", "so", ["n1"], [], []],
    ["one gray node of three is marked", "soo", ["n1"], [], []],
    ["two gray nodes of four are marked (half is no majority)", "ssoo", ["n1", "n2"], [], []],
    ["every node gray (a checker-side fault): none is marked", "ss", [], [], ["n1", "n2"]],
    ["two of three gray: a majority, none is marked", "sso", [], [], ["n1", "n2"]],
    ["a single live node is never marked", "s", [], [], ["n1"]],
    ["one marked already and one more gray of three: none more", "mso", [], [], ["n2"]],
    ["the only live node of three (two dead) is never marked", "sOO", [], [], ["n1"]],
    ["a gray node beside a dead one and a fine one: one of two live", "sOo", ["n1"], [], []],
    ["a recovered node's mark is cleared, making room for another", "cso", ["n2"], [], []],
    ["nothing asked, nothing withheld, even with many marks", "mmo", [], [], []],
    ["a kept mark with half its TTL used up is renewed", "ro", [], ["n1"], []],
    ["a kept mark not yet due is left as it is", "mo", [], [], []],
    ["a renewal goes on while a new mark beside it is withheld", "rso", [], ["n1"], ["n2"]],
    ["marks that are already all or a majority are not renewed: they lapse", "rr", [], [], ["n1", "n2"]],
    ["two kept marks of three live: not renewed", "rmo", [], [], ["n1"]],
  ])("%s (%s)", (_name, spec, set, renew, withheld) => {
    expect(acts(spec, "set")).toEqual(set);
    expect(acts(spec, "renew")).toEqual(renew);
    const plan = planMarks(fleet(spec));
    expect(plan.withheld).toEqual(withheld);
    expect(plan.reason === undefined).toBe(withheld.length === 0);
  });

  test("clears are never withheld", () => {
    expect(planMarks(fleet("css")).marks.get("n1")).toBe("clear");
  });
});

describe("planning an Elastic IP reconcile", () => {
  const desired = { allocationId: "eipalloc-1", owner: "node-b", instanceId: "i-b", token: 4 };
  const lease = { holder: "node-b", token: 4, expired: false };
  test.each<[string, typeof desired | undefined, typeof lease | undefined, string, string, boolean]>([
    ["associated as the holder recorded: nothing to do", desired, lease, "i-b", "none", false],
    [
      "moved behind the system's back: move it back to the holder's instance",
      desired,
      lease,
      "i-a",
      "associate",
      false,
    ],
    [
      "not associated at all: associate it with the holder's instance",
      desired,
      lease,
      "",
      "associate",
      false,
    ],
    ["no vip# yet: nothing to do", undefined, lease, "i-a", "none", false],
    [
      "no holder: wait for a takeover, never pick an owner",
      desired,
      { holder: undefined as never, token: 4, expired: false },
      "i-a",
      "none",
      false,
    ],
    [
      "the holder's lease expired: wait for a takeover",
      desired,
      { ...lease, expired: true },
      "i-a",
      "none",
      false,
    ],
    [
      "a new holder has not recorded its vip# yet: leave it to the holder",
      desired,
      { holder: "node-c", token: 5, expired: false },
      "i-a",
      "none",
      false,
    ],
    [
      "a vip# from another holder with the same token is not followed",
      { ...desired, owner: "node-x" },
      lease,
      "i-a",
      "none",
      false,
    ],
    [
      "a vip# of an older token than the lease's is not followed",
      { ...desired, token: 3 },
      lease,
      "i-a",
      "none",
      false,
    ],
    [
      "a vip# of a newer token than the lease seen is not followed (the lease read is older)",
      { ...desired, token: 5 },
      lease,
      "i-a",
      "none",
      false,
    ],
    [
      "the holder's vip# is current but the checker judges the holder failed: never toward it",
      desired,
      lease,
      "i-a",
      "none",
      true,
    ],
    [
      "a failed holder that has the address already: nothing to do either way",
      desired,
      lease,
      "i-b",
      "none",
      true,
    ],
  ])("%s", (_name, d, l, actual, action, ownerFailed) => {
    expect(planVip(d, l, actual, ownerFailed).action).toBe(action);
  });
});

describe("probe damping", () => {
  test("fall failures in a row make a node down, rise successes up again; one blip changes nothing", () => {
    const p = new ProbeTracker(2, 2);
    const states = [true, true, false, true, false, false, true, true].map((ok) => p.record("n", ok));
    expect(states).toEqual(["unknown", "up", "up", "up", "up", "down", "down", "up"]);
  });
});

describe("health-checker invocations", () => {
  const env = { HAFLEET_FLEET_ID: "prod" };
  test("a scheduled event uses the environment and stops 5 s before the timeout", () => {
    const scheduled = { source: "aws.events", "detail-type": "Scheduled Event", detail: {} };
    expect(parseCheckerInvocation(scheduled, env, 60_000)).toEqual({
      fleetId: "prod",
      intervalMs: 2000,
      runForMs: 55_000,
    });
    expect(parseCheckerInvocation(scheduled, env, 20_000).runForMs).toBe(15_000);
  });
  test("a direct invocation may name the fleet and the loop", () => {
    expect(parseCheckerInvocation({ fleetId: "stage", runForMs: 3000, intervalMs: 500 }, {}, 60_000)).toEqual(
      {
        fleetId: "stage",
        intervalMs: 500,
        runForMs: 3000,
      },
    );
  });
  test.each([
    [
      { fleetId: "Bad Fleet" },
      env,
      "invalid health-checker invocation: fleetId: must be 1-63 lowercase letters, digits or '-'",
    ],
    [
      { runForMs: -1 },
      env,
      "invalid health-checker invocation: runForMs: Too small: expected number to be >=0",
    ],
    [{ fleetid: "prod" }, env, 'invalid health-checker invocation: (event): Unrecognized key: "fleetid"'],
    [{}, {}, "invalid health-checker invocation: fleetId: missing (set HAFLEET_FLEET_ID or pass fleetId)"],
    [
      {},
      { ...env, HAFLEET_CHECKER_INTERVAL_MS: "fast" },
      "invalid health-checker invocation: HAFLEET_CHECKER_INTERVAL_MS: must be at least 200, got NaN",
    ],
  ])("%j with %j is refused: %s", (event, e, message) => {
    expect(() => parseCheckerInvocation(event, e, 60_000)).toThrow(message);
  });
});

describe("a mode switch the fleet cannot make is refused, naming the nodes in the way", () => {
  const NOW = 1_000_000;
  const live = (nodeId: string, publicIp?: string) => ({
    nodeId,
    heartbeatAtMs: NOW - 500,
    ...(publicIp ? { publicIp } : {}),
  });
  const rows: [string, ReturnType<typeof live>[], "active-passive" | "active-active", RegExp | undefined][] =
    [
      [
        "to active-active, every live node with its own address",
        [live("a", "1.1.1.1"), live("b", "2.2.2.2")],
        "active-active",
        undefined,
      ],
      [
        "to active-active, one without",
        [live("a", "1.1.1.1"), live("b")],
        "active-active",
        /; b has no address of its own$/,
      ],
      [
        "to active-active, two without",
        [live("a"), live("b")],
        "active-active",
        /; a, b have no address of its own$/,
      ],
      [
        "to active-active, the one without is dead",
        [live("a", "1.1.1.1"), { nodeId: "b", heartbeatAtMs: NOW - 60_000 }],
        "active-active",
        undefined,
      ],
      ["to active-passive, whatever the nodes", [live("a"), live("b")], "active-passive", undefined],
    ];
  test.each(rows)("%s", (_what, nodes, to, refusal) => {
    const why = modeSwitchRefusal(nodes, to, NOW, 3000);
    if (refusal) expect(why).toMatch(refusal);
    else expect(why).toBeUndefined();
  });
});
