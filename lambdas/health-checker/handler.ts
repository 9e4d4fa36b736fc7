/**
 * The health-checker Lambda: runs on a schedule (once a minute) and loops a
 * check every few seconds until shortly before its timeout. The logic is in
 * lib/core/checker.ts; this file wires it to Lambda: settings from the
 * environment, structured logs and metrics with Powertools.
 *
 * Environment: HAFLEET_FLEET_ID (required), HAFLEET_STATE_TABLE,
 * HAFLEET_SESSIONS_TABLE, HAFLEET_CHECKER_INTERVAL_MS (default 2000),
 * HAFLEET_CHECKER_RUN_FOR_MS (default 55000, capped at the remaining time - 5 s; no run
 * starts that could not end before then);
 * with Route 53, HAFLEET_HOSTED_ZONE_ID and HAFLEET_RECORD_NAME (the weighted
 * set whose weights it manages) and HAFLEET_SHARED_ALLOCATION_ID (the shared
 * Elastic IP whose record serves in active-passive).
 */
import { Logger } from "@aws-lambda-powertools/logger";
import { injectLambdaContext } from "@aws-lambda-powertools/logger/middleware";
import { Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import { logMetrics } from "@aws-lambda-powertools/metrics/middleware";
import middy from "@middy/core";
import type { Context } from "aws-lambda";
import {
  type CheckerDns,
  type CheckReport,
  HealthChecker,
  parseCheckerInvocation,
} from "../../lib/core/checker";
import { WeightedRecords } from "../../lib/core/dns";
import { ElasticIps } from "../../lib/core/elastic-ip";
import { StateStore } from "../../lib/core/store";

const logger = new Logger({ serviceName: "hafleet-health-checker" });
const metrics = new Metrics({ namespace: "hafleet", serviceName: "health-checker" });

// Clients live across invocations of a warm Lambda; made at the first one, when the environment is read.
let clients: { store: StateStore; elasticIps: ElasticIps; records: WeightedRecords } | undefined;

export interface CheckerResult {
  readonly fleetId: string;
  readonly runs: number;
  readonly skipped: number;
  readonly marked: string[];
  readonly cleared: string[];
  readonly reassociated: string[];
  readonly weightChanges: number;
  /** Nodes taken out of DNS because they failed (active-active failovers). */
  readonly outOfDns: string[];
  readonly errors: number;
}

/** The weighted set from the environment; undefined without Route 53. */
function dnsFromEnv(
  env: NodeJS.ProcessEnv,
  records: WeightedRecords,
  elasticIps: ElasticIps,
): CheckerDns | undefined {
  const zoneId = env.HAFLEET_HOSTED_ZONE_ID;
  const name = env.HAFLEET_RECORD_NAME;
  if (!zoneId || !name) return undefined;
  const shared = env.HAFLEET_SHARED_ALLOCATION_ID;
  let address: string | undefined;
  return {
    records,
    zoneId,
    name,
    // The stack made every record with its health check: a missing one is the stack's to make.
    createRecords: false,
    ...(shared
      ? { sharedAddress: async () => (address ??= (await elasticIps.describe(shared)).publicIp || undefined) }
      : {}),
  };
}

export async function run(
  event: unknown,
  context: Pick<Context, "awsRequestId" | "getRemainingTimeInMillis">,
): Promise<CheckerResult> {
  const invocation = parseCheckerInvocation(event, process.env, context.getRemainingTimeInMillis());
  metrics.addDimension("fleet", invocation.fleetId);
  clients ??= { store: new StateStore(), elasticIps: new ElasticIps(), records: new WeightedRecords() };
  const { store, elasticIps, records } = clients;
  const dns = dnsFromEnv(process.env, records, elasticIps);
  const checker = new HealthChecker({
    store,
    fleetId: invocation.fleetId,
    checkerId: `lambda-${context.awsRequestId}`,
    elasticIps,
    ...(dns ? { dns } : {}),
    log: (level, message, fields) => logger[level](message, fields ?? {}),
  });
  // Each run is budgeted by the time the Lambda has left, so that the invocation returns (and the
  // middleware flushes its metrics) before the timeout instead of being killed mid-run.
  const reports: CheckReport[] = await checker.runFor(invocation.runForMs, invocation.intervalMs, undefined, {
    remainingMs: () => context.getRemainingTimeInMillis(),
  });
  const ran = reports.filter((r) => r.ran);
  const result: CheckerResult = {
    fleetId: invocation.fleetId,
    runs: ran.length,
    skipped: reports.length - ran.length,
    marked: ran.flatMap((r) => r.marked),
    cleared: ran.flatMap((r) => r.cleared),
    reassociated: ran.flatMap((r) => r.reassociated),
    weightChanges: ran.reduce((n, r) => n + r.weightChanges, 0),
    outOfDns: ran.flatMap((r) => r.outOfDns),
    errors: ran.reduce((n, r) => n + r.errors.length, 0),
  };
  metrics.addMetric("CheckerRuns", MetricUnit.Count, result.runs);
  metrics.addMetric("CheckerSkipped", MetricUnit.Count, result.skipped);
  metrics.addMetric("NodesMarkedFailed", MetricUnit.Count, result.marked.length);
  metrics.addMetric("ElasticIpsReassociated", MetricUnit.Count, result.reassociated.length);
  metrics.addMetric("WeightChanges", MetricUnit.Count, result.weightChanges);
  metrics.addMetric("NodesOutOfDns", MetricUnit.Count, result.outOfDns.length);
  metrics.addMetric("CheckerErrors", MetricUnit.Count, result.errors);
  logger.info("health checker invocation done", { ...result });
  return result;
}

export const handler = middy(run).use(injectLambdaContext(logger)).use(logMetrics(metrics));
