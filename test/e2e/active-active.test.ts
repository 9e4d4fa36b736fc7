/**
 * Active-active end to end, on the local fleet: every node a real child
 * process with its own Elastic IP (a real listener on its own loopback
 * address), the fleet's weighted set in the emulator's Route 53, the health
 * checker in-process, and sticky clients that resolve the name through the
 * local resolver (Route 53's answers) and honour the TTL.
 */
import { Route53Client } from "@aws-sdk/client-route-53";
import { awsClientConfig } from "../../lib/core/aws";
import { ConfigStore } from "../../lib/core/config-store";
import { listEvents } from "../../lib/core/events";
import { SHARED_ENDPOINT } from "../../lib/core/failover";
import { DynamoLeaseStore } from "../../lib/core/lease";
import { freePort } from "../../lib/core/ports";
import { keys } from "../../lib/core/tables";
import { uniqueId } from "../harness/aws";
import { createFailoverPair, createZone, LocalFleet, type LocalFleetOptions } from "../harness/local-fleet";
import { Route53Resolver } from "../harness/route53-resolver";
import { awaitRecovery, busiestNode, clientsOn } from "../harness/tour";
import { StickyTraffic } from "../harness/traffic";

jest.setTimeout(180_000);

const fleets: LocalFleet[] = [];
const traffics: StickyTraffic[] = [];
const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const t of traffics.splice(0)) await t.stop();
  for (const s of stops.splice(0).reverse()) await s();
  for (const f of fleets.splice(0)) await f.down();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function up(options: LocalFleetOptions = {}): Promise<LocalFleet> {
  const fleet = new LocalFleet({
    nodes: 3,
    mode: "active-active",
    fleetId: uniqueId("aa"),
    ttlS: 2,
    checkerIntervalMs: 1000,
    ...options,
  });
  fleets.push(fleet);
  await fleet.up();
  return fleet;
}

function trafficTo(fleet: LocalFleet, resolver = fleet.resolver!, name = fleet.dnsName, clients = 12) {
  const t = new StickyTraffic({ url: `http://${name}:${fleet.port}`, clients, dns: { resolver, name } });
  traffics.push(t);
  t.start();
  return t;
}

async function flowing(fleet: LocalFleet, t: StickyTraffic, n = 60) {
  await fleet.waitFor(
    () =>
      t.outcomes.filter((o) => o.ok).length >= n &&
      t.backendsBefore(Date.now()).every((b) => b !== undefined),
    30_000,
    "traffic did not flow to every client",
  );
}

/** Three nodes under sticky load, and the node that serves the most clients (at least one). */
async function underLoad() {
  const f = await up();
  const t = trafficTo(f);
  await flowing(f, t);
  await sleep(1000);
  const victim = busiestNode(f, t, Date.now());
  expect(clientsOn(t, victim.own!.publicIp, Date.now()).length).toBeGreaterThan(0);
  return { f, t, victim };
}

