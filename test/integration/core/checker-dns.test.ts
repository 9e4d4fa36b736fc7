/**
 * The health checker's Route 53 step (active-active) against the emulator:
 * weights planned from verdicts, fenced in `dns#` by the checker lease, sent
 * in one batch, verified, carrying each record's health check; mode switches
 * move DNS between the shared address and the nodes' own.
 */
import { CreateHostedZoneCommand, Route53Client } from "@aws-sdk/client-route-53";
import { awsClientConfig } from "../../../lib/core/aws";
import { HealthChecker } from "../../../lib/core/checker";
import { type Clock, systemClock } from "../../../lib/core/clock";
import type { FleetConfigInput } from "../../../lib/core/config";
import { ConfigStore } from "../../../lib/core/config-store";
import { listDnsPlans, WeightedRecords } from "../../../lib/core/dns";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { listEvents } from "../../../lib/core/events";
import { SHARED_ENDPOINT } from "../../../lib/core/failover";
import { NODE_GONE_AFTER_MS } from "../../../lib/core/heartbeat";
import { DynamoLeaseStore } from "../../../lib/core/lease";
import type { StateStore } from "../../../lib/core/store";
import { keys } from "../../../lib/core/tables";
import { emulatorEndpoint, freshTables, storeOn, uniqueId } from "../../harness/aws";
import { createTcpHealthCheck } from "../../harness/health-checks";
import { type ServingNode, startServingNode } from "../../harness/health-endpoint";
import { ManualClock } from "../../harness/manual-clock";
import { Route53Gate } from "../../harness/route53-gate";

let store: StateStore;
let route53: Route53Client;
/** The checkers' client: through the realistic mode (Route 53 throttled above 5 calls a second, shared by the run). */
let records: WeightedRecords;
/**
 * The test's own setup and reads: the emulator itself, so that what the test arranges and
 * checks is never throttled by the checkers of other tests running at the same time.
 */
let truthRoute53: Route53Client;
let truth: WeightedRecords;
let eips: ElasticIps;
let zoneId: string;
const zoneName = `${uniqueId("zone")}.test`;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  store = storeOn(await freshTables());
  route53 = new Route53Client(awsClientConfig());
  records = new WeightedRecords({ route53 });
  truthRoute53 = new Route53Client(awsClientConfig({ endpoint: emulatorEndpoint() }));
  truth = new WeightedRecords({ route53: truthRoute53 });
  eips = new ElasticIps();
  const zone = await truthRoute53.send(
    new CreateHostedZoneCommand({ Name: zoneName, CallerReference: uniqueId("ref") }),
  );
  zoneId = zone.HostedZone!.Id!.split("/").pop()!;
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => {
  store.destroy();
  route53.destroy();
  truthRoute53.destroy();
  eips.destroy();
});

const NODES = ["n1", "n2", "n3"] as const;
const ip = (i: number) => `127.44.0.${i + 1}`;
const SHARED_IP = "127.44.0.100";

function config(mode: "active-passive" | "active-active"): FleetConfigInput {
  return {
    listeners: [{ name: "web", protocol: "http", port: 8080, pool: "app" }],
    pools: { app: { backends: [{ host: "127.0.0.1", port: 9000 }] } },
    failover: { mode },
    dns: { ttlS: 5, weight: 100, rampRuns: 4 },
  };
}

