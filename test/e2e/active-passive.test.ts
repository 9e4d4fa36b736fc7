/**
 * Active-passive failover end to end, on the local fleet: nodes are real child
 * processes (proxy + agent), the Elastic IP is a real listener on its own
 * loopback address, the emulator holds the instances and the association, and
 * the health checker runs in-process.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { AssociateAddressCommand, EC2Client } from "@aws-sdk/client-ec2";
import { awsClientConfig } from "../../lib/core/aws";
import { ConfigStore } from "../../lib/core/config-store";
import { listEvents } from "../../lib/core/events";
import { fencedPut } from "../../lib/core/fence";
import { DEFAULT_LEASE_MS, DynamoLeaseStore } from "../../lib/core/lease";
import type { FleetStatus } from "../../lib/core/status";
import { keys } from "../../lib/core/tables";
import { hash32 } from "../../proxy/hash";
import { Pool } from "../../proxy/pool";
import { uniqueId } from "../harness/aws";
import { bundle } from "../harness/bundle";
import { FaultProxy } from "../harness/fault-proxy";
import { LocalFleet, readLocalState } from "../harness/local-fleet";
import { StickyTraffic } from "../harness/traffic";

jest.setTimeout(120_000);

let fleet: LocalFleet | undefined;
let traffic: StickyTraffic | undefined;
let proxy: FaultProxy | undefined;
afterEach(async () => {
  await traffic?.stop();
  await fleet?.down();
  await proxy?.close();
  fleet = undefined;
  traffic = undefined;
  proxy = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function upWithTraffic(
  options: ConstructorParameters<typeof LocalFleet>[0] = {},
  beforeTraffic: (f: LocalFleet) => Promise<void> = async () => {},
  clients = 10,
) {
  // A fleet id of its own: the emulator outlives each test, and Elastic IPs are found by their fleet tag.
  fleet = new LocalFleet({ nodes: 2, fleetId: uniqueId("e2e"), ...options });
  await fleet.up();
  await beforeTraffic(fleet);
  traffic = new StickyTraffic({ url: fleet.url, clients });
  traffic.start();
  await fleet.waitFor(
    () =>
      traffic!.outcomes.filter((o) => o.ok).length >= 30 &&
      traffic!.backendsBefore(Date.now()).every((b) => b !== undefined),
    20_000,
    "traffic did not flow",
  );
  const active = await fleet.activeNode();
  expect(active).toBeDefined();
  return { fleet, traffic, active: active! };
}

/** Waits until every node sees each backend as `healthy` says. */
async function backendsSeen(f: LocalFleet, healthy: Record<string, boolean>, what: string): Promise<void> {
  await f.waitFor(
    async () => {
      for (const n of f.nodes) {
        const seen = await f.backendHealth(n.nodeId);
        if (!seen || Object.entries(healthy).some(([id, ok]) => seen[id] !== ok)) return false;
      }
      return true;
    },
    30_000,
    what,
  );
}

async function leaseHolder(f: LocalFleet) {
  return new DynamoLeaseStore(f.store, f.fleetId).get("fleet");
}

