/**
 * The demo: bounded tours of failover on the local fleet, one per mode.
 * Active-passive: starts the fleet, sends traffic from sticky clients through
 * the Elastic IP, kills the active node with SIGKILL, and measures: the time
 * from the kill to the first successful request through the Elastic IP, the
 * requests that failed meanwhile, and how many sticky sessions kept their
 * backend. Active-active: see `runActiveActiveTour`.
 */
import { listEvents } from "../../lib/core/events";
import { LocalFleet, type LocalNode } from "./local-fleet";
import { StickyTraffic } from "./traffic";

export interface TourSummary {
  readonly demo: "active-passive";
  readonly failover_ms: number | null;
  readonly failed_requests: number;
  readonly sessions_kept: number;
  readonly sessions_total: number;
}

/** A tour passes when traffic flowed again and every sticky session kept its backend. */
function passed(s: Pick<TourSummary, "failover_ms" | "sessions_kept" | "sessions_total">): boolean {
  return s.failover_ms !== null && s.sessions_total > 0 && s.sessions_kept === s.sessions_total;
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
  return { summary, ok: passed(summary) };
}

export interface ActiveActiveSummary {
  readonly demo: "active-active";
  readonly failover_ms: number | null;
  readonly failed_requests: number;
  readonly sessions_kept: number;
  readonly sessions_total: number;
}

/** The clients whose last answer before `t` came through `address`. */
export function clientsOn(traffic: StickyTraffic, address: string, t: number): number[] {
  const last = new Map<number, string | undefined>();
  for (const o of traffic.outcomes) if (o.ok && o.doneAt < t) last.set(o.client, o.address);
  return [...last].filter(([, a]) => a === address).map(([c]) => c);
}

/** The node whose own address served the most clients' last answers before `t`. */
export function busiestNode(fleet: LocalFleet, traffic: StickyTraffic, t: number): LocalNode {
  const served = (n: LocalNode) => clientsOn(traffic, n.own!.publicIp, t).length;
  return [...fleet.nodes].sort((a, b) => served(b) - served(a))[0]!;
}

/**
 * When every client in `clients` had a successful answer after `t` (the last
 * of their first successes), or undefined if one has not yet.
 */
export function allBackAfter(
  traffic: StickyTraffic,
  clients: readonly number[],
  t: number,
): number | undefined {
  let latest = t;
  for (const c of clients) {
    const first = traffic.outcomes.find((o) => o.client === c && o.ok && o.sentAt >= t);
    if (!first) return undefined;
    latest = Math.max(latest, first.doneAt);
  }
  return latest;
}

export interface Recovery {
  /** When the dead node's weight was first seen at 0 in Route 53. */
  readonly zeroAt: number | undefined;
  /** When every client it cost a request was answered again. */
  readonly backAt: number | undefined;
  /** The clients that used its address: before the kill, or from an answer fetched before its weight dropped. */
  readonly hit: number[];
}

/**
 * The aftermath of a node's death in active-active: its weight reaches 0;
 * one TTL later no client can still hold its address; by then every client
 * that used it has been answered again. Polls until all three, or the timeout.
 */
export async function awaitRecovery(
  fleet: LocalFleet,
  traffic: StickyTraffic,
  nodeId: string,
  killAt: number,
  timeoutMs: number,
): Promise<Recovery> {
  const address = fleet.node(nodeId).own!.publicIp;
  const hit = () => {
    const set = new Set(clientsOn(traffic, address, killAt));
    for (const o of traffic.failuresBetween(killAt)) if (o.address === address) set.add(o.client);
    return [...set];
  };
  let zeroAt: number | undefined;
  const done = async () => {
    zeroAt ??= (await fleet.weights())[nodeId] === 0 ? Date.now() : undefined;
    if (zeroAt === undefined || Date.now() < zeroAt + fleet.ttlS * 1000 + 500) return false;
    return allBackAfter(traffic, hit(), killAt) !== undefined;
  };
  await fleet.waitFor(done, timeoutMs, "").catch(() => {});
  const clients = hit();
  return {
    zeroAt,
    backAt: zeroAt === undefined ? undefined : allBackAfter(traffic, clients, killAt),
    hit: clients,
  };
}