test("SIGKILL of one of three under load: its weight drops to 0, the others serve on, sticky clients keep their backend, and it ramps back", async () => {
  const { f, t, victim } = await underLoad();
  const killAt = Date.now();
  f.signal(victim.nodeId, "SIGKILL");

  const { zeroAt, backAt, hit } = await awaitRecovery(f, t, victim.nodeId, killAt, 60_000);
  expect(zeroAt).toBeDefined();
  expect(backAt).toBeDefined();
  // Generous for a busy two-core machine; bench/failover.ts measures the real figure.
  expect(zeroAt! - killAt).toBeLessThan(10_000);
  const w = await f.weights();
  for (const n of f.nodes.filter((x) => x !== victim)) expect(w[n.nodeId]).toBe(100);
  await sleep(1000);

  // Every failed request went to the dead node's address: the others served on.
  const failed = t.failuresBetween(killAt);
  expect(failed.length).toBeGreaterThan(0);
  for (const o of failed) expect(o.address).toBe(victim.own!.publicIp);
  // None after its weight was 0 for one TTL: no client honouring the TTL can still hold it.
  expect(failed.filter((o) => o.sentAt > zeroAt! + f.ttlS * 1000 + 500)).toEqual([]);
  const sessions = t.sessionsKept(killAt);
  expect(sessions.total).toBe(12);
  expect(sessions.moved).toEqual([]);
  // Its clients now reach other nodes.
  const recent = t.outcomes.filter((o) => o.ok && o.sentAt > Date.now() - 1000 && hit.includes(o.client));
  expect(recent.length).toBeGreaterThan(0);
  for (const o of recent) expect(o.address).not.toBe(victim.own!.publicIp);

  await f.startNode(victim);
  const ramp: number[] = [];
  await f.waitFor(
    async () => {
      const weight = (await f.weights())[victim.nodeId]!;
      if (ramp.at(-1) !== weight) ramp.push(weight);
      return weight === 100;
    },
    60_000,
    "the restarted node's weight did not ramp back to 100",
  );
  // Slow start in DNS: at least two steps between 0 and 100, never going down.
  expect(ramp.filter((x) => x > 0 && x < 100).length).toBeGreaterThanOrEqual(2);
  expect(ramp).toEqual([...ramp].sort((a, b) => a - b));
  const events = await listEvents(f.store, f.fleetId);
  expect(events.some((e) => e.kind === "weights-changed" && e.by.startsWith("local-checker-"))).toBe(true);
});

test("SIGTERM of one of three under load: it serves until it is out of DNS and the TTL has passed, and no request fails", async () => {
  const { f, t, victim } = await underLoad();
  // One read at a time: reads sent every 100 ms whatever the emulator's speed pile up on a busy
  // machine. The weight reached 0 after `lastNonZeroAt`, when the last read that still found it
  // above 0 was sent: so the node, which must serve a TTL beyond that moment, must not exit
  // before `lastNonZeroAt` plus the TTL. That bound holds however late this process gets to read
  // (a stall here only makes it looser), and it is tight while reads come every 100 ms.
  let zeroAt: number | undefined;
  let lastNonZeroAt: number | undefined;
  let watching = true;
  const watch = (async () => {
    while (watching && zeroAt === undefined) {
      const sentAt = Date.now();
      const w = await f.weights().catch(() => undefined);
      if (w?.[victim.nodeId] === 0) zeroAt = Date.now();
      else {
        if (w) lastNonZeroAt = sentAt;
        await sleep(100);
      }
    }
  })();
  stops.push(async () => {
    watching = false;
    await watch;
  });
  const exited = new Promise<number>((r) => victim.child!.once("exit", () => r(Date.now())));
  const termAt = Date.now();
  f.signal(victim.nodeId, "SIGTERM");
  const exitAt = await exited;
  await sleep(1000);
  await t.stop();

  // Its weight went to 0 while it still served, and it kept serving a TTL beyond.
  expect(zeroAt).toBeDefined();
  expect(lastNonZeroAt).toBeDefined();
  expect(zeroAt!).toBeLessThan(exitAt);
  expect(exitAt - lastNonZeroAt!).toBeGreaterThanOrEqual(f.ttlS * 1000 - 100);
  // Bounded: the emulator's Route 53 is in sync at once, so the drain takes a checker run or two
  // and the TTL, well within its allowance (70 s plus the TTL).
  expect(exitAt - termAt).toBeLessThan(10_000 + f.ttlS * 1000);
  const failures = t.failuresBetween(termAt).map((o) => ({
    afterTermMs: o.sentAt - termAt,
    beforeExitMs: exitAt - o.sentAt,
    address: o.address === victim.own!.publicIp ? "drained node" : o.address,
    error: o.error,
  }));
  expect(failures).toEqual([]);
  // Its clients moved to the others once their answers expired.
  const after = t.outcomes.filter((o) => o.ok && o.sentAt > exitAt);
  expect(after.length).toBeGreaterThan(0);
  for (const o of after) expect(o.address).not.toBe(victim.own!.publicIp);
  const sessions = t.sessionsKept(termAt);
  expect(sessions.moved).toEqual([]);

  // The rest of the fleet stopped at once: with no other node to send clients to (and the
  // checker keeping a last weight), nobody waits out the DNS allowance (70 s plus the TTL).
  const rest = f.nodes.filter((n) => n !== victim);
  const allExited = Promise.all(rest.map((n) => new Promise((r) => n.child!.once("exit", r))));
  const stopAt = Date.now();
  for (const n of rest) f.signal(n.nodeId, "SIGTERM");
  await allExited;
  expect(Date.now() - stopAt).toBeLessThan(10_000);
});