/** Three heartbeating nodes with their own addresses, a config, and a checker with DNS. */
async function fleet(mode: "active-passive" | "active-active") {
  const fleetId = uniqueId("fleet");
  const name = `${fleetId}.${zoneName}`;
  const configs = new ConfigStore(store, fleetId);
  await configs.put(config(mode), { expectedVersion: 0, by: "test" });
  const nodes: ServingNode[] = [];
  for (const [i, nodeId] of NODES.entries()) {
    const node = await startServingNode({ store, fleetId, nodeId, publicIp: ip(i), periodMs: 100 });
    cleanups.push(node.stop);
    nodes.push(node);
  }
  const admins = nodes.map((n) => n.admin);
  const set = { zoneId, name, ttlS: 5 };
  const newChecker = (
    checkerId: string,
    leaseMs = 6000,
    dnsOptions: { records?: WeightedRecords; rereadMs?: number } = {},
    clock?: Clock,
  ) => {
    const c = new HealthChecker({
      store,
      fleetId,
      checkerId,
      elasticIps: eips,
      probeTimeoutMs: 400,
      checkerLeaseMs: leaseMs,
      ...(clock ? { clock } : {}),
      dns: { records, zoneId, name, sharedAddress: async () => SHARED_IP, ...dnsOptions },
    });
    cleanups.push(() => c.stop());
    return c;
  };
  const weights = async () =>
    Object.fromEntries([...(await truth.read(set)).values()].map((r) => [r.nodeId, r.weight]));
  return { fleetId, name, set, admins, configs, newChecker, weights };
}

/**
 * The system clock, whose time can be frozen and then moved by hand: both its
 * clocks, since a holder also stops by its wall clock (lib/core/lease.ts), and
 * a run's duration must not decide the test.
 */
class FreezableClock implements Clock {
  private frozenAtMs: number | undefined;
  private frozenAtWallMs: number | undefined;
  nowMs(): number {
    return this.frozenAtMs ?? systemClock.nowMs();
  }
  wallMs(): number {
    return this.frozenAtWallMs ?? systemClock.wallMs();
  }
  sleep(ms: number): Promise<void> {
    return systemClock.sleep(ms);
  }
  freeze(): void {
    this.frozenAtMs = systemClock.nowMs();
    this.frozenAtWallMs = systemClock.wallMs();
  }
  advance(ms: number): void {
    if (this.frozenAtMs === undefined || this.frozenAtWallMs === undefined)
      throw new Error("freeze the clock before moving it");
    this.frozenAtMs += ms;
    this.frozenAtWallMs += ms;
  }
}

