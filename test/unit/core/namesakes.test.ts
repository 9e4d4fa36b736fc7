/**
 * Which node of a name is the newer one (`newerNamesake`): a replacement
 * instance and the node it replaces share the stable name, and the newer live
 * one holds the name's Elastic IP (docs/architecture.md §5.2).
 */
import { type NodeRecord, newerNamesake, startedAfter } from "../../../lib/core/heartbeat";

function node(nodeId: string, name: string, startedAtMs: number): NodeRecord {
  return {
    nodeId,
    name,
    startedAtMs,
    seq: 1,
    heartbeatAtMs: startedAtMs,
    address: "127.0.0.1",
    adminUrl: "",
    role: "serving",
    drain: false,
    load: { connections: 0, rps: 0 },
    version: "test",
    instanceId: `i-${nodeId}`,
  };
}

const self = node("old", "node-0", 1000);

test.each<[string, NodeRecord[], string[], string | undefined]>([
  ["alone", [self], [], undefined],
  ["a newer live namesake", [self, node("new", "node-0", 2000)], [], "new"],
  ["a newer namesake that is not live", [self, node("new", "node-0", 2000)], ["new"], undefined],
  ["an older namesake (it is the one replaced)", [self, node("older", "node-0", 500)], [], undefined],
  ["a newer node of another name", [self, node("n1", "node-1", 2000)], [], undefined],
  ["two newer namesakes: the newest", [self, node("b", "node-0", 2000), node("c", "node-0", 3000)], [], "c"],
  [
    "two newer namesakes, the newest not live: the live one",
    [self, node("b", "node-0", 2000), node("c", "node-0", 3000)],
    ["c"],
    "b",
  ],
  ["the same start time: the greater node id", [self, node("z", "node-0", 1000)], [], "z"],
  ["the same start time, a smaller node id", [self, node("a", "node-0", 1000)], [], undefined],
])("%s", (_, nodes, dead, want) => {
  expect(newerNamesake(self, nodes, (n) => !dead.includes(n.nodeId))?.nodeId).toBe(want);
});

test("every reader orders two namesakes the same way", () => {
  const a = node("a", "node-0", 1000);
  const b = node("b", "node-0", 1000);
  expect([startedAfter(a, b), startedAfter(b, a)]).toEqual([false, true]);
});
