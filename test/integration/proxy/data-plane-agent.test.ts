/**
 * An agent whose own data plane fails steps down: two node agents on the
 * emulator (lease, heartbeats, Elastic IP), each beside a real proxy with a
 * real listener on loopback. The active's listener is closed: its agent
 * releases the lease after `dataPlaneFailures` failed checks, the standby
 * takes over, and the broken node stays out of the contest until its data
 * plane works again.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { awsClientConfig } from "../../../lib/core/aws";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { listNodes } from "../../../lib/core/heartbeat";
import { DynamoLeaseStore, Lease } from "../../../lib/core/lease";
import type { StateStore } from "../../../lib/core/store";
import { DynamoAgentStore, NodeAgent } from "../../../proxy/agent";
import { DataPlaneHealth } from "../../../proxy/data-plane";
import type { ProxyServer } from "../../../proxy/server";
import { freshTables, storeOn, uniqueId } from "../../harness/aws";
import { allocateElasticIp, runInstances } from "../../harness/ec2";
import { config, eventually, Harness, startBackend, startProxy } from "../../unit/proxy/helpers";

const h = new Harness();
let store: StateStore;
let ec2: EC2Client;
let eips: ElasticIps;

beforeAll(async () => {
  store = storeOn(await freshTables());
  ec2 = new EC2Client(awsClientConfig());
  eips = new ElasticIps({ ec2 });
});
afterEach(() => h.closeAll());
afterAll(() => {
  store.destroy();
  ec2.destroy();
});

/** A node: a real proxy (one TCP listener), its data plane's health, and an agent using it. */
async function node(fleetId: string, nodeId: string, instanceId: string, allocationId: string) {
  const backend = h.add(await startBackend(nodeId));
  const cfg = config({
    listeners: [{ name: "raw", protocol: "tcp", port: 9000, bind: "127.0.0.1", pool: "app" }],
    pools: { app: { backends: [{ host: "127.0.0.1", port: backend.port }] } },
  });
  const n = {
    proxy: undefined as unknown as ProxyServer,
    logs: [] as string[],
    agent: undefined as unknown as NodeAgent,
    /** A fresh proxy in place of the broken one: the data plane works again. */
    restart: async () => {
      n.proxy = h.add(await startProxy(cfg));
    },
  };
  await n.restart();
  const health = new DataPlaneHealth(() => ({ draining: false, listeners: n.proxy.listenerStates() }), {
    cacheMs: 0,
  });
  n.agent = new NodeAgent({
    store: new DynamoAgentStore(store, fleetId, nodeId, 200),
    lease: new Lease(new DynamoLeaseStore(store, fleetId), {
      name: "fleet",
      holderId: nodeId,
      leaseMs: 2000,
    }),
    nodeId,
    instanceId,
    address: "127.0.0.1",
    adminUrl: "http://127.0.0.1:1",
    version: "test",
    elasticIps: eips,
    allocationIds: [allocationId],
    heartbeatMs: 200,
    dataPlaneFailures: 3,
    proxy: {
      ready: () => true,
      load: () => ({ connections: 0, rps: 0 }),
      drain: async () => {},
      dataPlaneHealthy: async () => (await health.check()).healthy,
    },
    log: (_level, message) => n.logs.push(message),
  });
  h.add({ close: () => n.agent.stop({ handoverMs: 0, propagationMs: 0 }) });
  return n;
}

test("an active whose listener dies releases the lease to the standby, and contends again only once it works", async () => {
  const fleetId = uniqueId("fleet");
  const [ia, ib] = await runInstances(ec2, fleetId, ["node-a", "node-b"]);
  const eip = await allocateElasticIp(ec2, fleetId);
  const leases = new DynamoLeaseStore(store, fleetId);
  const holder = async () => (await leases.get("fleet"))?.holder;

  const a = await node(fleetId, "node-a", ia!, eip.allocationId);
  await a.agent.start();
  await eventually(() => a.agent.role === "active", 30_000, "node-a active");
  const b = await node(fleetId, "node-b", ib!, eip.allocationId);
  await b.agent.start();

  await a.proxy.listeners.get("raw")!.close(); // node-a's data plane is dead; its agent runs on
  await eventually(async () => (await holder()) === "node-b", 30_000, "node-b holds the lease");
  await eventually(() => b.agent.role === "active", 30_000, "node-b active");
  await eventually(
    async () => (await eips.describe(eip.allocationId)).instanceId === ib,
    30_000,
    "address moved",
  );
  expect(a.agent.role).toBe("standby");
  expect(a.logs).toContain("data plane failed 3 checks in a row: stepping down");

  // node-b hands over, but node-a, still broken, does not take the lease: ten of its beats pass.
  await b.agent.stop({ handoverMs: 0, propagationMs: 0 });
  const seq = async () => (await listNodes(store, fleetId)).find((x) => x.nodeId === "node-a")?.seq ?? 0;
  const from = await seq();
  await eventually(async () => (await seq()) >= from + 10, 30_000, "ten beats of node-a");
  expect(await holder()).toBeUndefined();

  await a.restart();
  await eventually(async () => (await holder()) === "node-a", 30_000, "node-a holds the lease again");
  expect(a.logs).toContain("data plane healthy again: contending");
});