test("SIGKILL of the active under load: traffic resumes through the Elastic IP, sticky clients keep their backend, the audit trail says why", async () => {
  const logs: { nodeId: string; line: string }[] = [];
  const all = { "backend-1": true, "backend-2": true, "backend-3": true };
  // backend-1 fails its checks when the clients first arrive: every session is assigned
  // backend-2 or -3, where consistent hashing over all three gives a third of them backend-1.
  // (One of three only: with two down the pool would be in panic and use all three.)
  const {
    fleet: f,
    traffic: t,
    active,
  } = await upWithTraffic(
    { onNodeLog: (nodeId, line) => logs.push({ nodeId, line }) },
    async (up) => {
      up.setBackendHealthy("backend-1", false);
      await backendsSeen(up, { ...all, "backend-1": false }, "backend-1 down on every node");
    },
    30,
  );
  const standby = f.nodes.find((n) => n.nodeId !== active.nodeId)!;
  const assignedAt = Date.now();
  const assigned = t.backendsBefore(assignedAt);
  expect(assigned.every((b) => b === "backend-2" || b === "backend-3")).toBe(true);
  // It is back before the failover, on every node: the standby's hashing would now send
  // some sessions to backend-1, so only the session table can keep them where they are.
  f.setBackendHealthy("backend-1", true);
  await backendsSeen(f, all, "every backend up on every node");
  const pool = new Pool("app", (await new ConfigStore(f.store, f.fleetId).get())!.config.pools.app!);
  const sessionKeys = t.sessionKeys();
  const hashedElsewhere = sessionKeys.filter((k, c) => pool.hashPick(hash32(k!))?.id !== assigned[c]);
  expect(hashedElsewhere.length).toBeGreaterThan(0); // none: (2/3)^30, about 5e-6
  await sleep(1000);
  const killAt = Date.now();
  f.signal(active.nodeId, "SIGKILL");
  await f.waitFor(() => !!t.firstSuccessAfter(killAt), 20_000, "traffic did not resume");
  await sleep(2000);
  await t.stop();

  const sessions = t.sessionsKept(killAt);
  expect(sessions.total).toBe(30);
  expect(sessions.moved).toEqual([]);
  // And every answer since the first assignment came from the backend assigned then: neither
  // backend-1's return nor the failover moved a session (hashing alone would have done both).
  expect(t.backendsAfter(assignedAt)).toEqual(assigned.map((b) => new Set([b])));
  // Active, and the event, follow the read-back, which EC2 may answer stale for a while after
  // traffic moved.
  const lastMove = async () =>
    (await listEvents(f.store, f.fleetId)).filter((e) => e.kind === "vip-moved").at(-1);
  await f.waitFor(
    async () =>
      (await lastMove())?.by === standby.nodeId && (await f.activeNode())?.nodeId === standby.nodeId,
    20_000,
    "the standby neither active nor its vip-moved written",
  );
  expect((await f.activeNode())?.nodeId).toBe(standby.nodeId);
  const lease = await leaseHolder(f);
  expect(lease?.holder).toBe(standby.nodeId);
  const vip = await f.store.get("state", {
    pk: keys.fleet(f.fleetId),
    sk: keys.vip(f.elasticIp.allocationId),
  });
  expect(vip).toMatchObject({
    owner: standby.nodeId,
    instanceId: standby.instanceId,
    fenceToken: lease?.token,
  });
  const moved = await lastMove();
  expect(moved).toMatchObject({
    by: standby.nodeId,
    token: lease?.token,
    reason: `took over the lease from ${active.nodeId}`,
  });
  // The log line the stack's metric filter counts as a takeover: event, fleet and from.
  const takeovers = logs
    .filter((l) => l.nodeId === standby.nodeId && l.line.startsWith("{"))
    .map((l) => JSON.parse(l.line) as Record<string, unknown>)
    .filter((j) => j.event === "vip-moved");
  expect(takeovers).toEqual([
    expect.objectContaining({ fleet: f.fleetId, from: active.nodeId, token: lease?.token }),
  ]);
});

test("SIGSTOP of the active past its lease, then SIGCONT: it does not take the Elastic IP back, and its fenced writes are refused", async () => {
  const { fleet: f, traffic: t, active } = await upWithTraffic();
  const before = await leaseHolder(f);
  f.signal(active.nodeId, "SIGSTOP");
  const stoppedAt = Date.now();
  await f.waitFor(async () => (await leaseHolder(f))?.holder !== active.nodeId, 20_000, "nobody took over");
  await f.waitFor(() => !!t.firstSuccessAfter(Date.now() - 100), 20_000, "traffic did not resume");
  expect(Date.now() - stoppedAt).toBeGreaterThan(DEFAULT_LEASE_MS);
  f.signal(active.nodeId, "SIGCONT");
  await sleep(4000); // the resumed node has every chance to misbehave
  const after = await leaseHolder(f);
  expect(after?.holder).not.toBe(active.nodeId);
  expect(after!.token).toBeGreaterThan(before!.token);
  expect((await f.activeNode())?.nodeId).toBe(after?.holder);
  // What the resumed node would write with its old token is refused by the store.
  await expect(
    fencedPut(f.store, {
      fleetId: f.fleetId,
      sk: keys.vip(f.elasticIp.allocationId),
      token: before!.token,
      attrs: { owner: active.nodeId, instanceId: active.instanceId },
      lease: { name: "fleet", holder: active.nodeId },
    }),
  ).rejects.toMatchObject({ code: "HAFLEET_FENCED" });
  const events = await listEvents(f.store, f.fleetId);
  expect(
    events.filter(
      (e) => e.by === active.nodeId && e.token === before!.token && e.at > new Date(stoppedAt).toISOString(),
    ),
  ).toEqual([]);
  const res = await fetch(`http://${active.address}:${active.adminPort}/readyz`);
  expect(((await res.json()) as { role: string }).role).toBe("standby");
});

