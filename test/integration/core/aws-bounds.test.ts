/**
 * Every AWS client the project builds through `awsClientConfig` is bounded:
 * against a server that never answers (`hang`) or that sends an answer's head
 * and then stalls in its body (`stall-body`), each attempt ends within its
 * bound, the SDK retries it as a timeout, and the call rejects with an error
 * the project's classifier calls a timeout.
 */

import { DynamoDBClient, ListTablesCommand } from "@aws-sdk/client-dynamodb";
import { DescribeAddressesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { GetChangeCommand, ListHostedZonesCommand, Route53Client } from "@aws-sdk/client-route-53";
import { type AwsClientOptions, awsClientConfig, describeAwsFailure } from "../../../lib/core/aws";
import { WeightedRecords } from "../../../lib/core/dns";
import { ElasticIps } from "../../../lib/core/elastic-ip";
import { AwsCallError } from "../../../lib/core/errors";
import { DEFAULT_RETRY_POLICY } from "../../../lib/core/retry";
import { awsOp, type FaultAction, FaultProxy } from "../../harness/fault-proxy";

let proxy: FaultProxy;
const destroyers: (() => void)[] = [];

beforeAll(async () => {
  proxy = await new FaultProxy(process.env.AWS_ENDPOINT_URL!).start();
});
afterEach(() => {
  proxy.clear();
  for (const d of destroyers.splice(0)) d();
});
afterAll(() => proxy.close());

/** One attempt's bound and the attempts, small so that a test is quick. */
const bound = (): AwsClientOptions => ({ endpoint: proxy.endpoint, requestTimeoutMs: 300, maxAttempts: 2 });

/** Each call through a client the project builds, the operation the fault proxy sees, and how many attempts it makes. */
const CALLS: [string, string, number, () => Promise<unknown>][] = [
  [
    "DynamoDB ListTables",
    "DynamoDB.ListTables",
    2,
    () => {
      const c = new DynamoDBClient(awsClientConfig(bound()));
      destroyers.push(() => c.destroy());
      return c.send(new ListTablesCommand({}));
    },
  ],
  [
    "EC2 DescribeAddresses",
    "EC2.DescribeAddresses",
    2,
    () => {
      const c = new EC2Client(awsClientConfig(bound()));
      destroyers.push(() => c.destroy());
      return c.send(new DescribeAddressesCommand({}));
    },
  ],
  [
    "Route 53 ListHostedZones",
    "Route53.ListHostedZones",
    2,
    () => {
      const c = new Route53Client(awsClientConfig(bound()));
      destroyers.push(() => c.destroy());
      return c.send(new ListHostedZonesCommand({}));
    },
  ],
  [
    "Route 53 GetChange",
    "Route53.GetChange",
    2,
    () => {
      const c = new Route53Client(awsClientConfig(bound()));
      destroyers.push(() => c.destroy());
      return c.send(new GetChangeCommand({ Id: "C0000000000000" }));
    },
  ],
  [
    // One SDK attempt per call; reads are retried by the project's own policy.
    `ElasticIps.describe (one SDK attempt, ${DEFAULT_RETRY_POLICY.maxAttempts} reads)`,
    "EC2.DescribeAddresses",
    DEFAULT_RETRY_POLICY.maxAttempts,
    () => {
      const e = new ElasticIps({ aws: { endpoint: proxy.endpoint, requestTimeoutMs: 300 } });
      destroyers.push(() => e.destroy());
      return e.describe("eipalloc-00000000");
    },
  ],
  [
    "WeightedRecords.read (its own client, 3 attempts)",
    "Route53.ListResourceRecordSets",
    3,
    () => {
      const r = new WeightedRecords({ aws: { endpoint: proxy.endpoint, requestTimeoutMs: 300 } });
      destroyers.push(() => r.destroy());
      return r.read({ zoneId: "Z0000000000", name: "x.test", ttlS: 5 });
    },
  ],
];

const ACTIONS: [string, FaultAction][] = [
  ["never answers", { kind: "hang" }],
  ["stalls in the body", { kind: "stall-body" }],
];

/** How long a bounded call may take here at most: far above its bound, far below "never". */
const NEVER_MS = 15_000;

describe.each(ACTIONS)("a server that %s", (_what, action) => {
  test.each(CALLS)("%s rejects within its bound, as a timeout", async (_name, op, attempts, call) => {
    const rule = proxy.add({ match: awsOp(op), action });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      call().then(
        () => ({ settled: "resolved" as const, err: undefined }),
        (err: unknown) => ({ settled: "rejected" as const, err }),
      ),
      new Promise<{ settled: "pending"; err: undefined }>((resolve) => {
        timer = setTimeout(() => resolve({ settled: "pending", err: undefined }), NEVER_MS);
      }),
    ]);
    clearTimeout(timer);
    expect(outcome.settled).toBe("rejected");
    // The project's wrappers keep the SDK's error as `cause`.
    const sdkError = outcome.err instanceof AwsCallError ? outcome.err.cause : outcome.err;
    expect(describeAwsFailure(sdkError)).toMatchObject({ kind: "timeout", retryable: true });
    if (outcome.err instanceof AwsCallError) expect(outcome.err.retryable).toBe(true);
    expect(rule.hits()).toBe(attempts);
  });
});
