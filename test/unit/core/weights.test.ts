import { planWeights, type WeightTarget } from "../../../lib/core/failover";

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
