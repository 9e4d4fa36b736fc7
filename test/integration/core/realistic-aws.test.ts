/**
 * The fault proxy's realistic mode against the emulator, through the real
 * SDK: each AWS behaviour it adds, one at a time (the others calm), with
 * windows either far longer than the test or waited for, never raced.
 */

import { AssociateAddressCommand, EC2Client } from "@aws-sdk/client-ec2";
import { CreateHostedZoneCommand, ListHostedZonesCommand, Route53Client } from "@aws-sdk/client-route-53";
import { awsClientConfig, describeAwsFailure } from "../../../lib/core/aws";
import { WeightedRecords } from "../../../lib/core/dns";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import type { StateStore } from "../../../lib/core/store";
import type { TableNames } from "../../../lib/core/tables";
import { emulatorEndpoint, freshTables, storeOn, uniqueId } from "../../harness/aws";
import { allocateElasticIp, runInstances } from "../../harness/ec2";
import {
  AWS_LIKE,
  awsOp,
  checkRealisticMode,
  FaultProxy,
  type RealisticMode,
  realisticFromEnv,
  seededRandom,
  stream,
} from "../../harness/fault-proxy";

/** Every behaviour off; a test turns on the one it is about. */
const CALM: RealisticMode = {
  describeStaleMs: [0, 0],
  associateApplyMs: [0, 0],
  route53PendingMs: [0, 0],
  route53CallsPerS: 1000,
  dynamoLatencyMs: [0, 0],
};
/** Longer than any test: "not yet", for as long as the test looks. */
const FOREVER: readonly [number, number] = [600_000, 600_000];

let truth: ElasticIps; // the emulator itself: what the network sees
let direct: EC2Client;
let fleetId: string;
let instances: string[];
let eip: { allocationId: string; publicIp: string };
let tables: TableNames;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  direct = new EC2Client(awsClientConfig({ endpoint: emulatorEndpoint() }));
  truth = new ElasticIps({ ec2: direct });
  fleetId = uniqueId("fleet");
  instances = await runInstances(direct, fleetId, ["a", "b"]);
  eip = await allocateElasticIp(direct, fleetId);
  tables = await freshTables();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => direct.destroy());

async function proxyWith(mode: Partial<RealisticMode>, seed = 1): Promise<FaultProxy> {
  const proxy = await new FaultProxy(emulatorEndpoint(), {
    realistic: { mode: { ...CALM, ...mode }, seed },
  }).start();
  cleanups.push(() => proxy.close());
  return proxy;
}

/** AssociateAddress of the test's address, taking it from whichever instance has it. */
function associate(ec2: EC2Client, instanceId: string) {
  return ec2.send(
    new AssociateAddressCommand({
      AllocationId: eip.allocationId,
      InstanceId: instanceId,
      AllowReassociation: true,
    }),
  );
}

function ec2Through(proxy: FaultProxy): { ec2: EC2Client; eips: ElasticIps } {
  const ec2 = new EC2Client(awsClientConfig({ endpoint: proxy.endpoint }));
  cleanups.push(() => ec2.destroy());
  return { ec2, eips: new ElasticIps({ ec2 }) };
}

/** Puts the address on `instance` in the emulator itself and waits until it shows there. */
async function startOn(instance: string): Promise<void> {
  await truth.moveTo(eip.allocationId, instance);
}

