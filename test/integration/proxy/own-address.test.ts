/**
 * An active-active node's own Elastic IP across a replacement, against the
 * emulator: the new instance and the one it replaces run together under the
 * node's stable name for a while, and the newer live one holds the address
 * (test/unit/proxy/agent.test.ts has the orderings on a manual clock).
 */
import { DescribeAddressesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { awsClientConfig } from "../../../lib/core/aws";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { DynamoLeaseStore, Lease } from "../../../lib/core/lease";
import type { TableNames } from "../../../lib/core/tables";
import { DynamoAgentStore, NodeAgent } from "../../../proxy/agent";
import { freshTables, storeOn, uniqueId } from "../../harness/aws";
import { allocateElasticIp, runInstances } from "../../harness/ec2";

let tables: TableNames;
let ec2: EC2Client;
const cleanups: (() => unknown)[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  tables = await freshTables();
  ec2 = new EC2Client(awsClientConfig());
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => ec2.destroy());

test("the node a replacement replaces stops claiming their shared name's address: no tug of war", async () => {
  const fleetId = uniqueId("fleet");
  const [oldInstance, newInstance] = await runInstances(ec2, fleetId, ["node-0", "node-0"]);
  const eip = await allocateElasticIp(ec2, fleetId);
  const agentOn = (instanceId: string) => {
    const store = storeOn(tables);
    const elasticIps = new ElasticIps();
    const agent = new NodeAgent({
      store: new DynamoAgentStore(store, fleetId, instanceId, 200),
      lease: new Lease(new DynamoLeaseStore(store, fleetId), { name: "fleet", holderId: instanceId }),
      nodeId: instanceId,
      name: "node-0",
      instanceId,
      address: "127.0.0.1",
      adminUrl: "http://127.0.0.1:1",
      version: "test",
      elasticIps,
      allocationIds: [],
      ownAllocationId: eip.allocationId,
      heartbeatMs: 200,
      dnsDrainMs: 0,
      proxy: { ready: () => true, load: () => ({ connections: 0, rps: 0 }), drain: async () => {} },
    });
    cleanups.push(() => {
      store.destroy();
      elasticIps.destroy();
    });
    cleanups.push(() => agent.stop({ handoverMs: 0, propagationMs: 0 }));
    return agent;
  };
  const addressOn = async () =>
    (await ec2.send(new DescribeAddressesCommand({ AllocationIds: [eip.allocationId] }))).Addresses?.[0]
      ?.InstanceId ?? "";

  await agentOn(oldInstance!).start();
  expect(await addressOn()).toBe(oldInstance);
  await sleep(1000);
  // The replacement boots under the same name while the old instance still serves.
  await agentOn(newInstance!).start();
  expect(await addressOn()).toBe(newInstance);
  // Longer than two of the old agent's 10 s checks of its own address: each would take it back.
  const seen = new Set<string>();
  for (const end = Date.now() + 22_000; Date.now() < end; await sleep(250)) seen.add(await addressOn());
  expect([...seen]).toEqual([newInstance]);
}, 60_000);
