/**
 * The node agent against the emulator, through the fault proxy: the real SDK,
 * the real state store and EC2 calls, real time. Each test is one ordering of a
 * promotion against a fault (test/unit/proxy/agent.test.ts has every ordering
 * on a manual clock).
 */
import { DescribeAddressesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { awsClientConfig } from "../../../lib/core/aws";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { listEvents } from "../../../lib/core/events";
import type { NodeRole } from "../../../lib/core/heartbeat";
import { DynamoLeaseStore, Lease } from "../../../lib/core/lease";
import type { StateStore } from "../../../lib/core/store";
import { keys, type TableNames } from "../../../lib/core/tables";
import { DynamoAgentStore, NodeAgent } from "../../../proxy/agent";
import { emulatorEndpoint, freshTables, storeOn, uniqueId } from "../../harness/aws";
import { allocateElasticIp, runInstances } from "../../harness/ec2";
import { dynamoOp, FaultProxy, type FaultRequest, INTERNAL_ERROR } from "../../harness/fault-proxy";

let tables: TableNames;
let proxy: FaultProxy;
let ec2: EC2Client;
const cleanups: (() => unknown)[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  tables = await freshTables();
  proxy = await new FaultProxy(process.env.AWS_ENDPOINT_URL!).start();
  ec2 = new EC2Client(awsClientConfig());
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  proxy.clear();
});
afterAll(async () => {
  ec2.destroy();
  await proxy.close();
});

/** Matches EC2 query-protocol calls of one action, e.g. AssociateAddress for one instance. */
function ec2Call(action: string, includes = ""): (req: FaultRequest) => boolean {
  return (req) => req.body.includes(`Action=${action}&`) && req.body.includes(includes);
}

