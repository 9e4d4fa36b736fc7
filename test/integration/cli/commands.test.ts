/**
 * The operator CLI against the emulator: a command that cannot do its job
 * says why, changes nothing, and exits 1. Each row: the fleet's state
 * (nodes with their heartbeat age and role, the lease holder), the command,
 * and the sentence it must answer with.
 */
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { DynamoLeaseStore, Lease } from "../../../lib/core/lease";
import type { StateStore } from "../../../lib/core/store";
import { keys, type TableNames } from "../../../lib/core/tables";
import { freshTables, storeOn, uniqueId } from "../../harness/aws";

const ROOT = resolve(__dirname, "..", "..", "..");
const run = promisify(execFile);

let tables: TableNames;
let store: StateStore;
beforeAll(async () => {
  tables = await freshTables();
  store = storeOn(tables);
});
afterAll(() => store.destroy());

async function hafleet(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = {
    ...process.env,
    HAFLEET_STATE_TABLE: tables.state,
    HAFLEET_SESSIONS_TABLE: tables.sessions,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
  };
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", "bin/hafleet.ts", ...args], {
      cwd: ROOT,
      env,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

interface NodeRow {
  readonly id: string;
  readonly ageS: number;
  readonly role: string;
}

async function seed(fleetId: string, nodes: readonly NodeRow[], holder?: string): Promise<void> {
  for (const n of nodes) {
    await store.put("state", {
      pk: keys.fleet(fleetId),
      sk: keys.node(n.id),
      nodeId: n.id,
      seq: 7,
      role: n.role,
      address: "127.0.0.1",
      heartbeatAt: Date.now() - n.ageS * 1000,
    });
  }
  if (holder) {
    const lease = new Lease(new DynamoLeaseStore(store, fleetId), { name: "fleet", holderId: holder });
    await lease.tick();
    expect(lease.isLeader()).toBe(true);
  }
}

const commandOf = async (fleetId: string, node: string) =>
  (await store.get("state", { pk: keys.fleet(fleetId), sk: keys.node(node) }))?.command;

const CASES: ReadonlyArray<{
  name: string;
  nodes: readonly NodeRow[];
  holder?: string;
  args: readonly string[];
  says: RegExp;
  untouched: string;
}> = [
  {
    name: "drain of a node dead for minutes",
    nodes: [{ id: "node-1", ageS: 300, role: "standby" }],
    args: ["drain", "node-1"],
    says: /node-1 is not running \(heartbeat \d+ s old, role standby\): nothing to drain/,
    untouched: "node-1",
  },
  {
    name: "drain of a node that has stopped",
    nodes: [{ id: "node-1", ageS: 0, role: "stopped" }],
    args: ["drain", "node-1"],
    says: /node-1 is not running \(heartbeat \d+ s old, role stopped\): nothing to drain/,
    untouched: "node-1",
  },
  {
    name: "failover with the only standby dead",
    nodes: [
      { id: "node-1", ageS: 0, role: "active" },
      { id: "node-2", ageS: 300, role: "standby" },
    ],
    holder: "node-1",
    args: ["failover"],
    says: /no node can take over from node-1: node-2 is dead \(heartbeat \d+ s old\); nothing was changed/,
    untouched: "node-1",
  },
  {
    name: "failover of a fleet of one",
    nodes: [{ id: "node-1", ageS: 0, role: "active" }],
    holder: "node-1",
    args: ["failover"],
    says: /no node can take over from node-1: it is the only node; nothing was changed/,
    untouched: "node-1",
  },
];

describe("hafleet commands that cannot do their job", () => {
  it.each(CASES)("$name: exits 1 with the reason and changes nothing", async (row) => {
    const fleetId = uniqueId("cli");
    await seed(fleetId, row.nodes, row.holder);
    const out = await hafleet(...row.args, "--fleet", fleetId);
    expect(out.stderr).toMatch(row.says);
    expect(out.code).toBe(1);
    expect(await commandOf(fleetId, row.untouched)).toBeUndefined();
  });
});
