/**
 * Elastic IP calls against the emulator, through the fault proxy: a move is
 * one AssociateAddress, never retried, and ends when its caller's signal
 * aborts; reads are retried.
 */
import { EC2Client } from "@aws-sdk/client-ec2";
import { awsClientConfig } from "../../../lib/core/aws";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { Ec2Error } from "../../../lib/core/errors";
import { uniqueId } from "../../harness/aws";
import { allocateElasticIp, runInstances } from "../../harness/ec2";
import { type FaultAction, FaultProxy, type FaultRequest, INTERNAL_ERROR } from "../../harness/fault-proxy";

let proxy: FaultProxy;
let ec2: EC2Client;
let eips: ElasticIps;
let address: { allocationId: string };
let instanceId: string;

beforeAll(async () => {
  proxy = await new FaultProxy(process.env.AWS_ENDPOINT_URL!).start();
  ec2 = new EC2Client(awsClientConfig());
  eips = new ElasticIps({ aws: { endpoint: proxy.endpoint } });
  const fleetId = uniqueId("fleet");
  [instanceId] = (await runInstances(ec2, fleetId, ["a"])) as [string];
  address = await allocateElasticIp(ec2, fleetId);
});
afterEach(() => proxy.clear());
afterAll(async () => {
  eips.destroy();
  ec2.destroy();
  await proxy.close();
});

const call = (action: string) => (req: FaultRequest) => req.body.includes(`Action=${action}&`);

async function failure(p: Promise<unknown>): Promise<Ec2Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Ec2Error);
  return err as Ec2Error;
}

describe("a move is a single AssociateAddress", () => {
  test.each<[string, FaultAction]>([
    ["a 500", INTERNAL_ERROR],
    ["a reset connection", { kind: "reset" }],
  ])("answered with %s, it is not sent again: one request, a retryable error", async (_name, action) => {
    const rule = proxy.add({ match: call("AssociateAddress"), action });
    const err = await failure(eips.moveTo(address.allocationId, instanceId));
    expect(err.operation).toBe("AssociateAddress");
    expect(err.retryable).toBe(true);
    expect(rule.hits()).toBe(1);
  });

  test("its caller's signal ends it at once, however long EC2 takes", async () => {
    proxy.add({ match: call("AssociateAddress"), action: { kind: "latency", ms: 5000 } });
    const controller = new AbortController();
    const started = performance.now();
    setTimeout(() => controller.abort(), 200);
    const err = await failure(eips.moveTo(address.allocationId, instanceId, { signal: controller.signal }));
    expect(err.retryable).toBe(true);
    expect(performance.now() - started).toBeLessThan(3000);
  });
});

test("DescribeAddresses is retried: two 500s, then the answer", async () => {
  const rule = proxy.add({ match: call("DescribeAddresses"), action: INTERNAL_ERROR, times: 2 });
  expect((await eips.describe(address.allocationId)).allocationId).toBe(address.allocationId);
  expect(rule.hits()).toBe(2);
});