test("an Elastic IP moved behind the system's back is moved back", async () => {
  const { fleet: f, active } = await upWithTraffic();
  const other = f.nodes.find((n) => n.nodeId !== active.nodeId)!;
  const ec2 = new EC2Client(awsClientConfig());
  try {
    await ec2.send(
      new AssociateAddressCommand({
        AllocationId: f.elasticIp.allocationId,
        InstanceId: other.instanceId,
        AllowReassociation: true,
      }),
    );
  } finally {
    ec2.destroy();
  }
  // EC2 applies the association a moment after accepting it, and the holder and the checker read
  // it stale for a while: the address is on the active still, or again, only once one of them has
  // seen it elsewhere and moved it back, which its event says (written after its read-back).
  const repaired = async () =>
    (await listEvents(f.store, f.fleetId)).some(
      (e) => e.kind === "vip-repaired" || e.kind === "vip-reconciled",
    );
  await f.waitFor(repaired, 20_000, "no vip-repaired or vip-reconciled event was written");
  await f.waitFor(
    async () => (await f.activeNode())?.nodeId === active.nodeId,
    10_000,
    "the Elastic IP was not moved back",
  );
});

test("both nodes down, then one back: it becomes active and traffic flows", async () => {
  const { fleet: f, traffic: t } = await upWithTraffic();
  for (const n of f.nodes) f.signal(n.nodeId, "SIGKILL");
  await sleep(1000);
  const downAt = Date.now();
  const back = f.nodes[1]!;
  await f.startNode(back);
  // The other commands (`hafleet local status`, `stop`) find it by the pid the state file records.
  const recorded = (await readLocalState(f.fleetId)).nodes.find((n) => n.nodeId === back.nodeId);
  expect(recorded?.pid).toBe(back.child!.pid);
  await f.waitFor(
    async () =>
      (await f.activeNode())?.nodeId === back.nodeId && (await leaseHolder(f))?.holder === back.nodeId,
    30_000,
    "the restarted node did not become active",
  );
  await f.waitFor(() => !!t.firstSuccessAfter(Date.now() - 50), 20_000, "traffic did not flow");
  expect(t.firstSuccessAfter(downAt)).toBeDefined();
});

test("the store unreachable for a while: the active keeps serving and no failover happens", async () => {
  proxy = await new FaultProxy(process.env.AWS_ENDPOINT_URL!).start();
  const { fleet: f, traffic: t, active } = await upWithTraffic({ nodeEndpoint: proxy.endpoint });
  const before = await leaseHolder(f);
  const outage = proxy.add({ action: { kind: "reset" } });
  const cutAt = Date.now();
  await sleep(6000); // three times the lease
  outage.remove();
  const healedAt = Date.now();
  await sleep(5000);
  await t.stop();
  expect(outage.hits()).toBeGreaterThan(10);
  // Served throughout: no failed request during or after the outage.
  expect(t.failuresBetween(cutAt)).toEqual([]);
  expect(t.outcomes.filter((o) => o.ok && o.sentAt > cutAt && o.sentAt < healedAt).length).toBeGreaterThan(
    50,
  );
  // No failover: the same node holds the Elastic IP and, again, the lease.
  expect((await f.activeNode())?.nodeId).toBe(active.nodeId);
  const after = await leaseHolder(f);
  expect(after?.holder).toBe(active.nodeId);
  expect(after?.holder).toBe(before?.holder);
});