async function waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within 200 checks`);
}

const ia = () => instances[0]!;
const ib = () => instances[1]!;

describe("EC2: accepted at once, applied later, read eventually", () => {
  test("AssociateAddress is answered at once and not applied until its delay has passed", async () => {
    await startOn(ia());
    const proxy = await proxyWith({ associateApplyMs: FOREVER });
    const { ec2, eips } = ec2Through(proxy);
    const out = await associate(ec2, ib());
    expect(out.AssociationId).toMatch(/^eipassoc-/);
    expect((await truth.describe(eip.allocationId)).instanceId).toBe(ia());
    expect((await eips.describe(eip.allocationId)).instanceId).toBe(ia());
    expect(proxy.realismStats.delayedAssociations).toBe(1);
  });

  test("once a move is applied, DescribeAddresses still shows the address as it was, by id and by tag", async () => {
    await startOn(ia());
    const proxy = await proxyWith({ describeStaleMs: FOREVER });
    const { ec2, eips } = ec2Through(proxy);
    expect((await eips.describe(eip.allocationId)).instanceId).toBe(ia()); // the answer it remembers
    await associate(ec2, ib());
    await waitUntil(
      "the move applied",
      async () => (await truth.describe(eip.allocationId)).instanceId === ib(),
    );
    expect((await eips.describe(eip.allocationId)).instanceId).toBe(ia());
    const listed = (await eips.listByFleet(fleetId)).find((a) => a.allocationId === eip.allocationId);
    expect(listed?.instanceId).toBe(ia());
    expect(proxy.realismStats.staleAnswers).toBe(2);
  });

  test("an answer that comes while the emulator applies a move shows the address as it was", async () => {
    await startOn(ia());
    // Between this proxy and the emulator: the emulator applies the move, its answer is held back.
    const slow = await new FaultProxy(emulatorEndpoint()).start();
    cleanups.push(() => slow.close());
    const held = slow.add({
      match: awsOp("EC2.AssociateAddress"),
      action: { kind: "slow-answer", ms: FOREVER[0] },
      times: 1,
    });
    const proxy = await new FaultProxy(slow.endpoint, {
      realistic: { mode: { ...CALM, describeStaleMs: FOREVER }, seed: 1 },
    }).start();
    cleanups.push(() => proxy.close());
    const { ec2, eips } = ec2Through(proxy);
    expect((await eips.describe(eip.allocationId)).instanceId).toBe(ia());
    await associate(ec2, ib());
    await waitUntil(
      "the move applied",
      async () => (await truth.describe(eip.allocationId)).instanceId === ib(),
    );
    expect(held.hits()).toBe(1);
    expect((await eips.describe(eip.allocationId)).instanceId).toBe(ia());
    expect(proxy.realismStats.staleAnswers).toBe(1);
  });

  test("a move through the realistic API is verified once the stale window ends", async () => {
    await startOn(ia());
    const proxy = await proxyWith({ associateApplyMs: [200, 200], describeStaleMs: [300, 300] });
    const { eips } = ec2Through(proxy);
    await eips.describe(eip.allocationId);
    const moved = await eips.moveTo(eip.allocationId, ib(), { verifyMs: 20_000 });
    expect(moved.verifyReads).toBeGreaterThanOrEqual(1);
    expect((await truth.describe(eip.allocationId)).instanceId).toBe(ib());
  });

  test("delayed associations of one address are applied in the order they were made", async () => {
    await startOn(ia());
    // A seed whose draws would apply them newest first: the first waits longest, the last least.
    const seed = Array.from({ length: 1000 }, (_, i) => i + 1).find((s) => {
      const draws = Array.from({ length: 6 }, stream(s, "apply"));
      return draws[0] === Math.max(...draws) && draws[5] === Math.min(...draws);
    })!;
    const proxy = await proxyWith({ associateApplyMs: [0, 400] }, seed);
    const { ec2 } = ec2Through(proxy);
    const order = [ib(), ia(), ib(), ia(), ib(), ia()];
    for (const instance of order) {
      await associate(ec2, instance);
    }
    await proxy.settled();
    expect((await truth.describe(eip.allocationId)).instanceId).toBe(order.at(-1));
    expect(proxy.realismStats.lateFailures).toEqual([]);
  });

  test("an accepted association the emulator refuses when applied is recorded as a late failure", async () => {
    const proxy = await proxyWith({});
    const { ec2 } = ec2Through(proxy);
    await ec2.send(
      new AssociateAddressCommand({ AllocationId: "eipalloc-0000000000000000f", InstanceId: ia() }),
    );
    await proxy.settled();
    expect(proxy.realismStats.lateFailures).toEqual([
      expect.stringMatching(
        /^AssociateAddress eipalloc-0000000000000000f -> i-\w+: HTTP 400 InvalidAllocationID/,
      ),
    ]);
  });
});

describe("Route 53: changes propagate, calls are rate-limited", () => {
  let zoneId: string;
  const zoneName = `${uniqueId("real")}.test`;
  beforeAll(async () => {
    const route53 = new Route53Client(awsClientConfig({ endpoint: emulatorEndpoint() }));
    const zone = await route53.send(
      new CreateHostedZoneCommand({ Name: zoneName, CallerReference: uniqueId("ref") }),
    );
    zoneId = zone.HostedZone!.Id!.split("/").pop()!;
    route53.destroy();
  });

  function recordsThrough(proxy: FaultProxy): WeightedRecords {
    const records = new WeightedRecords({ aws: { endpoint: proxy.endpoint } });
    cleanups.push(() => records.destroy());
    return records;
  }

  test("a change stays PENDING for its window: applied, but not INSYNC", async () => {
    const proxy = await proxyWith({ route53PendingMs: FOREVER });
    const set = { zoneId, name: `pending.${zoneName}`, ttlS: 5 };
    const records = recordsThrough(proxy);
    const change = await records.apply(set, [{ nodeId: "n1", address: "127.9.0.1", weight: 10 }], new Map());
    expect(change).toMatchObject({ insync: false });
    expect(await records.isInSync(change.changeId!)).toBe(false);
    expect(proxy.byOperation.get("Route53.GetChange")).toBeGreaterThanOrEqual(1);
    const direct53 = new WeightedRecords({ aws: { endpoint: emulatorEndpoint() } });
    cleanups.push(() => direct53.destroy());
    expect((await direct53.read(set)).get("n1")?.weight).toBe(10); // the records themselves changed at once
  });

  test("a change turns INSYNC after its window, and a caller that asks again with GetChange sees it", async () => {
    const proxy = await proxyWith({ route53PendingMs: [300, 300] });
    const set = { zoneId, name: `insync.${zoneName}`, ttlS: 5 };
    const records = recordsThrough(proxy);
    const change = await records.apply(set, [{ nodeId: "n1", address: "127.9.0.2", weight: 20 }], new Map());
    expect(change.insync).toBe(false);
    // Bounded: the window is 300 ms; ask every 100 ms for at most 20 s.
    let insync = false;
    for (let i = 0; i < 200 && !insync; i++) {
      insync = await records.isInSync(change.changeId!);
      if (!insync) await new Promise((r) => setTimeout(r, 100));
    }
    expect(insync).toBe(true);
    expect(proxy.realismStats.pendingAnswers).toBeGreaterThanOrEqual(1);
  });

  test("calls above the rate are refused with Throttling in Route 53's XML error format", async () => {
    const proxy = await proxyWith({ route53CallsPerS: 0.01 }); // one call, then one a 100 s
    const route53 = new Route53Client(awsClientConfig({ endpoint: proxy.endpoint, maxAttempts: 1 }));
    cleanups.push(() => route53.destroy());
    await route53.send(new ListHostedZonesCommand({}));
    for (let i = 0; i < 3; i++) {
      const err = await route53.send(new ListHostedZonesCommand({})).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: "Throttling", $metadata: { httpStatusCode: 400 } });
      expect(describeAwsFailure(err)).toMatchObject({ kind: "throttled", retryable: true });
    }
    expect(proxy.realismStats.throttled).toBe(3);
  });
});

describe("DynamoDB: latency", () => {
  test("each call waits its drawn latency before it reaches the table", async () => {
    const proxy = await proxyWith({ dynamoLatencyMs: [250, 250] });
    const impatient: StateStore = storeOn(tables, proxy.endpoint, {
      attemptTimeoutMs: 100,
      retry: { maxAttempts: 1 },
    });
    const patient: StateStore = storeOn(tables, proxy.endpoint);
    cleanups.push(() => {
      impatient.destroy();
      patient.destroy();
    });
    const key = { pk: "fleet#realistic", sk: "probe" };
    await expect(impatient.get("state", key)).rejects.toMatchObject({ code: "HAFLEET_STORE_UNAVAILABLE" });
    expect(await patient.put("state", { ...key, v: 1 })).toBe(true);
  });
});

describe("the mode as data", () => {
  test("the same seed draws the same numbers, in [0, 1); another seed others", () => {
    const draws = (seed: number) => Array.from({ length: 200 }, seededRandom(seed));
    expect(draws(7)).toEqual(draws(7));
    expect(draws(7)).not.toEqual(draws(8));
    for (const x of draws(7)) expect(x >= 0 && x < 1).toBe(true);
    expect(new Set(draws(7)).size).toBe(200);
  });

  test.each([
    ["describeStaleMs", { describeStaleMs: [5, 1] }, "describeStaleMs must be [min, max]"],
    ["associateApplyMs", { associateApplyMs: [-1, 10] }, "associateApplyMs must be [min, max]"],
    ["route53PendingMs", { route53PendingMs: [0, Number.NaN] }, "route53PendingMs must be [min, max]"],
    ["route53CallsPerS", { route53CallsPerS: 0 }, "route53CallsPerS must be above 0"],
  ])("a bad %s is refused, naming it", (_field, bad, message) => {
    expect(() => checkRealisticMode({ ...AWS_LIKE, ...(bad as Partial<RealisticMode>) })).toThrow(message);
  });

  test("the environment turns it on by default, off with HAFLEET_REALISTIC=0, and refuses anything else", () => {
    expect(realisticFromEnv({})?.mode).toBe(AWS_LIKE);
    expect(realisticFromEnv({ HAFLEET_REALISTIC: "1", HAFLEET_REALISTIC_SEED: "42" })).toEqual({
      mode: AWS_LIKE,
      seed: 42,
    });
    expect(realisticFromEnv({ HAFLEET_REALISTIC: "0" })).toBeUndefined();
    expect(() => realisticFromEnv({ HAFLEET_REALISTIC: "yes" })).toThrow(
      "HAFLEET_REALISTIC must be 1 (on, the default) or 0 (off), got 'yes'",
    );
    expect(() => realisticFromEnv({ HAFLEET_REALISTIC_SEED: "-3" })).toThrow(
      "HAFLEET_REALISTIC_SEED must be a whole number",
    );
  });
});