test("every node unhealthy at once: the weights are not all zeroed (fail open)", async () => {
  const f = await up({ nodes: 2, ttlS: 5 });
  for (const n of f.nodes) f.signal(n.nodeId, "SIGSTOP");
  stops.push(() => {
    for (const n of f.nodes) f.signal(n.nodeId, "SIGCONT");
  });
  // Probes time out and heartbeats stop: after several checker runs every node looks failed.
  await sleep(8000);
  const w = await f.weights();
  expect(f.nodes.map((n) => w[n.nodeId])).toEqual([100, 100]);
  const zeroed = (await weightChanges(f)).filter((c) => c.to === 0 && c.nodeId !== SHARED_ENDPOINT);
  expect(zeroed).toEqual([]);
});

/** Every weight change in the audit trail, with who made it under which token. */
async function weightChanges(f: LocalFleet) {
  const events = (await listEvents(f.store, f.fleetId)).filter((e) => e.kind === "weights-changed");
  return events.flatMap((e) =>
    (e.detail as { changes: { nodeId: string; from: number | null; to: number }[] }).changes.map((c) => ({
      ...c,
      by: e.by,
      token: e.token,
    })),
  );
}

test("two checkers at once (an overlapping invocation): only the lease holder's weight changes land", async () => {
  const f = await up({ nodes: 2 });
  const second = f.newChecker("overlapping-checker");
  const stop = new AbortController();
  const run = second.runFor(120_000, 1000, stop.signal);
  stops.push(async () => {
    stop.abort();
    await run.catch(() => {});
  });
  await sleep(2000);
  const victim = f.nodes[0]!;
  f.signal(victim.nodeId, "SIGKILL");
  await f.waitFor(async () => (await f.weights())[victim.nodeId] === 0, 30_000, "weight did not reach 0");
  // The audit event follows once Route 53 reports the change INSYNC and it reads back.
  const isDrop = (c: { nodeId: string; from: number | null; to: number }) =>
    c.nodeId === victim.nodeId && c.from === 100 && c.to === 0;
  await f.waitFor(async () => (await weightChanges(f)).some(isDrop), 30_000, "no audit event of the drop");
  const holder = await new DynamoLeaseStore(f.store, f.fleetId).get("checker");
  const changes = await weightChanges(f);
  const drop = changes.find(isDrop);
  // The drop was made by the checker holding the lease, under its token.
  expect(drop).toMatchObject({ by: holder!.holder, token: holder!.token });
  const desired = await f.store.get("state", { pk: keys.fleet(f.fleetId), sk: keys.dns(f.dnsName) });
  expect(desired).toMatchObject({ by: holder!.holder, fenceToken: holder!.token });
  // A token belongs to one checker: no change was ever made under another's token.
  const owners = new Map<number | undefined, Set<string>>();
  for (const c of changes) owners.set(c.token, (owners.get(c.token) ?? new Set()).add(c.by));
  for (const [, by] of owners) expect(by.size).toBe(1);
  // The overlapping checker ran all along: it was skipped while the other held the lease.
  expect(second.lease.observed?.holder).toBeDefined();
});

