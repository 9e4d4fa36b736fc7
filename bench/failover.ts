/**
 * Active-passive failover on the local fleet: `--trials` (at least 20) SIGKILLs
 * of the active node under steady load from sticky clients through the Elastic
 * IP, default settings. Each trial: the time from the kill to the first
 * successful request through the Elastic IP, the requests that failed
 * meanwhile, the sticky sessions that lost their backend; then the killed node
 * is restarted as a standby. Throughout, every node's role is sampled from its
 * admin endpoint every 50 ms; a sample with two nodes reporting `active` is a
 * moment with two actives.
 *
 *   npm run bench:failover -- --json [--trials 20]
 *
 * The last line:
 *   {"bench":"failover","mode":"active-passive","trials":N,"failover_ms_p50":..,
 *    "failover_ms_p99":..,"failed_requests_p50":..,"sessions_lost":0,"double_active":0}
 *
 * Active-active (`--mode active-active`): three nodes behind the weighted set,
 * default settings (checker every 2 s, TTL 10 s), sticky clients that resolve
 * the name and honour the TTL. Each trial SIGKILLs the node serving the most
 * clients and measures the time from the kill to its weight 0 in Route 53,
 * the requests that failed until every client it served was answered again,
 * and the sessions that lost their backend; then restarts it and waits until
 * its weight has ramped back. The last line:
 *   {"bench":"failover","mode":"active-active","trials":N,"weight_zero_ms_p50":..,
 *    "weight_zero_ms_p99":..,"failed_requests_p50":..,"sessions_lost":0}
 *
 * Both run with the fault proxy's realistic mode between the fleet and the
 * emulator (docs/architecture.md §9: Elastic IPs applied late and read stale,
 * Route 53 PENDING and throttled, DynamoDB latency), its seed in every line
 * (`realistic_seed`); `--seed N` replays its draws, `--realistic off` measures
 * against the emulator as it is. `--lease-ms N` sets the config's
 * `failover.leaseMs` (default: the config's, `DEFAULT_LEASE_MS`); every line
 * says which (`lease_ms`).
 */
