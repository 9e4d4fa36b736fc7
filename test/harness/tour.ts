/**
 * The demo: a bounded tour of active-passive failover on the local fleet.
 * Starts the fleet, sends traffic from sticky clients through the Elastic IP,
 * kills the active node with SIGKILL, and measures: the time from the kill to
 * the first successful request through the Elastic IP, the requests that
 * failed meanwhile, and how many sticky sessions kept their backend.
 */
import { listEvents } from "../../lib/core/events";
import { LocalFleet } from "./local-fleet";
import { StickyTraffic } from "./traffic";

export interface TourSummary {
  readonly demo: "active-passive";
  readonly failover_ms: number | null;
  readonly failed_requests: number;
  readonly sessions_kept: number;
  readonly sessions_total: number;
}

export interface TourOptions {
  readonly say: (line: string) => void;
  /** Sticky clients. @default 20 */
  readonly clients?: number;
}

/** Runs the tour; `ok` is true only when traffic flowed again and no session was lost. */
export async function runTour(options: TourOptions): Promise<{ summary: TourSummary; ok: boolean }> {
  const say = options.say;
  const fleet = new LocalFleet({ nodes: 2, log: say });
  say("starting the local fleet: emulator, tables, 2 nodes, 3 backends, health checker, network fabric...");
  await fleet.up();
  let summary: TourSummary;
  try {
    const active = await fleet.activeNode();
    if (!active) throw new Error("no node holds the Elastic IP");
    say(
      `fleet up: traffic goes to ${fleet.url} (Elastic IP ${fleet.elasticIp.allocationId}), active node ${active.nodeId}`,
    );
    const traffic = new StickyTraffic({ url: fleet.url, clients: options.clients ?? 20 });
    traffic.start();
    await new Promise((r) => setTimeout(r, 3000));
    const warm = traffic.outcomes.filter((o) => o.ok).length;
    say(`${options.clients ?? 20} sticky clients sent ${traffic.outcomes.length} requests, ${warm} answered`);

    const killAt = Date.now();
    fleet.signal(active.nodeId, "SIGKILL");
    say(`SIGKILL ${active.nodeId} (the active node)`);
    await fleet
      .waitFor(() => !!traffic.firstSuccessAfter(killAt), 20_000, "traffic did not flow again")
      .catch(() => {});
    await new Promise((r) => setTimeout(r, 3000));
    await traffic.stop();

    const first = traffic.firstSuccessAfter(killAt);
    const sessions = traffic.sessionsKept(killAt);
    summary = {
      demo: "active-passive",
      failover_ms: first ? first.doneAt - killAt : null,
      failed_requests: traffic.failuresBetween(killAt).length,
      sessions_kept: sessions.kept,
      sessions_total: sessions.total,
    };
    const now = await fleet.activeNode();
    const events = await listEvents(fleet.store, fleet.fleetId);
    const moved = events.filter((e) => e.kind === "vip-moved").at(-1);
    say(
      `Elastic IP now on ${now?.nodeId ?? "nothing"}${moved ? `: ${moved.by} ${moved.reason} (token ${moved.token})` : ""}`,
    );
    say(
      first
        ? `traffic flowed again ${summary.failover_ms} ms after the kill; ${summary.failed_requests} requests failed meanwhile`
        : "traffic did not flow again",
    );
    say(`${sessions.kept} of ${sessions.total} sticky sessions kept their backend`);
  } finally {
    await fleet.down();
  }
  return {
    summary,
    ok:
      summary.failover_ms !== null &&
      summary.sessions_total > 0 &&
      summary.sessions_kept === summary.sessions_total,
  };
}