async function waitFor(what: string, withinMs: number, check: () => boolean | Promise<boolean>) {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${withinMs} ms`);
    await sleep(50);
  }
}

interface Node {
  readonly id: string;
  readonly instanceId: string;
  readonly agent: NodeAgent;
  readonly roles: { role: NodeRole; at: number }[];
}

/**
 * Two nodes of a fresh fleet, each with its own store and EC2 client through the fault proxy (or
 * `via`), on the default lease unless `leaseMs` says otherwise.
 */
async function fleetOfTwo(options: { heartbeatMs: number; via?: FaultProxy; leaseMs?: number }) {
  const via = options.via ?? proxy;
  const fleetId = uniqueId("fleet");
  const [ia, ib] = await runInstances(ec2, fleetId, ["a", "b"]);
  const eip = await allocateElasticIp(ec2, fleetId);
  const stores: StateStore[] = [];
  const node = (id: string, instanceId: string): Node => {
    const store = storeOn(tables, via.endpoint);
    stores.push(store);
    const elasticIps = new ElasticIps({ aws: { endpoint: via.endpoint } });
    cleanups.push(() => elasticIps.destroy());
    const roles: { role: NodeRole; at: number }[] = [];
    const agent = new NodeAgent({
      store: new DynamoAgentStore(store, fleetId, id, options.heartbeatMs),
      lease: new Lease(new DynamoLeaseStore(store, fleetId), {
        name: "fleet",
        holderId: id,
        ...(options.leaseMs ? { leaseMs: options.leaseMs } : {}),
      }),
      nodeId: id,
      instanceId,
      address: "127.0.0.1",
      adminUrl: "http://127.0.0.1:1",
      version: "test",
      elasticIps,
      allocationIds: [eip.allocationId],
      heartbeatMs: options.heartbeatMs,
      proxy: { ready: () => true, load: () => ({ connections: 0, rps: 0 }), drain: async () => {} },
      onRole: (role) => roles.push({ role, at: Date.now() }),
    });
    cleanups.push(() => agent.stop({ handoverMs: 0, propagationMs: 0 }));
    return { id, instanceId, agent, roles };
  };
  const a = node("a", ia!);
  const b = node("b", ib!);
  cleanups.push(() => {
    for (const s of stores) s.destroy();
  });
  const reader = storeOn(tables);
  cleanups.push(() => reader.destroy());
  const addressOn = async () =>
    (await ec2.send(new DescribeAddressesCommand({ AllocationIds: [eip.allocationId] }))).Addresses?.[0]
      ?.InstanceId ?? "";
  const vip = () => reader.get("state", { pk: keys.fleet(fleetId), sk: keys.vip(eip.allocationId) });
  const events = () => listEvents(reader, fleetId);
  return { fleetId, eip, a, b, addressOn, vip, events };
}

describe("a move in flight when the holder hands over lands before the successor's", () => {
  const drain = (n: Node) => n.agent.drain();
  const stop = (n: Node) => n.agent.stop({ handoverMs: 15_000, propagationMs: 0 });
  // 2.5 s: the delay the issue was seen with. 3.5 s: longer than the successor's wait (2.2 s) plus
  // a poll, so only the release's wait for the move (until the validity it began under) keeps it first.
  const cases: { how: string; release: (n: Node) => Promise<void>; delayMs: number }[] = [
    { how: "a drain", release: drain, delayMs: 2500 },
    { how: "a stop (SIGTERM)", release: stop, delayMs: 2500 },
    { how: "a drain", release: drain, delayMs: 3500 },
  ];
  test.each(cases)(
    "$how while the promotion's AssociateAddress is delayed $delayMs ms: the address ends on the successor, and the deposed node writes no event",
    async ({ release, delayMs }) => {
      // Heartbeats far apart: no repair runs during the test, so the order of the two moves decides.
      // The delays are written against a 2000 ms lease (valid 1800 ms; its successor waits 2200 ms).
      const f = await fleetOfTwo({ heartbeatMs: 60_000, leaseMs: 2000 });
      let sentAt = 0;
      const delayed = proxy.add({
        match: (req) => {
          const hit = ec2Call("AssociateAddress", `InstanceId=${f.a.instanceId}`)(req);
          if (hit) sentAt = Date.now();
          return hit;
        },
        action: { kind: "latency", ms: delayMs },
        times: 1,
      });
      await f.a.agent.start();
      await waitFor("a's AssociateAddress in flight", 10_000, () => delayed.hits() === 1);
      await f.b.agent.start();
      const releasing = release(f.a);
      await waitFor("b active", 20_000, () => f.b.agent.role === "active");
      const bActiveAt = Date.now();
      await releasing;
      // Until well after the delayed request reached the emulator, the address stays on b.
      const seen = new Set<string>();
      while (Date.now() < Math.max(sentAt + delayMs + 3000, bActiveAt + 1000)) {
        seen.add(await f.addressOn());
        await sleep(100);
      }
      expect([...seen]).toEqual([f.b.instanceId]);
      const events = await f.events();
      expect(events.filter((e) => e.by === "a")).toEqual([]);
      expect(events.filter((e) => e.kind === "vip-moved" && e.by === "b")).toHaveLength(1);
    },
    60_000,
  );
});

describe("a promotion that EC2 shows late", () => {
  test("DescribeAddresses stale for longer than the lease is valid: the node goes active once it shows the move", async () => {
    // Only the stale reads (3 s after the move is applied; the default lease is valid 1080 ms).
    const stale = await new FaultProxy(emulatorEndpoint(), {
      realistic: {
        mode: {
          describeStaleMs: [3000, 3000],
          associateApplyMs: [0, 0],
          route53PendingMs: [0, 0],
          route53CallsPerS: 1000,
          dynamoLatencyMs: [0, 0],
        },
        seed: 1,
      },
    }).start();
    cleanups.push(() => stale.close());
    // Heartbeats far apart: a promotion that gave up is not taken again within the test.
    const f = await fleetOfTwo({ heartbeatMs: 60_000, via: stale });
    await f.a.agent.start();
    await waitFor("a active", 15_000, () => f.a.agent.role === "active");
    expect(stale.realismStats.staleAnswers).toBeGreaterThan(0);
    expect(await f.addressOn()).toBe(f.a.instanceId);
    expect((await f.events()).filter((e) => e.kind === "vip-moved" && e.by === "a")).toHaveLength(1);
  });
});

describe("a failed vip# write during promotion", () => {
  test("the node does not go active until vip# records it; the next heartbeat writes vip#, then moves the address", async () => {
    const f = await fleetOfTwo({ heartbeatMs: 300 });
    // Every attempt of the first vip# write fails (the store tries 4 times).
    const failing = proxy.add({
      match: dynamoOp("TransactWriteItems", "vip#"),
      action: INTERNAL_ERROR,
      times: 4,
    });
    await f.a.agent.start();
    await waitFor("a active", 15_000, () => f.a.agent.role === "active");
    expect(failing.hits()).toBe(4);
    // Read at once: the old agent went active without vip# and never wrote it afterwards.
    expect(await f.vip()).toMatchObject({ owner: "a", instanceId: f.a.instanceId, fenceToken: 1 });
    await waitFor("the address on a", 10_000, async () => (await f.addressOn()) === f.a.instanceId);
    expect(await f.vip()).toMatchObject({ owner: "a", fenceToken: 1 });
  });
});
