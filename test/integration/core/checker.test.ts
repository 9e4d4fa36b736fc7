import { AssociateAddressCommand, EC2Client } from "@aws-sdk/client-ec2";
import { CreateHostedZoneCommand, Route53Client } from "@aws-sdk/client-route-53";
import { handler } from "../../../lambdas/health-checker/handler";
import { awsClientConfig } from "../../../lib/core/aws";
import { HealthChecker } from "../../../lib/core/checker";
import { ConfigStore } from "../../../lib/core/config-store";
import { WeightedRecords } from "../../../lib/core/dns";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { FencedError } from "../../../lib/core/errors";
import { listEvents } from "../../../lib/core/events";
import { fencedPut } from "../../../lib/core/fence";
import { Heartbeater, listNodes, setNodeFailed } from "../../../lib/core/heartbeat";
import { DynamoLeaseStore, Lease, newRvn } from "../../../lib/core/lease";
import type { StateStore } from "../../../lib/core/store";
import { keys, type TableNames } from "../../../lib/core/tables";
import { emulatorEndpoint, freshTables, storeOn, uniqueId } from "../../harness/aws";
import { allocateElasticIp, runInstances } from "../../harness/ec2";
import { awsOp, FaultProxy } from "../../harness/fault-proxy";
import { createTcpHealthCheck } from "../../harness/health-checks";
import { HealthEndpoint, startServingNode } from "../../harness/health-endpoint";

let tables: TableNames;
let store: StateStore;
let ec2: EC2Client;
let eips: ElasticIps;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  tables = await freshTables();
  store = storeOn(tables);
  ec2 = new EC2Client(awsClientConfig());
  eips = new ElasticIps({ ec2 });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => {
  store.destroy();
  ec2.destroy();
});

/** Two nodes, node-a holding the fleet lease with the Elastic IP on its instance. */
async function fleetOfTwo() {
  const fleetId = uniqueId("fleet");
  const [ia, ib] = await runInstances(ec2, fleetId, ["node-a", "node-b"]);
  const eip = await allocateElasticIp(ec2, fleetId);
  const admins = { a: new HealthEndpoint(), b: new HealthEndpoint() };
  const urls = { a: await admins.a.start(), b: await admins.b.start() };
  const beats = (["a", "b"] as const).map(
    (n) =>
      new Heartbeater({
        store,
        fleetId,
        nodeId: `node-${n}`,
        periodMs: 200,
        report: () => ({
          address: "127.0.0.1",
          adminUrl: urls[n],
          role: n === "a" ? "active" : "standby",
          drain: false,
          load: { connections: 0, rps: 0 },
          version: "test",
          instanceId: n === "a" ? ia! : ib!,
        }),
      }),
  );
  for (const b of beats) {
    await b.beat();
    b.start();
  }
  // node-a's holding renews in this test process, which the full suite keeps busy: the 2000 ms
  // lease the file was written against rides out stalls the 1200 ms default may not (a lost
  // holding is taken back with a new token, and vip# no longer matches it).
  const lease = new Lease(new DynamoLeaseStore(store, fleetId), {
    name: "fleet",
    holderId: "node-a",
    leaseMs: 2000,
  });
  lease.start();
  await new Promise<void>((r) => lease.once("acquired", () => r()));
  await fencedPut(store, {
    fleetId,
    sk: keys.vip(eip.allocationId),
    token: lease.token!,
    attrs: { allocationId: eip.allocationId, owner: "node-a", instanceId: ia },
    lease: { name: "fleet", holder: "node-a" },
  });
  await eips.moveTo(eip.allocationId, ia!);
  cleanups.push(async () => {
    await lease.stop();
    for (const b of beats) await b.stop();
    await admins.a.close();
    await admins.b.close();
  });
  return { fleetId, ia: ia!, ib: ib!, eip, admins, lease, beats };
}

function checker(fleetId: string, id = "checker-1", probeTimeoutMs = 500) {
  const c = new HealthChecker({ store, fleetId, checkerId: id, elasticIps: eips, probeTimeoutMs });
  cleanups.push(() => c.stop());
  return c;
}

