/**
 * `hafleet status` as a person reads it: a dead node says it is dead and
 * when it was last seen, and shows nothing it last reported as if current.
 */
import { type FleetStatus, renderStatus } from "../../../lib/core/status";

type NodeLine = FleetStatus["nodes"][number];

const node = (over: Partial<NodeLine>): NodeLine => ({
  nodeId: "node-1",
  role: "active",
  heartbeatAgeMs: 400,
  seq: 9,
  address: "127.0.10.1",
  instanceId: "i-0123",
  drain: false,
  failed: null,
  load: { connections: 1 } as NodeLine["load"],
  ready: true,
  backends: null,
  ...over,
});

const status = (nodes: NodeLine[], mode: FleetStatus["mode"] = "active-passive"): FleetStatus => ({
  fleetId: "local",
  mode,
  lease: { holder: "node-2", token: 4, leaseMs: 2000 },
  nodes,
  elasticIps: [],
  dns: [],
});

/** The cells of the node table's row for `id`, by column name. */
function row(text: string, id: string): Record<string, string> {
  const lines = text.split("\n");
  const head = lines.find((l) => l.startsWith("NODE"))!;
  const line = lines.find((l) => l.startsWith(`${id} `))!;
  const starts = [...head.matchAll(/\S+/g)].map((m) => m.index!);
  const names = [...head.matchAll(/\S+/g)].map((m) => m[0]);
  return Object.fromEntries(
    names.map((n, i) => [n, line.slice(starts[i], i + 1 < starts.length ? starts[i + 1] : undefined).trim()]),
  );
}

// Each row: the node as the store has it, and the cells status must show.
const CASES: ReadonlyArray<readonly [string, Partial<NodeLine>, Record<string, string>]> = [
  [
    "a live node",
    { heartbeatAgeMs: 700 },
    { ROLE: "active", HEARTBEAT: "0.7s", READY: "yes", CONNS: "1", FLAGS: "-" },
  ],
  [
    "a node dead for five minutes, marked while it was alive",
    { heartbeatAgeMs: 303_000, failed: "probes fail while its heartbeat looks alive", ready: false },
    { ROLE: "dead (was active)", HEARTBEAT: "last seen 5m 3s ago", READY: "-", CONNS: "?", FLAGS: "-" },
  ],
  [
    "a dead node that was draining",
    { heartbeatAgeMs: 7_500_000, role: "draining", drain: true },
    { ROLE: "dead (was draining)", HEARTBEAT: "last seen 2h 5m ago", CONNS: "?", FLAGS: "draining" },
  ],
  [
    "a live node with a failed mark",
    { role: "standby", failed: "probes failed 3 times", ready: false },
    { ROLE: "standby", READY: "no", FLAGS: "failed: probes failed 3 times" },
  ],
];

test.each(CASES)("%s", (_what, over, cells) => {
  const got = row(renderStatus(status([node(over)])), "node-1");
  for (const [col, want] of Object.entries(cells)) expect(`${col}: ${got[col]}`).toContain(`${col}: ${want}`);
});

test.each([
  ["the lease holder", "active"],
  ["another node", "standby"],
])("in active-active %s is shown serving, as every live node is", (_what, role) => {
  expect(row(renderStatus(status([node({ role })], "active-active")), "node-1").ROLE).toBe("serving");
  expect(
    row(renderStatus(status([node({ role, heartbeatAgeMs: 303_000 })], "active-active")), "node-1").ROLE,
  ).toBe("dead (was serving)");
  expect(row(renderStatus(status([node({ role: "draining" })], "active-active")), "node-1").ROLE).toBe(
    "draining",
  );
});