test("a graceful handover (`hafleet failover`), then SIGTERM of the new active: the Elastic IP moves twice and no request fails", async () => {
  const { fleet: f, traffic: t, active } = await upWithTraffic();
  const other = f.nodes.find((n) => n.nodeId !== active.nodeId)!;
  const cli = await bundle("bin/hafleet.ts");
  const hafleet = (...args: string[]) =>
    promisify(execFile)(process.execPath, [cli, ...args, "--fleet", f.fleetId], {
      env: process.env,
      timeout: 30_000,
    });
  const startedAt = Date.now();

  // The command returns once the standby holds the lease and the Elastic IP, and says so.
  const out = await hafleet("failover");
  expect(out.stdout).toContain(`asked ${active.nodeId}`);
  expect(out.stdout).toMatch(new RegExp(`${other.nodeId} took over the lease \\(token \\d+\\)`));
  expect(out.stdout).toContain(`Elastic IP ${f.elasticIp.publicIp} is on ${other.nodeId}`);
  await f.waitFor(
    async () => (await f.activeNode())?.nodeId === other.nodeId,
    20_000,
    "the Elastic IP did not move on failover",
  );
  // Roles in `node#` items are at most one heartbeat old: ask until they settle.
  let status: FleetStatus | undefined;
  await f.waitFor(
    async () => {
      status = JSON.parse((await hafleet("status", "--json")).stdout) as FleetStatus;
      const role = (id: string) => status?.nodes.find((n) => n.nodeId === id)?.role;
      return role(active.nodeId) === "standby" && role(other.nodeId) === "active";
    },
    10_000,
    "the nodes never reported their new roles",
  );
  if (!status) throw new Error("no status");
  expect(status.lease?.holder).toBe(other.nodeId);
  expect(status.nodes.find((n) => n.nodeId === other.nodeId)?.backends).toEqual(
    ["backend-1", "backend-2", "backend-3"].map((id) => ({ pool: "app", id, healthy: true, ejected: false })),
  );
  expect(status.elasticIps).toEqual([
    expect.objectContaining({
      allocationId: f.elasticIp.allocationId,
      node: other.nodeId,
      desiredOwner: other.nodeId,
    }),
  ]);
  expect(status.nodes.map((n) => [n.nodeId, n.role]).sort()).toEqual(
    [
      [active.nodeId, "standby"],
      [other.nodeId, "active"],
    ].sort(),
  );

  await sleep(6000); // the node that yielded contends again after 2 x leaseMs (4 s from the command)
  f.signal(other.nodeId, "SIGTERM");
  await f.waitFor(
    async () => (await f.activeNode())?.nodeId === active.nodeId,
    20_000,
    "the Elastic IP did not move on SIGTERM",
  );
  await sleep(1500);
  await t.stop();
  expect(t.failuresBetween(startedAt)).toEqual([]);
  expect(t.sessionsKept(startedAt).moved).toEqual([]);

  // With the other node gone, a failover cannot happen: the command says why, changes nothing,
  // and exits 1.
  const refused = await hafleet("failover").then(
    () => undefined,
    (err: { code: number; stderr: string }) => err,
  );
  expect(refused?.code).toBe(1);
  expect(refused?.stderr).toMatch(
    new RegExp(
      `no node can take over from ${active.nodeId}: ${other.nodeId} is (stopped|draining|dead|marked failed)`,
    ),
  );
  expect((await leaseHolder(f))?.holder).toBe(active.nodeId);
});

test("`hafleet drain` of the active under load: it serves until the Elastic IP has moved, and no request fails", async () => {
  const { fleet: f, traffic: t, active } = await upWithTraffic();
  const other = f.nodes.find((n) => n.nodeId !== active.nodeId)!;
  const cli = await bundle("bin/hafleet.ts");
  const startedAt = Date.now();
  const out = await promisify(execFile)(
    process.execPath,
    [cli, "drain", active.nodeId, "--fleet", f.fleetId],
    {
      env: process.env,
      timeout: 90_000,
    },
  );
  expect(out.stdout).toContain(`asked ${active.nodeId} to drain`);
  await f.waitFor(
    async () => (await f.activeNode())?.nodeId === other.nodeId,
    20_000,
    "the Elastic IP did not move on drain",
  );
  await sleep(1500);
  await t.stop();
  expect(t.failuresBetween(startedAt)).toEqual([]);
  expect(t.sessionsKept(startedAt).moved).toEqual([]);
});