test("switching active-passive -> active-active -> active-passive under load fails no request", async () => {
  const f = await up({ nodes: 2, mode: "active-passive", dns: true });
  const t = trafficTo(f, f.resolver!, f.dnsName, 10);
  await flowing(f, t);
  const shared = f.elasticIp.publicIp;
  const own = new Set(f.nodes.map((n) => n.own!.publicIp));
  expect(t.outcomes.filter((o) => o.ok).every((o) => o.address === shared)).toBe(true);
  const configs = new ConfigStore(f.store, f.fleetId);
  const switchTo = async (mode: "active-passive" | "active-active") => {
    const now = (await configs.get())!;
    await configs.put(
      { ...now.config, failover: { ...now.config.failover, mode } },
      { expectedVersion: now.version, by: "e2e" },
    );
  };
  const startedAt = Date.now();
  await switchTo("active-active");
  await f.waitFor(
    () => {
      const recent = t.outcomes.filter((o) => o.ok && o.sentAt > Date.now() - 500);
      return recent.length > 0 && recent.every((o) => own.has(o.address!));
    },
    40_000,
    "clients did not move to the nodes' own addresses",
  );
  const movedAt = Date.now();
  await switchTo("active-passive");
  await f.waitFor(
    () => {
      const recent = t.outcomes.filter((o) => o.ok && o.sentAt > Date.now() - 500);
      return recent.length > 0 && recent.every((o) => o.address === shared);
    },
    40_000,
    "clients did not move back to the shared address",
  );
  await sleep(500);
  expect(t.failuresBetween(startedAt)).toEqual([]);
  expect(
    t.outcomes
      .filter((o) => o.ok && o.sentAt > startedAt && o.sentAt < movedAt)
      .some((o) => own.has(o.address!)),
  ).toBe(true);
  expect(t.sessionsKept(startedAt).moved).toEqual([]);
});

test("DNS failover between two fleets: the PRIMARY/SECONDARY pair sends clients to the second fleet when the first is down", async () => {
  const route53 = new Route53Client(awsClientConfig());
  stops.push(() => route53.destroy());
  const zone = await createZone(route53, `${uniqueId("pair")}.test`);
  // One listener port for both fleets (on their own addresses), as two regions serve one name.
  const common = { nodes: 2, zone, healthCheckIntervalMs: 300, port: await freePort() } as const;
  const a = await up({ ...common, fleetId: uniqueId("east"), addressBlock: 21 });
  const b = await up({ ...common, fleetId: uniqueId("west"), addressBlock: 22 });
  const name = `app.${zone.zoneName}`;
  await createFailoverPair(route53, zone, name, a.dnsName, b.dnsName);
  const resolver = new Route53Resolver({
    route53,
    zoneId: zone.zoneId,
    tcpCheck: (ip, port, timeoutMs) => (a.serves(ip) ? a : b).check(ip, port, timeoutMs),
    healthCheckIntervalMs: 300,
  });
  await resolver.start();
  stops.push(() => resolver.stop());
  const t = new StickyTraffic({ url: `http://${name}:${a.port}`, clients: 8, dns: { resolver, name } });
  traffics.push(t);
  t.start();
  await flowing(a, t, 30);
  expect(t.outcomes.filter((o) => o.ok).every((o) => a.serves(o.address!))).toBe(true);

  const downAt = Date.now();
  for (const n of a.nodes) a.signal(n.nodeId, "SIGKILL");
  await a.waitFor(
    () => {
      const recent = t.outcomes.filter((o) => o.sentAt > Date.now() - 500);
      return recent.length > 0 && recent.every((o) => o.ok && b.serves(o.address!));
    },
    40_000,
    "clients were not sent to the second fleet",
  );
  const fromB = t.outcomes.filter((o) => o.ok && o.sentAt > downAt);
  expect(fromB.length).toBeGreaterThan(0);
  expect(fromB.every((o) => b.serves(o.address!))).toBe(true);
  // While the first fleet was down its checker kept weights up (fail open): Route 53's health checks moved the clients.
  const w = await a.weights();
  expect(a.nodes.some((n) => (w[n.nodeId] ?? 0) > 0)).toBe(true);
});