async function leader(c: HealthChecker) {
  c.start();
  for (let i = 0; i < 100 && !c.lease.isLeader(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(c.lease.isLeader()).toBe(true);
}

test("a failed node's weight drops to 0 in one verified batch fenced by the checker's token, and ramps back after recovery", async () => {
  const f = await fleet("active-active");
  const c = f.newChecker("checker-1");
  await leader(c);
  // First sight: new records start at a quarter and ramp to the full weight over 4 healthy runs.
  const first = await c.runOnce();
  expect(first.errors).toEqual([]);
  expect(first.outOfDns).toEqual([]);
  expect(await f.weights()).toEqual({ n1: 25, n2: 25, n3: 25, [SHARED_ENDPOINT]: 0 });
  for (let i = 0; i < 3; i++) await c.runOnce();
  expect(await f.weights()).toEqual({ n1: 100, n2: 100, n3: 100, [SHARED_ENDPOINT]: 0 });
  expect((await c.runOnce()).weightChanges).toBe(0); // nothing to change: no call to Route 53

  f.admins[1]!.healthy = false;
  await c.runOnce(); // fall 2: one failed probe is not enough
  expect((await f.weights()).n2).toBe(100);
  const out = await c.runOnce();
  expect(out.weightChanges).toBe(1);
  expect(out.outOfDns).toEqual(["n2"]); // counted as a failover (the NodesOutOfDns metric)
  expect(await f.weights()).toEqual({ n1: 100, n2: 0, n3: 100, [SHARED_ENDPOINT]: 0 });
  const desired = await store.get("state", { pk: keys.fleet(f.fleetId), sk: keys.dns(f.name) });
  expect(desired).toMatchObject({ fenceToken: c.lease.token, weights: { n2: { weight: 0 } } });
  const event = (await listEvents(store, f.fleetId)).filter((e) => e.kind === "weights-changed").at(-1);
  expect(event).toMatchObject({ by: "checker-1", token: c.lease.token });
  expect(event?.detail).toMatchObject({ changes: [{ nodeId: "n2", from: 100, to: 0 }] });

  f.admins[1]!.healthy = true;
  const ramp: number[] = [];
  for (let i = 0; i < 8 && ramp.at(-1) !== 100; i++) {
    await c.runOnce();
    ramp.push((await f.weights()).n2!);
  }
  // Rise 2 (the probe must pass twice), then the gradual ramp: never straight back to 100.
  expect(ramp.filter((w) => w > 0 && w < 100).length).toBeGreaterThanOrEqual(2);
  expect(ramp).toEqual([...ramp].sort((a, b) => a - b));
  expect(ramp.at(-1)).toBe(100);
});

test("when every node looks failed, the weights are not all zeroed (fail open)", async () => {
  const f = await fleet("active-active");
  const c = f.newChecker("checker-1");
  await leader(c);
  for (let i = 0; i < 4; i++) await c.runOnce();
  for (const a of f.admins) a.healthy = false;
  for (let i = 0; i < 4; i++) await c.runOnce();
  const w = await f.weights();
  expect([w.n1, w.n2, w.n3]).toEqual([100, 100, 100]);
  // One node back while the other two stay down: the failed ones drop, the healthy one serves.
  f.admins[0]!.healthy = true;
  for (let i = 0; i < 3; i++) await c.runOnce();
  const after = await f.weights();
  expect(after.n1).toBeGreaterThan(0);
  expect([after.n2, after.n3]).toEqual([0, 0]);
});

test("a checker whose lease moved on has its weight change refused by the fence; only the holder's lands", async () => {
  const f = await fleet("active-active");
  // Driven by hand (no renewals in the background), its monotonic time frozen
  // once it holds the lease: its own clock says it leads, however long its
  // runs wait for Route 53 to apply their changes.
  const clock = new FreezableClock();
  const one = f.newChecker("checker-1", 6000, {}, clock);
  await one.lease.tick();
  clock.freeze();
  expect(one.lease.isLeader()).toBe(true);
  for (let i = 0; i < 4; i++) await one.runOnce();
  f.admins[2]!.healthy = false;
  await one.runOnce(); // n3: one failed probe
  // The lease moves to another checker in the store while checker-1 still
  // believes it holds it: a pause between its check and its write, written
  // here as a takeover writes it.
  const leases = new DynamoLeaseStore(store, f.fleetId);
  const seen = (await leases.get("checker"))!;
  await leases.updateIf(
    "checker",
    { rvn: seen.rvn },
    { holder: "checker-2", bumpToken: true, rvn: "taken-over", leaseMs: 800, updatedAtMs: Date.now() },
  );
  expect(one.lease.isLeader()).toBe(true);
  const late = await one.runOnce();
  expect(late.dns.find((d) => d.nodeId === "n3")?.weight).toBe(0); // it planned the change...
  expect(late.weightChanges).toBe(0); // ...and made none
  expect(late.errors.join()).toMatch(/no longer held by checker-1/);
  expect((await f.weights()).n3).toBe(100);

  // Its own lease as deployed (the item's 800 ms decides how long it waits to take over): a
  // shorter one could lapse between runs on a busy machine.
  const two = f.newChecker("checker-2");
  await leader(two);
  // Two runs see n3 fail `fall` times; a batch Route 53 throttled is sent again by the next run.
  for (let i = 0; i < 10 && (await f.weights()).n3 !== 0; i++) await two.runOnce();
  expect((await f.weights()).n3).toBe(0);
  const changes = (await listEvents(store, f.fleetId)).filter((e) => e.kind === "weights-changed");
  const dropped = changes.filter((e) => JSON.stringify(e.detail).includes('"nodeId":"n3","from":100,"to":0'));
  expect(dropped.map((e) => e.by)).toEqual(["checker-2"]);
  expect(dropped[0]!.token).toBe(two.lease.token);
  const desired = await store.get("state", { pk: keys.fleet(f.fleetId), sk: keys.dns(f.name) });
  expect(desired).toMatchObject({ by: "checker-2", fenceToken: two.lease.token });
});

test("a deposed checker's batch that lands after the new checker's is refused whole: Route 53 keeps what dns# says", async () => {
  const f = await fleet("active-active");
  // checker-1's batches go through a gate, so that one lands when the test says.
  const own = new Route53Client(awsClientConfig());
  cleanups.push(() => own.destroy());
  const gate = new Route53Gate(own);
  const one = f.newChecker("checker-1", 6000, { records: new WeightedRecords({ route53: own }) });
  await one.lease.tick();
  for (let i = 0; i < 4; i++) await one.runOnce();
  expect(await f.weights()).toMatchObject({ n1: 100, n2: 100, n3: 100 });
  f.admins[2]!.healthy = false;
  await one.runOnce(); // n3: one failed probe
  const held = gate.hold("ChangeResourceRecordSets");
  const late = one.runOnce(); // plans n3 to 0, records it in dns#, and its batch is held
  await held.arrived;

  // Meanwhile the checker lease moves on (checker-1 paused past it), n3 is back, and an
  // operator halves n3's weight: the new checker's batches bring n3 to 50.
  const leases = new DynamoLeaseStore(store, f.fleetId);
  const seen = (await leases.get("checker"))!;
  await leases.updateIf(
    "checker",
    { rvn: seen.rvn },
    { holder: "checker-2", bumpToken: true, rvn: "taken-over", leaseMs: 800, updatedAtMs: Date.now() },
  );
  f.admins[2]!.healthy = true;
  const v = (await f.configs.get())!.version;
  const halved = config("active-active");
  await f.configs.put(
    { ...halved, dns: { ...halved.dns, nodeWeights: { n3: 50 } } },
    { expectedVersion: v, by: "test" },
  );
  const two = f.newChecker("checker-2", 6000); // takes over once the record's 800 ms have passed
  await leader(two);
  // n3 carries checker-1's mark: checker-2 clears it once n3 answers twice, and ramps n3 to 50.
  for (let i = 0; i < 10 && (await f.weights()).n3 !== 50; i++)
    expect((await two.runOnce()).errors).toEqual([]);
  expect((await f.weights()).n3).toBe(50);

  held.release(); // checker-1's batch lands now, after checker-2's
  const stale = await late;
  expect(stale.weightChanges).toBe(0);
  expect(stale.errors.join()).toMatch(/refused|no longer held/);
  const desired = await store.get("state", { pk: keys.fleet(f.fleetId), sk: keys.dns(f.name) });
  expect(desired).toMatchObject({ by: "checker-2", weights: { n3: { weight: 50 } } });
  expect((await f.weights()).n3).toBe(50);
});

test("a refused batch makes the holder read Route 53 again at once and apply its plan to what is there", async () => {
  const f = await fleet("active-active");
  const own = new Route53Client(awsClientConfig());
  cleanups.push(() => own.destroy());
  const gate = new Route53Gate(own); // counts the checker's calls
  const c = f.newChecker("checker-1", 6000, { records: new WeightedRecords({ route53: own }) });
  await leader(c);
  for (let i = 0; i < 4; i++) await c.runOnce();
  expect(await f.weights()).toMatchObject({ n1: 100, n2: 100, n3: 100 });
  // A batch its view does not know of lands (a deposed checker's, planned before this one
  // read the set), then an operator halves n3's weight.
  await truth.apply(f.set, [{ nodeId: "n3", address: ip(2), weight: 0 }], await truth.read(f.set));
  const v = (await f.configs.get())!.version;
  const halved = config("active-active");
  await f.configs.put(
    { ...halved, dns: { ...halved.dns, nodeWeights: { n3: 50 } } },
    { expectedVersion: v, by: "test" },
  );
  const lists = gate.count("ListResourceRecordSets");
  const run = await c.runOnce();
  expect(run.errors).toEqual([]);
  expect(run.dns.find((d) => d.nodeId === "n3")).toMatchObject({ from: 0, weight: 50 }); // planned from what is there
  expect(gate.count("ChangeResourceRecordSets")).toBeGreaterThanOrEqual(2); // the refused batch, then the one that landed
  expect(gate.count("ListResourceRecordSets")).toBeGreaterThan(lists); // read again within the run
  expect((await f.weights()).n3).toBe(50);
  const desired = await store.get("state", { pk: keys.fleet(f.fleetId), sk: keys.dns(f.name) });
  expect(desired).toMatchObject({ weights: { n3: { weight: 50 } } });
});

test("one config change moves DNS between the shared address and the nodes' own, never all at 0", async () => {
  const f = await fleet("active-passive");
  const c = f.newChecker("checker-1");
  await leader(c);
  await c.runOnce();
  expect(await f.weights()).toEqual({ n1: 0, n2: 0, n3: 0, [SHARED_ENDPOINT]: 100 });

  const v = (await f.configs.get())!.version;
  await f.configs.put(config("active-active"), { expectedVersion: v, by: "test" });
  const seen: Record<string, number>[] = [];
  for (let i = 0; i < 5; i++) {
    await c.runOnce();
    seen.push(await f.weights());
  }
  for (const w of seen) expect(Object.values(w).some((x) => x > 0)).toBe(true);
  expect(seen[0]).toMatchObject({ [SHARED_ENDPOINT]: 0 });
  expect(seen.at(-1)).toEqual({ n1: 100, n2: 100, n3: 100, [SHARED_ENDPOINT]: 0 });

  await f.configs.put(config("active-passive"), { expectedVersion: v + 1, by: "test" });
  const back = await c.runOnce();
  expect(await f.weights()).toEqual({ n1: 0, n2: 0, n3: 0, [SHARED_ENDPOINT]: 100 });
  expect(back.outOfDns).toEqual([]); // healthy nodes leaving DNS on a mode switch are no failover
});

test("reads Route 53 once per rereadMs, trusting its verified changes between; a change behind its back is repaired then", async () => {
  const f = await fleet("active-active");
  let reads = 0;
  // The real client, counting the record reads it makes.
  class CountingRecords extends WeightedRecords {
    override read(set: Parameters<WeightedRecords["read"]>[0]) {
      reads++;
      return super.read(set);
    }
  }
  const counting = new CountingRecords({ route53 });
  // The checker's monotonic time stands still once frozen and moves when the
  // test says: how fresh its view is never depends on how long Route 53 or a
  // busy machine takes. (Heartbeats and the lease read the same clock; with
  // time standing still neither expires.)
  const clock = new FreezableClock();
  const c = f.newChecker("checker-1", 6000, { records: counting, rereadMs: 1500 }, clock);
  await leader(c);
  for (let i = 0; i < 4; i++) await c.runOnce();
  expect(await f.weights()).toMatchObject({ n1: 100, n2: 100, n3: 100 });
  clock.freeze();
  clock.advance(1501);
  await c.runOnce(); // its view is older than rereadMs: read afresh, now
  reads = 0;
  for (let i = 0; i < 3; i++) expect((await c.runOnce()).errors).toEqual([]);
  expect(reads).toBe(0); // nothing changed, its view is fresh: no call to Route 53

  await truth.apply(f.set, [{ nodeId: "n1", address: ip(0), weight: 7 }], await truth.read(f.set)); // behind its back
  await c.runOnce();
  expect((await f.weights()).n1).toBe(7); // not seen yet: its view is still fresh
  clock.advance(1501);
  const repaired = await c.runOnce();
  expect(reads).toBeGreaterThanOrEqual(1);
  expect(repaired.weightChanges).toBe(1);
  expect((await f.weights()).n1).toBe(100);
});

/**
 * A Route 53 client whose propagation the test plays with a gate on the
 * checker's manual clock: it talks to the emulator itself, past the realistic
 * mode, whose PENDING lasts a random 1-5 s of real time that no manual clock
 * can wait out.
 */
function propagationByTest(): Route53Client {
  const own = new Route53Client(awsClientConfig({ endpoint: emulatorEndpoint() }));
  cleanups.push(() => own.destroy());
  return own;
}

test("a change Route 53 has not propagated blocks no run: its id goes into dns#, and a later run confirms it", async () => {
  const f = await fleet("active-active");
  const own = propagationByTest();
  const gate = new Route53Gate(own);
  const clock = new ManualClock(); // when a pending change is asked about again is on the checker's clock
  const c = f.newChecker("checker-1", 6000, { records: new WeightedRecords({ route53: own }) }, clock);
  await c.lease.tick();
  for (let i = 0; i < 4; i++) await c.runOnce();
  const synced = (await listDnsPlans(store, f.fleetId))[0]!;
  expect(synced.syncedAt).toBeDefined(); // the emulator's changes are INSYNC at once

  gate.pending = true; // Route 53 propagating, as it does for up to a minute
  f.admins[1]!.healthy = false;
  await c.runOnce();
  const before = gate.count("GetChange");
  const sending = await c.runOnce();
  expect(sending.errors).toEqual([]);
  expect(sending.weightChanges).toBe(1);
  expect(gate.count("GetChange")).toBe(before); // the run did not wait for INSYNC
  const pending = (await listDnsPlans(store, f.fleetId))[0]!;
  expect(pending).toMatchObject({ weights: { n2: { weight: 0 } }, syncedAt: undefined });
  expect(pending.changeId).toMatch(/.+/);
  expect((await f.weights()).n2).toBe(0); // in Route 53 at once; only propagation is pending

  // Later runs ask about it, at doubling gaps on the checker's clock, and never block on it.
  const asked: number[] = [];
  for (const ms of [1000, 1000, 1000, 2000, 2000, 4000, 4000]) {
    clock.advance(ms);
    await c.lease.tick(); // renewed by hand, on the manual clock
    const n = gate.count("GetChange");
    expect((await c.runOnce()).errors).toEqual([]);
    asked.push(gate.count("GetChange") - n);
  }
  expect(asked).toEqual([0, 1, 0, 0, 1, 0, 1]); // 2 s after the batch, then 4 s, then 8 s after each answer
  expect((await listDnsPlans(store, f.fleetId))[0]!.syncedAt).toBeUndefined();

  gate.pending = false; // propagated
  for (let i = 0; i < 4; i++) {
    clock.advance(4000);
    await c.lease.tick();
  }
  await c.runOnce();
  const done = (await listDnsPlans(store, f.fleetId))[0]!;
  expect(done.syncedAt).toBe(clock.wallMs()); // what a draining node waits for
  expect(done.weights.n2?.weight).toBe(0);
  const n = gate.count("GetChange");
  for (let i = 0; i < 15; i++) {
    clock.advance(4000);
    await c.lease.tick();
  }
  await c.runOnce();
  expect(gate.count("GetChange")).toBe(n); // confirmed: asked no more
});

test("a new checker confirms the change its predecessor left pending in dns#, and never calls it synced before", async () => {
  const f = await fleet("active-active");
  const own = propagationByTest();
  const gate = new Route53Gate(own);
  const dnsOptions = { records: new WeightedRecords({ route53: own }) };
  const one = f.newChecker("checker-1", 6000, dnsOptions, new ManualClock());
  await one.lease.tick();
  for (let i = 0; i < 4; i++) await one.runOnce();
  gate.pending = true;
  const v = (await f.configs.get())!.version;
  const halved = config("active-active");
  await f.configs.put(
    { ...halved, dns: { ...halved.dns, nodeWeights: { n2: 50 } } },
    { expectedVersion: v, by: "test" },
  );
  expect((await one.runOnce()).weightChanges).toBe(1);
  const left = (await listDnsPlans(store, f.fleetId))[0]!;
  expect(left).toMatchObject({ syncedAt: undefined, weights: { n2: { weight: 50 } } });
  await one.stop(); // its invocation ends, the change still propagating

  const clock = new ManualClock();
  const two = f.newChecker("checker-2", 6000, dnsOptions, clock);
  await two.lease.tick();
  expect(two.lease.isLeader()).toBe(true);
  const n = gate.count("GetChange");
  const first = await two.runOnce();
  expect(first.errors).toEqual([]);
  expect(first.weightChanges).toBe(0); // Route 53 already has its plan...
  expect(gate.count("GetChange")).toBe(n + 1); // ...but the change that made it so is asked about
  expect((await listDnsPlans(store, f.fleetId))[0]).toMatchObject({
    token: two.lease.token,
    changeId: left.changeId,
    syncedAt: undefined,
  });
  gate.pending = false;
  clock.advance(3999);
  await two.runOnce();
  expect((await listDnsPlans(store, f.fleetId))[0]!.syncedAt).toBeUndefined(); // not asked again yet
  clock.advance(1);
  await two.runOnce();
  expect((await listDnsPlans(store, f.fleetId))[0]).toMatchObject({
    token: two.lease.token,
    syncedAt: clock.wallMs(),
  });
});

test("a weight change keeps the record's Route 53 health check", async () => {
  const f = await fleet("active-active");
  const healthCheckId = await createTcpHealthCheck(truthRoute53, ip(0));
  await truth.apply(f.set, [{ nodeId: "n1", address: ip(0), weight: 100, healthCheckId }], new Map());
  const c = f.newChecker("checker-1");
  await leader(c);
  f.admins[0]!.healthy = false;
  for (let i = 0; i < 3; i++) await c.runOnce();
  const n1 = (await truth.read(f.set)).get("n1");
  expect(n1).toMatchObject({ weight: 0, healthCheckId });
});

describe("records keyed on the nodes' stable names (a replacement keeps its name's record)", () => {
  /** A fleet with a config and a checker, whose nodes the test adds by name. */
  async function namedFleet(dnsOptions: { createRecords?: boolean } = {}) {
    const fleetId = uniqueId("fleet");
    const name = `${fleetId}.${zoneName}`;
    await new ConfigStore(store, fleetId).put(config("active-active"), { expectedVersion: 0, by: "test" });
    const set = { zoneId, name, ttlS: 5 };
    /** A heartbeating node with a health endpoint; `stop` ends both (the instance is gone). */
    const node = async (nodeId: string, nodeName: string, publicIp: string) => {
      const n = await startServingNode({ store, fleetId, nodeId, name: nodeName, publicIp, periodMs: 100 });
      cleanups.push(n.stop);
      return { stop: n.stop };
    };
    /** A record with its own health check, as the stack creates it. */
    const stackRecord = async (endpoint: string, address: string) => {
      const healthCheckId = await createTcpHealthCheck(truthRoute53, address);
      await truth.apply(
        set,
        [{ nodeId: endpoint, address, weight: 100, healthCheckId }],
        await truth.read(set),
      );
      return healthCheckId;
    };
    const checker = new HealthChecker({
      store,
      fleetId,
      checkerId: "checker-1",
      elasticIps: eips,
      probeTimeoutMs: 400,
      dns: { records, zoneId, name, ...dnsOptions },
    });
    cleanups.push(() => checker.stop());
    return { fleetId, name, set, node, stackRecord, checker };
  }

  test("a replacement takes its name's record over, health check and all; no record of an instance id is ever written", async () => {
    const f = await namedFleet();
    const hc0 = await f.stackRecord("node-0", ip(0));
    const hc1 = await f.stackRecord("node-1", ip(1));
    const old = await f.node("i-old0", "node-0", ip(0));
    await f.node("i-one1", "node-1", ip(1));
    await leader(f.checker);
    for (let i = 0; i < 2; i++) expect((await f.checker.runOnce()).errors).toEqual([]);
    // The replacement of node-0 boots (a new instance id, the same name and address), then the old one goes.
    await new Promise((r) => setTimeout(r, 50));
    await f.node("i-new0", "node-0", ip(0));
    for (let i = 0; i < 3; i++) expect((await f.checker.runOnce()).errors).toEqual([]);
    await old.stop();
    for (let i = 0; i < 6; i++) {
      expect((await f.checker.runOnce()).errors).toEqual([]);
      await new Promise((r) => setTimeout(r, 150));
    }
    const now = await truth.read(f.set);
    expect(Object.fromEntries([...now.values()].map((r) => [r.nodeId, [r.weight, r.healthCheckId]]))).toEqual(
      {
        "node-0": [100, hc0],
        "node-1": [100, hc1],
      },
    );
    // `dns#` says which node stands for each record: the replacement, whose drain waits on it.
    const plan = (await listDnsPlans(store, f.fleetId))[0]!;
    expect(plan.weights).toEqual({
      "node-0": { address: ip(0), weight: 100, nodeId: "i-new0" },
      "node-1": { address: ip(1), weight: 100, nodeId: "i-one1" },
    });
  });

  test("a record the fleet made for a node gone longer than the bound is removed; another fleet's records and the stack's are left", async () => {
    const f = await namedFleet();
    await f.node("i-one0", "node-0", ip(0));
    // Left behind by an older checker: a record keyed on an instance id, no health check, and the
    // node# item of that instance, its last beat longer ago than the bound.
    await truth.apply(f.set, [{ nodeId: "i-0gone", address: ip(5), weight: 0 }], await truth.read(f.set));
    await store.put("state", {
      pk: keys.fleet(f.fleetId),
      sk: keys.node("i-0gone"),
      kind: "node",
      nodeId: "i-0gone",
      seq: 9,
      address: "127.0.0.1",
      adminUrl: "",
      role: "serving",
      publicIp: ip(5),
      heartbeatAt: Date.now() - NODE_GONE_AFTER_MS - 60_000,
      startedAt: Date.now() - 3_600_000,
    });
    // A node dead for a minute only: its record stays (at 0), and is not made anew when missing.
    await store.put("state", {
      pk: keys.fleet(f.fleetId),
      sk: keys.node("i-0late"),
      kind: "node",
      nodeId: "i-0late",
      nodeName: "node-3",
      seq: 9,
      address: "127.0.0.1",
      adminUrl: "",
      role: "serving",
      publicIp: ip(6),
      heartbeatAt: Date.now() - 60_000,
      startedAt: Date.now() - 3_600_000,
    });
    // The stack's record of a node that has not beaten yet, and another fleet's under its own name.
    const hc2 = await f.stackRecord("node-2", ip(2));
    const other = { zoneId, name: `other-${f.name}`, ttlS: 5 };
    await truth.apply(other, [{ nodeId: "i-0gone", address: ip(7), weight: 10 }], new Map());
    cleanups.push(async () => {
      await truth.apply(other, [], await truth.read(other), [...(await truth.read(other)).values()]);
    });
    await leader(f.checker);
    const first = await f.checker.runOnce();
    expect(first.errors).toEqual([]);
    // A new record ramps up over 4 runs (25, 50, 75, 100).
    for (let i = 0; i < 3; i++) expect((await f.checker.runOnce()).errors).toEqual([]);
    const now = await truth.read(f.set);
    expect(Object.fromEntries([...now.values()].map((r) => [r.nodeId, [r.weight, r.healthCheckId]]))).toEqual(
      {
        "node-0": [100, undefined],
        "node-2": [100, hc2],
      },
    );
    expect([...(await truth.read(other)).keys()]).toEqual(["i-0gone"]);
    const removed = (await listEvents(store, f.fleetId)).filter((e) => e.kind === "weights-changed");
    expect(JSON.stringify(removed.map((e) => e.detail))).toContain('"removed":[{"nodeId":"i-0gone"');
  });

  test("a stack's checker creates no record, not even a live node's: one the stack deleted (a destroy under way) stays deleted", async () => {
    const f = await namedFleet({ createRecords: false });
    const hc0 = await f.stackRecord("node-0", ip(0));
    await f.node("i-one0", "node-0", ip(0));
    await f.node("i-one1", "node-1", ip(1));
    await leader(f.checker);
    for (let i = 0; i < 2; i++) expect((await f.checker.runOnce()).errors).toEqual([]);
    const read = async () =>
      Object.fromEntries(
        [...(await truth.read(f.set)).values()].map((r) => [r.nodeId, [r.weight, r.healthCheckId]]),
      );
    expect(await read()).toEqual({ "node-0": [100, hc0] });
    // `cdk destroy` deletes the stack's records while the nodes and the checker still run.
    const now = await truth.read(f.set);
    await truth.apply(f.set, [], now, [...now.values()]);
    for (let i = 0; i < 2; i++) expect((await f.checker.runOnce()).errors).toEqual([]);
    expect(await read()).toEqual({});
  });
});
