/**
 * What a fleet costs in AWS requests, measured: a three-node local fleet runs
 * for `--seconds` with its nodes and its health checker talking to the emulator
 * through counting proxies, and the counts become requests per node per hour,
 * request units, and a monthly bill at list prices.
 *
 *   npm run bench:requests -- --json [--seconds 60] [--mode active-active]
 *
 * In active-active the fleet has its weighted set in Route 53, and the
 * checker's Route 53 API calls are counted too: they cost nothing, but Route 53
 * allows 5 a second per account, shared by every fleet in it.
 *
 * One JSON object per line: one per operation, then the summary
 *   {"bench":"requests","mode":..,"nodes":3,"seconds":..,"node_writes_per_hour":..,
 *    "node_reads_per_hour":..,"checker_writes_per_hour":..,"checker_reads_per_hour":..,
 *    "dynamodb_usd_month":..,"lambda_usd_month":..,"route53_usd_month":..,"total_usd_month":..,
 *    "route53_api_calls_per_second":..}
 *
 * Request units, as DynamoDB bills them for items under 1 KB (writes) and 4 KB
 * (strongly consistent reads): a write 1 WRU, a transaction 2 WRU per item (every
 * hafleet transaction has two), a read or a query 1 RRU.
 */
import { parseArgs } from "node:util";
import { emulatorEnv, startEmulator } from "../test/harness/emulator";
import { FaultProxy } from "../test/harness/fault-proxy";
import { LocalFleet } from "../test/harness/local-fleet";
import { emit, round } from "./stats";

/** us-east-1 list prices (on-demand), per unit. */
const PRICE = {
  wruPerMillion: 0.625,
  rruPerMillion: 0.125,
  lambdaGbSecond: 0.0000133334,
  lambdaPerMillion: 0.2,
  hostedZoneMonth: 0.5,
  healthCheckMonth: 0.5,
};
const HOURS_PER_MONTH = 730;
/** The checker Lambda as the ControlPlane construct deploys it: 256 MB, once a minute, 55 s of looping. */
const LAMBDA = { memoryGb: 0.25, seconds: 55, perHour: 60 };

const WRITE_UNITS: Record<string, number> = {
  PutItem: 1,
  UpdateItem: 1,
  DeleteItem: 1,
  TransactWriteItems: 4,
};
const READ_UNITS: Record<string, number> = { GetItem: 1, Query: 1 };

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      seconds: { type: "string", default: "60" },
      mode: { type: "string", default: "active-passive" },
    },
    strict: true,
  });
  const mode = values.mode;
  if (mode !== "active-passive" && mode !== "active-active")
    throw new Error(`--mode must be active-passive or active-active, got '${mode}'`);
  const seconds = Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds < 10)
    throw new Error(`--seconds must be at least 10, got '${values.seconds}'`);
  const say = (s: string) => {
    if (!values.json) process.stderr.write(`${s}\n`);
  };
  const emulator = await startEmulator({ log: say });
  Object.assign(process.env, emulatorEnv(emulator.endpoint));
  const nodesProxy = await new FaultProxy(emulator.endpoint).start();
  const checkerProxy = await new FaultProxy(emulator.endpoint).start();
  const nodes = 3;
  const fleet = new LocalFleet({
    nodes,
    mode,
    endpoint: emulator.endpoint,
    nodeEndpoint: nodesProxy.endpoint,
    checkerEndpoint: checkerProxy.endpoint,
    log: say,
  });
  try {
    await fleet.up();
    nodesProxy.byOperation.clear();
    checkerProxy.byOperation.clear();
    say(`counting for ${seconds} s...`);
    await new Promise((r) => setTimeout(r, seconds * 1000));
  } finally {
    await fleet.down();
    await nodesProxy.close();
    await checkerProxy.close();
    await emulator.stop();
  }
  const perHour = (n: number) => (n * 3600) / seconds;
  const units = (counts: Map<string, number>) => {
    let wru = 0;
    let rru = 0;
    let writes = 0;
    let reads = 0;
    for (const [op, n] of counts) {
      const name = op.split(".")[1] ?? "";
      if (!op.startsWith("DynamoDB.")) continue;
      if (WRITE_UNITS[name]) {
        writes += n;
        wru += n * WRITE_UNITS[name];
      } else if (READ_UNITS[name]) {
        reads += n;
        rru += n * READ_UNITS[name];
      }
    }
    return { wru: perHour(wru), rru: perHour(rru), writes: perHour(writes), reads: perHour(reads) };
  };
  for (const [who, proxy] of [
    ["nodes", nodesProxy],
    ["checker", checkerProxy],
  ] as const) {
    for (const [op, n] of [...proxy.byOperation].sort()) {
      emit({
        bench: "requests",
        who,
        operation: op,
        per_hour: round(perHour(n)),
        ...(who === "nodes" ? { per_node_per_hour: round(perHour(n) / nodes) } : {}),
      });
    }
  }
  const n = units(nodesProxy.byOperation);
  const c = units(checkerProxy.byOperation);
  const dynamodb =
    ((n.wru + c.wru) * PRICE.wruPerMillion + (n.rru + c.rru) * PRICE.rruPerMillion) * (HOURS_PER_MONTH / 1e6);
  const lambda =
    LAMBDA.perHour *
    HOURS_PER_MONTH *
    (LAMBDA.memoryGb * LAMBDA.seconds * PRICE.lambdaGbSecond + PRICE.lambdaPerMillion / 1e6);
  const route53 = PRICE.hostedZoneMonth + nodes * PRICE.healthCheckMonth;
  let route53Calls = 0;
  for (const [op, count] of checkerProxy.byOperation) if (op.startsWith("Route53.")) route53Calls += count;
  const summary = {
    bench: "requests",
    mode,
    nodes,
    seconds,
    node_writes_per_hour: round(n.writes / nodes),
    node_reads_per_hour: round(n.reads / nodes),
    checker_writes_per_hour: round(c.writes),
    checker_reads_per_hour: round(c.reads),
    dynamodb_usd_month: round(dynamodb, 2),
    lambda_usd_month: round(lambda, 2),
    route53_usd_month: round(route53, 2),
    total_usd_month: round(dynamodb + lambda + route53, 2),
    route53_api_calls_per_second: round(route53Calls / seconds, 3),
  };
  say(
    `per node per hour: ${summary.node_writes_per_hour} writes, ${summary.node_reads_per_hour} reads; checker: ${summary.checker_writes_per_hour} writes, ` +
      `${summary.checker_reads_per_hour} reads per hour; a month: DynamoDB $${summary.dynamodb_usd_month}, Lambda $${summary.lambda_usd_month}, ` +
      `Route 53 $${summary.route53_usd_month}`,
  );
  emit(summary);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:requests: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