import { parseArgs } from "node:util";
import { listEvents } from "../lib/core/events";
import { DEFAULT_LEASE_MS } from "../lib/core/lease";
import { AWS_LIKE, realisticSeed } from "../test/harness/fault-proxy";
import { LocalFleet, type LocalFleetOptions } from "../test/harness/local-fleet";
import { awaitRecovery, busiestNode } from "../test/harness/tour";
import { StickyTraffic } from "../test/harness/traffic";
import { emit, percentile, round } from "./stats";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      trials: { type: "string", default: "20" },
      mode: { type: "string", default: "active-passive" },
      realistic: { type: "string", default: "on" },
      seed: { type: "string" },
      "lease-ms": { type: "string" },
    },
    strict: true,
  });
  const trials = Number(values.trials);
  if (!Number.isInteger(trials) || trials < 1)
    throw new Error(`--trials must be a whole number of at least 1, got '${values.trials}'`);
  if (values.mode !== "active-passive" && values.mode !== "active-active")
    throw new Error(`--mode '${values.mode}' must be active-passive or active-active`);
  if (values.realistic !== "on" && values.realistic !== "off")
    throw new Error(`--realistic must be on or off, got '${values.realistic}'`);
  if (values.realistic === "off" && values.seed !== undefined)
    throw new Error("--seed replays the realistic mode's draws: it needs --realistic on");
  const leaseMs = values["lease-ms"] === undefined ? undefined : Number(values["lease-ms"]);
  if (leaseMs !== undefined && !(Number.isInteger(leaseMs) && leaseMs >= 300 && leaseMs <= 60_000))
    throw new Error(`--lease-ms must be a whole number of ms from 300 to 60000, got '${values["lease-ms"]}'`);
  const realistic =
    values.realistic === "on" ? { mode: AWS_LIKE, seed: realisticSeed(values.seed, "--seed") } : undefined;
  const say = (s: string) => {
    if (!values.json) process.stderr.write(`${s}\n`);
  };
  const bench = {
    bench: "failover",
    realistic_seed: realistic?.seed ?? null,
    lease_ms: leaseMs ?? DEFAULT_LEASE_MS,
  };
  if (values.mode === "active-active") return activeActive(trials, say, realistic, bench, leaseMs);

  const fleet = new LocalFleet({ nodes: 2, log: say, realistic, leaseMs });
  await fleet.up();
  const traffic = new StickyTraffic({ url: fleet.url, clients: 20, intervalMs: 50 });
  let sampling = true;
  let doubleActive = 0;
  let samples = 0;
  const sampler = (async () => {
    while (sampling) {
      const roles = await Promise.all(
        fleet.nodes.map(async (n) => {
          try {
            const res = await fetch(`http://${n.address}:${n.adminPort}/readyz`, {
              signal: AbortSignal.timeout(300),
            });
            return ((await res.json()) as { role?: string }).role;
          } catch {
            return undefined;
          }
        }),
      );
      samples++;
      if (roles.filter((r) => r === "active").length > 1) doubleActive++;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const failover: number[] = [];
  const failed: number[] = [];
  let sessionsLost = 0;
  try {
    await startTraffic(fleet, traffic);
    for (let trial = 1; trial <= trials; trial++) {
      const active = await fleet.activeNode();
      if (!active) throw new Error(`trial ${trial}: no node holds the Elastic IP`);
      // A node dies at any moment of its lease's renewal cycle.
      await new Promise((r) => setTimeout(r, 1000 + Math.random() * 1000));
      const killAt = Date.now();
      fleet.signal(active.nodeId, "SIGKILL");
      await fleet.waitFor(
        () => !!traffic.firstSuccessAfter(killAt),
        20_000,
        `trial ${trial}: traffic did not resume`,
      );
      await new Promise((r) => setTimeout(r, 1500));
      const ms = traffic.firstSuccessAfter(killAt)!.doneAt - killAt;
      const lost = traffic.sessionsKept(killAt);
      const f = traffic.failuresBetween(killAt, killAt + ms + 1).length;
      failover.push(ms);
      failed.push(f);
      sessionsLost += lost.moved.length;
      // Where the time went, from the audit trail: the standby's move of the Elastic IP, written
      // once its read-back agreed, which may come after the first success.
      const movedNow = async () =>
        (await listEvents(fleet.store, fleet.fleetId, { limit: 5, newestFirst: true })).find(
          (e) => e.kind === "vip-moved" && Date.parse(e.at) >= killAt,
        );
      await fleet
        .waitFor(async () => !!(await movedNow()), 10_000, `trial ${trial}: no vip-moved event`)
        .catch(() => {});
      const moved = await movedNow();
      emit({
        ...bench,
        mode: "active-passive",
        trial,
        failover_ms: ms,
        vip_moved_ms: moved ? Date.parse(moved.at) - killAt : null,
        move_ms: (moved?.detail as { moveMs?: number } | undefined)?.moveMs ?? null,
        failed_requests: f,
        sessions_lost: lost.moved.length,
        from: active.nodeId,
      });
      fleet.startNode(active);
      await fleet.waitFor(
        () => fleet.allReady(),
        30_000,
        `trial ${trial}: ${active.nodeId} did not come back`,
      );
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    sampling = false;
    await sampler;
    await traffic.stop();
    await fleet.down();
  }
  const summary = {
    ...bench,
    mode: "active-passive",
    trials,
    failover_ms_p50: round(percentile(failover, 50)),
    failover_ms_p99: round(percentile(failover, 99)),
    failed_requests_p50: percentile(failed, 50),
    sessions_lost: sessionsLost,
    double_active: doubleActive,
    realism: realismOf(fleet),
  };
  say(
    `failover p50 ${summary.failover_ms_p50} ms, p99 ${summary.failover_ms_p99} ms over ${trials} kills; failed requests p50 ${summary.failed_requests_p50}; ` +
      `sessions lost ${sessionsLost}; ${samples} role samples, ${doubleActive} with two actives`,
  );
  emit(summary);
  return sessionsLost === 0 && doubleActive === 0 ? 0 : 1;
}

async function activeActive(
  trials: number,
  say: (s: string) => void,
  realistic: LocalFleetOptions["realistic"],
  bench: { bench: string; realistic_seed: number | null; lease_ms: number },
  leaseMs: number | undefined,
): Promise<number> {
  const fleet = new LocalFleet({ nodes: 3, mode: "active-active", log: say, realistic, leaseMs });
  await fleet.up();
  const clients = 30;
  const traffic = new StickyTraffic({
    url: `http://${fleet.dnsName}:${fleet.port}`,
    clients,
    dns: { resolver: fleet.resolver!, name: fleet.dnsName },
  });
  const zero: number[] = [];
  const failed: number[] = [];
  let sessionsLost = 0;
  try {
    await startTraffic(fleet, traffic);
    for (let trial = 1; trial <= trials; trial++) {
      // A node dies at any moment of the checker's cycle.
      await new Promise((r) => setTimeout(r, 1000 + Math.random() * 2000));
      const now = Date.now();
      const victim = busiestNode(fleet, traffic, now);
      const killAt = Date.now();
      fleet.signal(victim.nodeId, "SIGKILL");
      const {
        zeroAt,
        backAt: back,
        hit,
      } = await awaitRecovery(fleet, traffic, victim.nodeId, killAt, 60_000);
      if (zeroAt === undefined || back === undefined)
        throw new Error(
          `trial ${trial}: ${victim.nodeId}'s weight did not drop or its clients were not served again`,
        );
      await new Promise((r) => setTimeout(r, 1000));
      const f = traffic.failuresBetween(killAt, back + 1).length;
      const lost = traffic.sessionsKept(killAt).moved.length;
      zero.push(zeroAt - killAt);
      failed.push(f);
      sessionsLost += lost;
      emit({
        ...bench,
        mode: "active-active",
        trial,
        weight_zero_ms: zeroAt - killAt,
        clients_back_ms: back - killAt,
        clients_hit: hit.length,
        failed_requests: f,
        sessions_lost: lost,
        node: victim.nodeId,
      });
      fleet.startNode(victim);
      await fleet.waitFor(
        async () => (await fleet.weights())[victim.nodeId] === 100,
        90_000,
        `trial ${trial}: ${victim.nodeId}'s weight did not ramp back`,
      );
      // Let the clients' cached answers spread over the nodes again.
      await new Promise((r) => setTimeout(r, fleet.ttlS * 1000));
    }
  } finally {
    await traffic.stop();
    await fleet.down();
  }
  const summary = {
    ...bench,
    mode: "active-active",
    trials,
    weight_zero_ms_p50: round(percentile(zero, 50)),
    weight_zero_ms_p99: round(percentile(zero, 99)),
    failed_requests_p50: percentile(failed, 50),
    sessions_lost: sessionsLost,
    realism: realismOf(fleet),
  };
  say(
    `weight 0 p50 ${summary.weight_zero_ms_p50} ms, p99 ${summary.weight_zero_ms_p99} ms over ${trials} kills; ` +
      `failed requests p50 ${summary.failed_requests_p50}; sessions lost ${sessionsLost}`,
  );
  emit(summary);
  return sessionsLost === 0 ? 0 : 1;
}

/** What the realistic mode did over the run (null when off): evidence that it was in the way. */
function realismOf(fleet: LocalFleet) {
  const r = fleet.realismStats;
  return r
    ? {
        delayed_associations: r.delayedAssociations,
        stale_answers: r.staleAnswers,
        pending_answers: r.pendingAnswers,
        throttled: r.throttled,
        late_failures: r.lateFailures.length,
      }
    : null;
}

/** Starts the clients and waits until traffic flows, so that no trial measures a cold start. */
async function startTraffic(fleet: LocalFleet, traffic: StickyTraffic): Promise<void> {
  traffic.start();
  await fleet.waitFor(
    () => traffic.outcomes.filter((o) => o.ok).length > 100,
    20_000,
    "traffic did not flow",
  );
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:failover: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
