/**
 * The operator CLI against the emulator: a command that cannot do its job
 * says why, changes nothing, and exits 1. Each row: the fleet's state
 * (nodes with their heartbeat age and role, the lease holder), the command,
 * and the sentence it must answer with.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
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

describe("hafleet status", () => {
  it("of a fleet the table does not have: exits 1 and says so", async () => {
    const out = await hafleet("status", "--fleet", uniqueId("nosuch"));
    expect(out.stderr).toMatch(
      /fleet 'nosuch-\S+' has no nodes, lease, addresses or records in table \S+: is --fleet the fleet's id\?/,
    );
    expect(out.code).toBe(1);
  });

  it("of a dead node: says it is dead, when it was last seen, connections unknown", async () => {
    const fleetId = uniqueId("cli");
    await seed(fleetId, [
      { id: "node-1", ageS: 0, role: "active" },
      { id: "node-2", ageS: 303, role: "standby" },
    ]);
    const out = await hafleet("status", "--fleet", fleetId);
    expect(out.code).toBe(0);
    const line = out.stdout.split("\n").find((l) => l.startsWith("node-2"));
    expect(line).toMatch(/dead \(was standby\)\s+last seen 5m \d+s ago\s+-\s+127\.0\.0\.1\s+\S+\s+\?\s/);
  });
});

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

describe("hafleet config: get, edit, put round-trips", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hafleet-cli-config-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("what get prints, put takes back; diff shows an edit, then nothing", async () => {
    const fleetId = uniqueId("cli");
    const example = join(ROOT, "examples", "web-sticky.yaml");
    const put1 = await hafleet("config", "put", example, "--fleet", fleetId);
    expect(put1.stdout).toContain(`fleet '${fleetId}' config is now version 1`);

    const got = await hafleet("config", "get", "--fleet", fleetId);
    expect(got.code).toBe(0);
    expect(got.stderr).toMatch(
      new RegExp(`fleet '${fleetId}' config version 1, written \\S+ by hafleet config put`),
    );
    const edited = join(dir, "edited.yaml");
    await writeFile(edited, got.stdout.replace("headMs: 10000", "headMs: 5000"));

    const diff = await hafleet("config", "diff", edited, "--fleet", fleetId, "--exit-code");
    expect(diff.code).toBe(1);
    expect(diff.stdout).toContain(`--- fleet '${fleetId}' version 1`);
    expect(diff.stdout).toContain("-  headMs: 10000\n+  headMs: 5000");

    const put2 = await hafleet("config", "put", edited, "--fleet", fleetId);
    expect(put2.code).toBe(0);
    expect(put2.stdout).toContain("version 2");
    const same = await hafleet("config", "diff", edited, "--fleet", fleetId, "--exit-code");
    expect(same).toMatchObject({
      code: 0,
      stdout: `${edited} is the same as fleet '${fleetId}' version 2\n`,
    });

    const json = JSON.parse((await hafleet("config", "get", "--fleet", fleetId, "--json")).stdout);
    expect(json).toMatchObject({ version: 2, config: { timeouts: { headMs: 5000 } } });
  });

  it("a switch to active-active on nodes without addresses of their own is refused, and nothing written", async () => {
    const fleetId = uniqueId("cli");
    await seed(fleetId, [
      { id: "node-1", ageS: 0, role: "active" },
      { id: "node-2", ageS: 0, role: "standby" },
      { id: "node-3", ageS: 300, role: "standby" }, // dead: not asked
    ]);
    const passive = join(ROOT, "examples", "web-sticky.yaml");
    const active = join(ROOT, "examples", "active-active-dns.yaml");
    expect((await hafleet("config", "put", passive, "--fleet", fleetId)).code).toBe(0);
    const refused = await hafleet("config", "put", active, "--fleet", fleetId);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      "failover.mode active-active needs an Elastic IP of each node's own and a weighted record per node, " +
        "as the active-active stack makes them (cdk deploy -c mode=active-active); node-1, node-2 have no " +
        "address of its own: nothing was written",
    );
    const json = JSON.parse((await hafleet("config", "get", "--fleet", fleetId, "--json")).stdout);
    expect(json).toMatchObject({ version: 1, config: { failover: { mode: "active-passive" } } });
    // Once every live node has its own address (as a fleet deployed active-active), the switch goes through.
    for (const [id, ip] of [
      ["node-1", "198.51.100.1"],
      ["node-2", "198.51.100.2"],
    ])
      await store.update("state", { pk: keys.fleet(fleetId), sk: keys.node(id!) }, "SET publicIp = :ip", {
        values: { ":ip": ip },
      });
    const switched = await hafleet("config", "put", active, "--fleet", fleetId);
    expect(switched).toMatchObject({ code: 0, stdout: `fleet '${fleetId}' config is now version 2\n` });
  });

  it("validate needs no fleet, and names the line of a bad field", async () => {
    const bad = join(dir, "bad.yaml");
    await writeFile(
      bad,
      "listeners:\n  - { name: web, protocol: http, port: 80, pool: app }\npools:\n  app:\n    backends: [{ host: a, port: 0 }]\n",
    );
    const out = await hafleet("config", "validate", bad);
    expect(out.code).toBe(1);
    expect(out.stderr).toContain("pools.app.backends[0].port (line 5): Too small");
    const good = await hafleet("config", "validate", join(ROOT, "examples", "tcp-service.yaml"));
    expect(good).toMatchObject({ code: 0 });
    expect(good.stdout).toContain("a valid fleet config (1 listener, 1 pool, active-passive)");
  });
});
