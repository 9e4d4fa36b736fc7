/**
 * The weighted set's endpoints and the records a run sends (docs/architecture.md
 * §5.2): which node stands for each stable name (`planEndpoints`), and which
 * records are changed, created or removed (`planRecordChanges`), as tables.
 */
import type { WeightedRecord } from "../../../lib/core/dns";
import {
  type DnsNodeView,
  type EndpointCandidate,
  type PlannedRecord,
  planEndpoints,
  planRecordChanges,
  SHARED_ENDPOINT,
} from "../../../lib/core/failover";

describe("which node stands for each name (planEndpoints)", () => {
  const node = (
    nodeId: string,
    name: string,
    startedAtMs: number,
    over: Partial<EndpointCandidate> = {},
  ) => ({
    nodeId,
    name,
    startedAtMs,
    live: true,
    gone: false,
    ...over,
  });
  test.each<[string, EndpointCandidate[], Record<string, string>]>([
    [
      "one node per name",
      [node("i-a", "node-0", 1), node("i-b", "node-1", 1)],
      { "node-0": "i-a", "node-1": "i-b" },
    ],
    [
      "a replacement, both live: the newer",
      [node("i-old", "node-0", 1), node("i-new", "node-0", 2)],
      { "node-0": "i-new" },
    ],
    [
      "a replacement that is not live yet, the old one live: the old",
      [node("i-old", "node-0", 1), node("i-new", "node-0", 2, { live: false })],
      { "node-0": "i-old" },
    ],
    [
      "neither live: the newer (its record goes to 0)",
      [node("i-old", "node-0", 1, { live: false }), node("i-new", "node-0", 2, { live: false })],
      { "node-0": "i-new" },
    ],
    [
      "the old one gone, the new one live",
      [node("i-old", "node-0", 1, { live: false, gone: true }), node("i-new", "node-0", 2)],
      { "node-0": "i-new" },
    ],
    ["every node of a name gone: no endpoint", [node("i-old", "node-0", 1, { live: false, gone: true })], {}],
    ["a node without a name: its id is its name", [node("n1", "n1", 1)], { n1: "n1" }],
  ])("%s", (_, nodes, want) => {
    expect(Object.fromEntries(planEndpoints(nodes))).toEqual(want);
  });
});

describe("the records a run sends (planRecordChanges)", () => {
  const view = (nodeId: string, over: Partial<DnsNodeView> = {}): DnsNodeView => ({
    nodeId,
    address: "127.9.0.1",
    verdict: "healthy",
    healthyRuns: 9,
    leaving: false,
    live: true,
    ...over,
  });
  const plan = (nodeId: string, weight: number): PlannedRecord => ({
    nodeId,
    address: "127.9.0.1",
    weight,
    reason: "test",
  });
  const record = (nodeId: string, weight: number, healthCheckId?: string): WeightedRecord => ({
    nodeId,
    address: "127.9.0.1",
    weight,
    ttlS: 10,
    ...(healthCheckId ? { healthCheckId } : {}),
  });
  const at = (...records: WeightedRecord[]) => new Map(records.map((r) => [r.nodeId, r]));
  const ids = (rs: readonly { nodeId: string; weight: number }[]) => rs.map((r) => `${r.nodeId}=${r.weight}`);

  test.each<{
    name: string;
    planned: PlannedRecord[];
    views: DnsNodeView[];
    current: Map<string, WeightedRecord>;
    known?: string[];
    create?: boolean;
    writes: string[];
    removes: string[];
  }>([
    {
      name: "a weight change carries the record's health check",
      planned: [plan("node-0", 0)],
      views: [view("node-0")],
      current: at(record("node-0", 100, "hc-0")),
      writes: ["node-0=0"],
      removes: [],
    },
    {
      name: "a missing record of a live serving node is created",
      planned: [plan("node-0", 25)],
      views: [view("node-0")],
      current: at(),
      writes: ["node-0=25"],
      removes: [],
    },
    {
      name: "a leaving node's missing record is not created",
      planned: [plan("node-0", 0)],
      views: [view("node-0", { leaving: true })],
      current: at(),
      writes: [],
      removes: [],
    },
    {
      name: "a leaving node's record goes to 0 where it is",
      planned: [plan("node-0", 0)],
      views: [view("node-0", { leaving: true })],
      current: at(record("node-0", 100, "hc-0")),
      writes: ["node-0=0"],
      removes: [],
    },
    {
      name: "a node whose heartbeat is dead gets no record created",
      planned: [plan("node-0", 0)],
      views: [view("node-0", { live: false, verdict: "failed" })],
      current: at(),
      writes: [],
      removes: [],
    },
    {
      name: "the shared address's missing record is created",
      planned: [plan(SHARED_ENDPOINT, 100)],
      views: [],
      current: at(),
      writes: [`${SHARED_ENDPOINT}=100`],
      removes: [],
    },
    {
      name: "a record the checker made for a node that is gone is removed",
      planned: [plan("node-0", 100)],
      views: [view("node-0")],
      current: at(record("node-0", 100, "hc-0"), record("i-0abc", 0)),
      writes: [],
      removes: ["i-0abc=0"],
    },
    {
      name: "a record with a health check and no node (the stack's, before its node beats) is left",
      planned: [],
      views: [],
      current: at(record("node-2", 100, "hc-2")),
      writes: [],
      removes: [],
    },
    {
      name: "a record of a known endpoint that is not planned (no address) is left",
      planned: [],
      views: [],
      current: at(record("node-1", 100)),
      known: ["node-1"],
      writes: [],
      removes: [],
    },
    {
      name: "a checker that may not create records (the stack's) creates none, not even a live node's",
      planned: [plan("node-0", 25), plan(SHARED_ENDPOINT, 0), plan("node-1", 0)],
      views: [view("node-0"), view("node-1")],
      current: at(record("node-1", 100, "hc-1")),
      create: false,
      writes: ["node-1=0"],
      removes: [],
    },
    {
      name: "the shared address's record is never removed",
      planned: [],
      views: [],
      current: at(record(SHARED_ENDPOINT, 0)),
      writes: [],
      removes: [],
    },
  ])("$name", ({ planned, views, current, known, create, writes, removes }) => {
    const keys = new Set(known ?? views.map((v) => v.nodeId));
    const out = planRecordChanges(planned, views, current, keys, 10, create);
    expect(ids(out.writes)).toEqual(writes);
    expect(ids(out.removes)).toEqual(removes);
    // The plan recorded in `dns#` names only records that exist or are written.
    for (const p of out.planned)
      expect(current.has(p.nodeId) || writes.includes(`${p.nodeId}=${p.weight}`)).toBe(true);
  });

  test("a change keeps the health check it had", () => {
    const out = planRecordChanges(
      [plan("node-0", 0)],
      [view("node-0")],
      at(record("node-0", 100, "hc-0")),
      new Set(["node-0"]),
      10,
    );
    expect(out.writes).toEqual([
      { nodeId: "node-0", address: "127.9.0.1", weight: 0, healthCheckId: "hc-0" },
    ]);
  });
});
