import { HeartbeatMonitor, type NodeRecord } from "../../../lib/core/heartbeat";
import { ManualClock } from "../../harness/manual-clock";

function rec(nodeId: string, seq: number, heartbeatAtMs: number): NodeRecord {
  return {
    nodeId,
    name: nodeId,
    startedAtMs: 0,
    seq,
    heartbeatAtMs,
    address: "127.0.0.1",
    adminUrl: "http://127.0.0.1:1",
    role: "standby",
    drain: false,
    load: { connections: 0, rps: 0 },
    version: "test",
  };
}

/**
 * Each scenario: readings one second apart; at each, whether the node's seq
 * moved ("+") or not ("="); the expected state after each reading.
 * Settings: staleMs 2500, rise 2, fall 2.
 */
const scenarios: [string, string, string[]][] = [
  ["a node that beats every second stays alive", "+++++", ["alive", "alive", "alive", "alive", "alive"]],
  [
    "a node that stops beating is suspect at the first stale reading and dead at the second",
    "++====",
    ["alive", "alive", "alive", "alive", "suspect", "dead"],
  ],
  [
    "one stale reading between beats only makes it suspect",
    "+===+",
    ["alive", "alive", "alive", "suspect", "alive"],
  ],
  [
    "a dead node needs two fresh readings in a row to be alive again",
    "+=====+=+",
    // the reading after the first new beat is fresh (1 s < staleMs) but the first of the run: still dead
    ["alive", "alive", "alive", "suspect", "dead", "dead", "dead", "alive", "alive"],
  ],
];

describe("heartbeat liveness with rise/fall damping", () => {
  test.each(scenarios)("%s", (_name, pattern, expected) => {
    const clock = new ManualClock();
    const monitor = new HeartbeatMonitor({ staleMs: 2500, rise: 2, fall: 2 }, clock);
    let seq = 1;
    const states: string[] = [];
    for (const step of pattern) {
      if (step === "+") seq++;
      states.push(monitor.observe([rec("n1", seq, clock.wallMs())])[0]!.state);
      clock.advance(1000);
    }
    expect(states).toEqual(expected);
  });

  test("a node first seen with an old wall-clock heartbeat is dead at once; one with a fresh one alive", () => {
    const clock = new ManualClock();
    const monitor = new HeartbeatMonitor({ staleMs: 3000 }, clock);
    const out = monitor.observe([
      rec("old", 5, clock.wallMs() - 60_000),
      rec("new", 5, clock.wallMs() - 100),
    ]);
    expect(out.map((o) => [o.nodeId, o.state])).toEqual([
      ["old", "dead"],
      ["new", "alive"],
    ]);
  });

  test("after first sight, wall-clock skew of the writer does not matter: only seq progress does", () => {
    const clock = new ManualClock();
    const monitor = new HeartbeatMonitor({ staleMs: 2500, rise: 2, fall: 2 }, clock);
    monitor.observe([rec("n1", 1, clock.wallMs())]);
    for (let i = 2; i < 8; i++) {
      clock.advance(1000);
      // The writer's clock is an hour behind, yet the node is alive: its seq moves.
      const [s] = monitor.observe([rec("n1", i, clock.wallMs() - 3_600_000)]);
      expect(s!.state).toBe("alive");
    }
  });
});