/** Node B takes the fleet lease over from a node A that stopped renewing, as B's agent would: the lease, `vip#`, the address. */
async function takeOverByB(f: Awaited<ReturnType<typeof fleetOfTwo>>): Promise<number> {
  await f.lease.stop(); // node-a stops renewing (hung), without releasing
  const leases = new DynamoLeaseStore(store, f.fleetId);
  const seen = (await leases.get("fleet"))!;
  const taken = await leases.updateIf(
    "fleet",
    { rvn: seen.rvn },
    { holder: "node-b", bumpToken: true, rvn: newRvn(), leaseMs: seen.leaseMs, updatedAtMs: Date.now() },
  );
  expect(taken?.holder).toBe("node-b");
  await fencedPut(store, {
    fleetId: f.fleetId,
    sk: keys.vip(f.eip.allocationId),
    token: taken!.token,
    attrs: { allocationId: f.eip.allocationId, owner: "node-b", instanceId: f.ib },
    lease: { name: "fleet", holder: "node-b" },
  });
  await eips.moveTo(f.eip.allocationId, f.ib);
  return taken!.token;
}

async function leader(c: HealthChecker) {
  c.start();
  for (let i = 0; i < 100 && !c.lease.isLeader(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(c.lease.isLeader()).toBe(true);
}

/**
 * Moves the address to `instance` behind the system's back and waits until
 * DescribeAddresses shows it there: EC2 applies an association a moment after
 * accepting it, and reads show the old one for a while after.
 */
async function moveBehindBack(allocationId: string, instance: string): Promise<void> {
  await ec2.send(
    new AssociateAddressCommand({
      AllocationId: allocationId,
      InstanceId: instance,
      AllowReassociation: true,
    }),
  );
  for (let i = 0; i < 200; i++) {
    if ((await eips.describe(allocationId)).instanceId === instance) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${allocationId} never showed ${instance}`);
}

test("an Elastic IP moved behind the system's back is moved back to the holder's instance, with an audit event", async () => {
  const f = await fleetOfTwo();
  await moveBehindBack(f.eip.allocationId, f.ib);
  const c = checker(f.fleetId);
  await leader(c);
  const report = await c.runOnce();
  expect(report.errors).toEqual([]);
  expect(report.reassociated).toEqual([f.eip.allocationId]);
  expect((await eips.describe(f.eip.allocationId)).instanceId).toBe(f.ia);
  const events = await listEvents(store, f.fleetId);
  expect(events.map((e) => e.kind)).toContain("vip-reconciled");
  // Nothing to do on the next run.
  expect((await c.runOnce()).reassociated).toEqual([]);
});

test("a standby that takes over while the checker probes a hung node keeps the Elastic IP: the checker re-reads before it associates", async () => {
  const f = await fleetOfTwo();
  // The probe of the hung node lasts until the test releases it, not until a timer fires.
  const c = checker(f.fleetId, "checker-1", 30_000);
  await leader(c);
  expect((await c.runOnce()).errors).toEqual([]);
  f.admins.a.hang = true;
  const probing = f.admins.a.nextProbe();
  const run = c.runOnce();
  await probing; // the run has read the lease and vip# (node-a's), and waits on node-a's probe
  const token = await takeOverByB(f);
  f.admins.a.release();
  const report = await run;
  expect(report.errors).toEqual([]);
  expect(report.reassociated).toEqual([]);
  expect(report.vips).toEqual([expect.objectContaining({ action: "none", reason: "associated as desired" })]);
  // The end state the issue saw was lease and vip# on node-b, the address on node-a.
  expect((await new DynamoLeaseStore(store, f.fleetId).get("fleet"))?.token).toBe(token);
  expect((await eips.describe(f.eip.allocationId)).instanceId).toBe(f.ib);
});

test("an Elastic IP is never moved toward a node the checker judges failed, even one whose vip# is current", async () => {
  const f = await fleetOfTwo();
  const c = checker(f.fleetId);
  await leader(c);
  f.admins.a.healthy = false;
  await c.runOnce();
  expect((await c.runOnce()).marked).toEqual(["node-a"]);
  // node-a still holds the lease and its vip# is current (its agent has not stepped down yet);
  // the address is moved to node-b, as the standby's promotion will move it.
  await moveBehindBack(f.eip.allocationId, f.ib);
  const report = await c.runOnce();
  expect(report.nodes.find((n) => n.nodeId === "node-a")?.verdict).toBe("failed");
  expect(report.reassociated).toEqual([]);
  expect(report.vips[0]?.reason).toMatch(/node-a is judged failed/);
  expect((await eips.describe(f.eip.allocationId)).instanceId).toBe(f.ib);
});

test("the checker's AssociateAddress is one attempt, aborted at its lease's validity, and recorded in flight first", async () => {
  const f = await fleetOfTwo();
  await moveBehindBack(f.eip.allocationId, f.ib);
  const proxy = await new FaultProxy(process.env.AWS_ENDPOINT_URL!).start();
  const viaProxy = storeOn(tables, proxy.endpoint);
  // A request timeout longer than the delay: only the lease's validity may end the call.
  const slowEips = new ElasticIps({ aws: { endpoint: proxy.endpoint, requestTimeoutMs: 15_000 } });
  // Its lease as deployed (6000 ms) is valid at most 5400 ms after a renewal began; the move is
  // answered after 8000 ms.
  const c = new HealthChecker({
    store: viaProxy,
    fleetId: f.fleetId,
    checkerId: "checker-1",
    elasticIps: slowEips,
    probeTimeoutMs: 500,
  });
  cleanups.push(async () => {
    proxy.clear();
    await c.stop();
    slowEips.destroy();
    viaProxy.destroy();
    await proxy.close();
  });
  await leader(c);
  // Its renewals go on: only the validity the move began under may end it, not the holding's end.
  const delayed = proxy.add({ match: awsOp("EC2.AssociateAddress"), action: { kind: "latency", ms: 8000 } });
  const report = await c.runOnce();
  expect(delayed.hits()).toBe(1);
  expect(report.reassociated).toEqual([]);
  expect(report.vips).toEqual([
    expect.objectContaining({ allocationId: f.eip.allocationId, action: "associate", ok: false }),
  ]);
  expect(c.lease.isLeader()).toBe(true);
  // The lease item said a call may be in flight before it began: the next checker waits for it.
  expect((await new DynamoLeaseStore(store, f.fleetId).get("checker"))?.inFlight).toBe(true);
  // And no audit event claims a move that its author gave up on.
  expect((await listEvents(store, f.fleetId)).filter((e) => e.kind === "vip-reconciled")).toEqual([]);
});

test("a gray failure (probes fail, heartbeats go on) is marked failed after `fall` probes, and cleared after recovery", async () => {
  const f = await fleetOfTwo();
  const c = checker(f.fleetId);
  await leader(c);
  expect((await c.runOnce()).marked).toEqual([]);
  f.admins.a.healthy = false;
  expect((await c.runOnce()).marked).toEqual([]); // one failure is not enough (fall 2)
  const second = await c.runOnce();
  expect(second.marked).toEqual(["node-a"]);
  expect(second.nodes.find((n) => n.nodeId === "node-a")).toMatchObject({
    verdict: "gray-failure",
    holder: true,
  });
  const nodeA = (await listNodes(store, f.fleetId)).find((n) => n.nodeId === "node-a");
  expect(nodeA?.failed).toMatchObject({ by: "checker-1", token: c.lease.token });
  f.admins.a.healthy = true;
  await c.runOnce();
  expect((await c.runOnce()).cleared).toEqual(["node-a"]);
  expect((await listNodes(store, f.fleetId)).find((n) => n.nodeId === "node-a")?.failed).toBeUndefined();
});

test("a checker-side network fault (every probe fails, heartbeats go on) marks no node: someone may still lead", async () => {
  const f = await fleetOfTwo();
  const c = checker(f.fleetId);
  await leader(c);
  await c.runOnce();
  // What the checker sees when its own path to the nodes breaks: every probe fails.
  f.admins.a.healthy = false;
  f.admins.b.healthy = false;
  const reports = [await c.runOnce(), await c.runOnce(), await c.runOnce()];
  expect(reports.flatMap((r) => r.marked)).toEqual([]);
  expect(reports.at(-1)?.withheld).toEqual(["node-a", "node-b"]);
  expect(reports.at(-1)?.nodes.map((n) => n.verdict)).toEqual(["gray-failure", "gray-failure"]);
  expect((await listNodes(store, f.fleetId)).map((n) => n.failed)).toEqual([undefined, undefined]);
  // One node failing alone is still marked: one of two is not a majority.
  f.admins.b.healthy = true;
  await c.runOnce();
  await c.runOnce();
  expect((await listNodes(store, f.fleetId)).find((n) => n.nodeId === "node-a")?.failed).toBeDefined();
});

/**
 * The fleet's heartbeats driven by hand, one beat of each node and one checker run per step:
 * a mark's TTL is counted in the node's own beats, so the test counts them too.
 */
async function steppedFleet() {
  const f = await fleetOfTwo();
  for (const b of f.beats) await b.stop();
  const [a, b] = f.beats as [Heartbeater, Heartbeater];
  const c = checker(f.fleetId);
  await leader(c);
  const step = async () => {
    await b.beat();
    const seenByAgent = await a.beat(); // the record node-a's agent reads its mark from
    return { seenByAgent, report: await c.runOnce() };
  };
  const markOfA = async () =>
    (await store.get("state", { pk: keys.fleet(f.fleetId), sk: keys.node("node-a") }))?.failed;
  return { ...f, a, c, step, markOfA };
}

// Defaults: markTtlMs 30000 over heartbeatMs 1000, so a mark holds 30 of the node's beats.
const MARK_BEATS = 30;

test("a mark left by a checker that stopped running lapses after its TTL, counted in the node's own beats", async () => {
  const f = await steppedFleet();
  f.admins.a.healthy = false;
  await f.step();
  expect((await f.step()).report.marked).toEqual(["node-a"]);
  await f.c.stop(); // the checker stops (its schedule broken, its account locked out)
  const { untilSeq } = await f.markOfA();
  const seen: { seq: number; marked: boolean }[] = [];
  for (let i = 0; i <= MARK_BEATS && seen.at(-1)?.marked !== false; i++) {
    const r = await f.a.beat();
    seen.push({ seq: r.seq, marked: !!r.failed });
  }
  expect(seen.filter((s) => !s.marked).map((s) => s.seq)).toEqual([untilSeq]);
  expect(seen.filter((s) => s.marked).length).toBe(MARK_BEATS - 1);
  // Every reader sees the same: the checker's and the status's read of node# too.
  expect((await listNodes(store, f.fleetId)).find((n) => n.nodeId === "node-a")?.failed).toBeUndefined();
});

test("while a marked node still fails, the checker renews its mark before it lapses", async () => {
  const f = await steppedFleet();
  f.admins.a.healthy = false;
  await f.step();
  expect((await f.step()).report.marked).toEqual(["node-a"]);
  const first = (await f.markOfA()).untilSeq;
  const renewed: string[] = [];
  for (let i = 0; i < 2 * MARK_BEATS; i++) {
    const { seenByAgent, report } = await f.step();
    expect(seenByAgent.failed).toBeDefined();
    expect(report.marked).toEqual([]); // renewed, never marked anew
    renewed.push(...report.renewed);
  }
  expect(renewed.length).toBeGreaterThanOrEqual(3);
  expect(new Set(renewed)).toEqual(new Set(["node-a"]));
  expect((await f.markOfA()).untilSeq).toBeGreaterThan(first + MARK_BEATS);
  // Recovered: cleared, and renewed no more.
  f.admins.a.healthy = true;
  await f.step();
  expect((await f.step()).report.cleared).toEqual(["node-a"]);
  expect(await f.markOfA()).toBeUndefined();
});

test("of two overlapping checkers only the lease holder runs, and a deposed checker's writes are fenced", async () => {
  const f = await fleetOfTwo();
  const one = checker(f.fleetId, "checker-1");
  await leader(one);
  const two = checker(f.fleetId, "checker-2");
  two.start();
  await new Promise((r) => setTimeout(r, 300));
  const skipped = await two.runOnce();
  expect(skipped).toMatchObject({ ran: false, skippedReason: "checker lease held by checker-1" });
  const oldToken = one.lease.token!;
  await one.stop(); // hands over
  for (let i = 0; i < 100 && !two.lease.isLeader(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(two.lease.token).toBe(oldToken + 1);
  const err = await setNodeFailed(
    store,
    f.fleetId,
    "node-b",
    { by: "checker-1", reason: "stale", atMs: 0, token: oldToken, untilSeq: 1000 },
    {
      name: "checker",
      holder: "checker-1",
      token: oldToken,
    },
  ).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(FencedError);
  expect((await listNodes(store, f.fleetId)).find((n) => n.nodeId === "node-b")?.failed).toBeUndefined();
});

test("the Lambda handler starts no run that could not end before its timeout minus the margin, and returns", async () => {
  const f = await fleetOfTwo();
  process.env.HAFLEET_STATE_TABLE = tables.state;
  process.env.HAFLEET_SESSIONS_TABLE = tables.sessions;
  process.env.POWERTOOLS_METRICS_DISABLED = "true";
  // The Lambda's remaining time as the test decides it, by the runs made (one probe of node-a
  // each): ample for three runs, then 10 ms over the 5 s margin, less than any run takes.
  const remaining = () => (f.admins.a.probes < 3 ? 600_000 : 5010);
  const context = { awsRequestId: "req-2", getRemainingTimeInMillis: remaining, functionName: "checker" };
  const result = await handler({ fleetId: f.fleetId, runForMs: 8000, intervalMs: 200 }, context as never);
  expect(result.runs).toBe(3);
  expect(f.admins.a.probes).toBe(3);
  expect(result.errors).toBe(0);
});

test("the Lambda handler runs the loop in-process and refuses a bad event without running", async () => {
  const f = await fleetOfTwo();
  process.env.HAFLEET_STATE_TABLE = tables.state;
  process.env.HAFLEET_SESSIONS_TABLE = tables.sessions;
  process.env.POWERTOOLS_METRICS_DISABLED = "true";
  const context = { awsRequestId: "req-1", getRemainingTimeInMillis: () => 60_000, functionName: "checker" };
  await moveBehindBack(f.eip.allocationId, f.ib);
  const result = await handler({ fleetId: f.fleetId, runForMs: 1500, intervalMs: 500 }, context as never);
  expect(result.runs).toBeGreaterThanOrEqual(1);
  expect(result.reassociated).toEqual([f.eip.allocationId]);
  expect((await eips.describe(f.eip.allocationId)).instanceId).toBe(f.ia);
  await expect(handler({ fleet: f.fleetId }, context as never)).rejects.toMatchObject({
    code: "HAFLEET_EVENT_INVALID",
  });
});

test("the Lambda handler's checker (the stack's) changes the stack's records and creates none", async () => {
  const fleetId = uniqueId("fleet");
  // The test's own setup and reads go to the emulator itself, never throttled by other tests'
  // checkers; the handler under test makes its own clients, through the realistic mode.
  const route53 = new Route53Client(awsClientConfig({ endpoint: emulatorEndpoint() }));
  cleanups.push(() => route53.destroy());
  const zoneName = `${uniqueId("zone")}.test`;
  const zone = await route53.send(
    new CreateHostedZoneCommand({ Name: zoneName, CallerReference: uniqueId("ref") }),
  );
  const zoneId = zone.HostedZone!.Id!.split("/").pop()!;
  const set = { zoneId, name: `lb.${zoneName}`, ttlS: 10 };
  await new ConfigStore(store, fleetId).put(
    {
      listeners: [{ name: "web", protocol: "http", port: 8080, pool: "app" }],
      pools: { app: { backends: [{ host: "127.0.0.1", port: 9000 }] } },
      failover: { mode: "active-active" },
    },
    { expectedVersion: 0, by: "test" },
  );
  for (const [i, name] of ["node-0", "node-1"].entries()) {
    const node = await startServingNode({
      store,
      fleetId,
      nodeId: `i-${i}`,
      name,
      publicIp: `127.45.0.${i + 1}`,
      periodMs: 200,
    });
    cleanups.push(node.stop);
  }
  // The stack made node-0's record with its health check; node-1's it deleted (a destroy under way).
  const records = new WeightedRecords({ route53 });
  const healthCheckId = await createTcpHealthCheck(route53, "127.45.0.1");
  await records.apply(
    set,
    [{ nodeId: "node-0", address: "127.45.0.1", weight: 7, healthCheckId }],
    new Map(),
  );
  Object.assign(process.env, {
    HAFLEET_STATE_TABLE: tables.state,
    HAFLEET_SESSIONS_TABLE: tables.sessions,
    POWERTOOLS_METRICS_DISABLED: "true",
    HAFLEET_HOSTED_ZONE_ID: zoneId,
    HAFLEET_RECORD_NAME: set.name,
  });
  cleanups.push(() => {
    delete process.env.HAFLEET_HOSTED_ZONE_ID;
    delete process.env.HAFLEET_RECORD_NAME;
  });
  const context = { awsRequestId: "req-3", getRemainingTimeInMillis: () => 60_000, functionName: "checker" };
  const result = await handler({ fleetId, runForMs: 1500, intervalMs: 300 }, context as never);
  expect(result.errors).toBe(0);
  const now = await records.read(set);
  expect([...now.keys()]).toEqual(["node-0"]);
  // Ramped up from where it was (7), the health check carried along.
  expect(now.get("node-0")!.weight).toBeGreaterThan(7);
  expect(now.get("node-0")!.healthCheckId).toBe(healthCheckId);
});