/**
 * The active-active tour: three nodes behind a weighted Route 53 set, sticky
 * clients that resolve the name through the local resolver and honour the
 * TTL. SIGKILL of the node serving the most clients; measured: the time until
 * every client it served was answered again (its weight drops to 0, their
 * cached answers expire, they resolve to a survivor), the requests that failed
 * meanwhile, and the sticky sessions that kept their backend across nodes
 * (the shared session table). Then the node comes back and its weight ramps up.
 */
export async function runActiveActiveTour(
  options: TourOptions,
): Promise<{ summary: ActiveActiveSummary; ok: boolean }> {
  const say = options.say;
  const fleet = new LocalFleet({ nodes: 3, mode: "active-active", log: say });
  say(
    "starting the local fleet: emulator, tables, 3 nodes with their own Elastic IPs, a weighted Route 53 set...",
  );
  await fleet.up();
  let summary: ActiveActiveSummary;
  try {
    const resolver = fleet.resolver!;
    const clients = options.clients ?? 20;
    const weights = () => fleet.weights();
    say(`fleet up: clients resolve ${fleet.dnsName} (TTL ${fleet.ttlS} s); weights ${fmt(await weights())}`);
    const traffic = new StickyTraffic({
      url: `http://${fleet.dnsName}:${fleet.port}`,
      clients,
      dns: { resolver, name: fleet.dnsName },
    });
    traffic.start();
    await new Promise((r) => setTimeout(r, 3000));
    const spread = new Map<string, number>();
    for (const n of fleet.nodes) spread.set(n.nodeId, clientsOn(traffic, n.own!.publicIp, Date.now()).length);
    say(`${clients} sticky clients, by node: ${[...spread].map(([id, c]) => `${id} ${c}`).join(", ")}`);
    const victim = [...fleet.nodes].sort((a, b) => spread.get(b.nodeId)! - spread.get(a.nodeId)!)[0]!;

    const killAt = Date.now();
    const affected = clientsOn(traffic, victim.own!.publicIp, killAt);
    fleet.signal(victim.nodeId, "SIGKILL");
    say(`SIGKILL ${victim.nodeId} (${victim.own!.publicIp}, serving ${affected.length} clients)`);
    const { zeroAt, backAt: back, hit } = await awaitRecovery(fleet, traffic, victim.nodeId, killAt, 60_000);
    say(
      zeroAt
        ? `${victim.nodeId}'s weight reached 0 ${zeroAt - killAt} ms after the kill: ${fmt(await weights())}`
        : `${victim.nodeId}'s weight did not reach 0`,
    );
    await new Promise((r) => setTimeout(r, 2000));
    await traffic.stop();
    const sessions = traffic.sessionsKept(killAt);
    summary = {
      demo: "active-active",
      failover_ms: back !== undefined ? back - killAt : null,
      failed_requests: traffic.failuresBetween(killAt).length,
      sessions_kept: sessions.kept,
      sessions_total: sessions.total,
    };
    const elsewhere = traffic
      .failuresBetween(killAt)
      .filter((o) => o.address !== victim.own!.publicIp).length;
    say(
      back !== undefined
        ? `all ${hit.length} clients that used its address were answered again ${summary.failover_ms} ms after the kill ` +
            `(TTL ${fleet.ttlS} s); ${summary.failed_requests} requests failed meanwhile, ${elsewhere} of them at another address`
        : "its clients were not all answered again",
    );
    say(`${sessions.kept} of ${sessions.total} sticky sessions kept their backend`);

    await fleet.startNode(victim);
    say(`restarted ${victim.nodeId}: its weight ramps back up`);
    const ramp: number[] = [];
    await fleet
      .waitFor(
        async () => {
          const w = (await weights())[victim.nodeId] ?? 0;
          if (ramp.at(-1) !== w) ramp.push(w);
          return w === 100;
        },
        45_000,
        "the node's weight did not ramp back",
      )
      .catch(() => {});
    say(`${victim.nodeId}'s weight: ${ramp.join(" -> ")}`);
  } finally {
    await fleet.down();
  }
  return { summary, ok: passed(summary) };
}

function fmt(weights: Record<string, number>): string {
  return Object.entries(weights)
    .map(([id, w]) => `${id}=${w}`)
    .join(" ");
}
