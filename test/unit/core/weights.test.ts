import {
  type DnsNodeView,
  planDns,
  planWeights,
  SHARED_ENDPOINT,
  type WeightTarget,
} from "../../../lib/core/failover";

const node = (
  nodeId: string,
  verdict: WeightTarget["verdict"],
  current: number,
  healthyRuns = 5,
  configured = 100,
): WeightTarget => ({
  nodeId,
  configured,
  current,
  verdict,
  healthyRuns,
});

describe("active-active DNS weights", () => {
  test.each<[string, WeightTarget[], number[]]>([
    [
      "healthy nodes keep their configured weights",
      [node("a", "healthy", 100), node("b", "healthy", 100)],
      [100, 100],
    ],
    [
      "a failed node drops to 0 at once, the others keep theirs",
      [node("a", "failed", 100), node("b", "healthy", 100), node("c", "healthy", 100)],
      [0, 100, 100],
    ],
    ["a gray failure drops to 0 too", [node("a", "gray-failure", 100), node("b", "healthy", 100)], [0, 100]],
    [
      "a suspect node keeps whatever weight it has",
      [node("a", "suspect", 40), node("b", "healthy", 100)],
      [40, 100],
    ],
    [
      "a node back after 1 healthy run gets a quarter (ramp over 4 runs)",
      [node("a", "recovered", 0, 1), node("b", "healthy", 100)],
      [25, 100],
    ],
    [
      "after 3 healthy runs, three quarters",
      [node("a", "healthy", 50, 3), node("b", "healthy", 100)],
      [75, 100],
    ],
    ["after 4 healthy runs, all of it", [node("a", "healthy", 75, 4), node("b", "healthy", 100)], [100, 100]],
    [
      "a ramp never goes down while healthy",
      [node("a", "healthy", 60, 1), node("b", "healthy", 100)],
      [60, 100],
    ],
    [
      "every node failed: weights are kept, never all 0 (fail open)",
      [node("a", "failed", 100), node("b", "failed", 100)],
      [100, 100],
    ],
    [
      "one failed, the other only suspect (its probes fail too): nothing changes (fail open)",
      [node("a", "failed", 100), node("b", "suspect", 100)],
      [100, 100],
    ],
    [
      "one failed, one suspect, one healthy: the failed one drops to 0",
      [node("a", "failed", 100), node("b", "suspect", 100), node("c", "healthy", 100)],
      [0, 100, 100],
    ],
    [
      "every node failed and all at 0 already: back to configured",
      [node("a", "failed", 0), node("b", "failed", 0)],
      [100, 100],
    ],
    [
      "weights follow each node's configured capacity",
      [node("a", "recovered", 0, 1, 8), node("b", "healthy", 3, 5, 3)],
      [2, 3],
    ],
  ])("%s", (_name, targets, expected) => {
    expect(planWeights(targets).map((p) => p.weight)).toEqual(expected);
  });
});

describe("the weighted set by mode (planDns)", () => {
  const dns = { weight: 100, nodeWeights: { big: 200 }, rampRuns: 4 };
  const view = (nodeId: string, over: Partial<DnsNodeView> = {}): DnsNodeView => ({
    nodeId,
    address: `127.9.0.${nodeId.length}`,
    verdict: "healthy",
    healthyRuns: 9,
    leaving: false,
    ...over,
  });
  const at = (entries: [string, number][]) =>
    new Map(entries.map(([id, weight]) => [id, { address: "x", weight }]));
  const weights = (planned: { nodeId: string; weight: number }[]) =>
    Object.fromEntries(planned.map((p) => [p.nodeId, p.weight]));

  test("active-active: every node at its capacity, the shared address at 0", () => {
    const planned = planDns(
      "active-active",
      [view("a"), view("big")],
      at([
        ["a", 100],
        ["big", 200],
      ]),
      "127.9.9.9",
      dns,
    );
    expect(weights(planned)).toEqual({ a: 100, big: 200, [SHARED_ENDPOINT]: 0 });
  });

  test("active-active: a draining node leaves DNS whatever its health", () => {
    const planned = planDns(
      "active-active",
      [view("a", { leaving: true }), view("b")],
      at([
        ["a", 100],
        ["b", 100],
      ]),
      undefined,
      dns,
    );
    expect(weights(planned)).toEqual({ a: 0, b: 100 });
    expect(planned[0]!.reason).toMatch(/draining/);
  });

  test("active-active: a node with no own address gets no record", () => {
    const planned = planDns(
      "active-active",
      [view("a", { address: undefined }), view("b")],
      at([]),
      undefined,
      dns,
    );
    expect(planned.map((p) => p.nodeId)).toEqual(["b"]);
  });

  test("active-passive: the shared address at the configured weight, every node's own at 0", () => {
    const planned = planDns("active-passive", [view("a"), view("b")], at([["a", 100]]), "127.9.9.9", dns);
    expect(weights(planned)).toEqual({ [SHARED_ENDPOINT]: 100, a: 0, b: 0 });
  });

  test("active-passive without a shared address changes nothing", () => {
    expect(planDns("active-passive", [view("a")], at([["a", 100]]), undefined, dns)).toEqual([]);
  });

  test("switching to active-active ramps the nodes up from where they are, never leaving all at 0", () => {
    const planned = planDns(
      "active-active",
      [view("a", { healthyRuns: 1 }), view("b", { healthyRuns: 1 })],
      at([
        ["a", 0],
        ["b", 0],
        [SHARED_ENDPOINT, 100],
      ]),
      "127.9.9.9",
      dns,
    );
    expect(weights(planned)).toEqual({ a: 25, b: 25, [SHARED_ENDPOINT]: 0 });
  });
});
