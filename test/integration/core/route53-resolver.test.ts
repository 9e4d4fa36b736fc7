/**
 * The local Route 53 resolver against records and health checks made with the
 * real SDK in the emulator. Health checks of type TCP reach their addresses
 * through an injected `tcpCheck` (a set of addresses that are down); HTTP
 * checks reach a real server on port 0.
 */
import { Resolver } from "node:dns/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type Change,
  ChangeResourceRecordSetsCommand,
  CreateHealthCheckCommand,
  CreateHostedZoneCommand,
  Route53Client,
} from "@aws-sdk/client-route-53";
import { awsClientConfig } from "../../../lib/core/aws";
import { emulatorEndpoint, uniqueId } from "../../harness/aws";
import { DnsServer } from "../../harness/dns-server";
import { createTcpHealthCheck } from "../../harness/health-checks";
import {
  CachingStub,
  Route53Resolver,
  type Route53ResolverOptions,
  type TcpCheck,
} from "../../harness/route53-resolver";

let route53: Route53Client;
let zoneId: string;
const zoneName = `${uniqueId("resolver")}.test`;
const resolvers: Route53Resolver[] = [];
const servers: Server[] = [];

beforeAll(async () => {
  // The emulator itself, not the realistic mode: the resolver models Route 53's DNS side, which
  // reads the records as they are (as in the local fleet), and the test's setup must not be
  // throttled by other tests' checkers sharing the run's rate limit.
  route53 = new Route53Client(awsClientConfig({ endpoint: emulatorEndpoint() }));
  const zone = await route53.send(
    new CreateHostedZoneCommand({ Name: zoneName, CallerReference: uniqueId("ref") }),
  );
  zoneId = zone.HostedZone!.Id!.split("/").pop()!;
});
afterEach(async () => {
  await Promise.all(resolvers.splice(0).map((r) => r.stop()));
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});
afterAll(() => route53.destroy());

/** Addresses whose TCP health checks fail; a fresh set per test. */
function downSet(): { down: Set<string>; tcpCheck: TcpCheck } {
  const down = new Set<string>();
  return { down, tcpCheck: async (ip) => !down.has(ip) };
}

async function started(o: Partial<Route53ResolverOptions> = {}): Promise<Route53Resolver> {
  const resolver = new Route53Resolver({
    route53,
    zoneId,
    pollMs: 50,
    healthCheckIntervalMs: 50,
    healthCheckTimeoutMs: 500,
    ...o,
  });
  resolvers.push(resolver);
  await resolver.start();
  return resolver;
}

/** Polls `condition` every 20 ms until it holds; fails after `timeoutMs`. */
async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A small seeded generator (mulberry32), so the weighted draws repeat run after run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** How often each address is answered over `draws` queries. */
function tally(resolver: Route53Resolver, name: string, draws: number, random = seeded(7)) {
  const counts = new Map<string, number>();
  for (let i = 0; i < draws; i++) {
    const a = resolver.resolve(name, random);
    const key = a?.address ?? "none";
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

function tcpHealthCheck(ip: string, failureThreshold?: number): Promise<string> {
  return createTcpHealthCheck(route53, ip, { failureThreshold });
}

/** A weighted A record; its SetIdentifier is unique in the zone (`name#id`). */
function weighted(name: string, id: string, ip: string, weight: number, healthCheckId?: string): Change {
  return {
    Action: "UPSERT",
    ResourceRecordSet: {
      Name: name,
      Type: "A",
      SetIdentifier: `${name}#${id}`,
      Weight: weight,
      TTL: 7,
      ResourceRecords: [{ Value: ip }],
      ...(healthCheckId ? { HealthCheckId: healthCheckId } : {}),
    },
  };
}

async function change(...changes: Change[]): Promise<void> {
  await route53.send(
    new ChangeResourceRecordSetsCommand({ HostedZoneId: zoneId, ChangeBatch: { Changes: changes } }),
  );
}

function name(label: string): string {
  return `${label}.${zoneName}`;
}

test("weighted records are answered in proportion to their weights (3:1 over 4000 draws)", async () => {
  const n = name("ratio");
  await change(weighted(n, "a", "127.1.0.1", 3), weighted(n, "b", "127.1.0.2", 1));
  const resolver = await started();
  const counts = tally(resolver, n, 4000);
  // 3000 and 1000 expected; the standard deviation is about 27.
  expect(Math.abs((counts.get("127.1.0.1") ?? 0) - 3000)).toBeLessThan(150);
  expect(Math.abs((counts.get("127.1.0.2") ?? 0) - 1000)).toBeLessThan(150);
  expect(counts.get("none")).toBeUndefined();
  expect(resolver.resolve(n, () => 0)).toEqual({ address: "127.1.0.1", ttlS: 7, setIdentifier: `${n}#a` });
});

test("names match in any case, final dot or not; other names and types get no answer", async () => {
  const n = name("case");
  await change(weighted(n, "a", "127.1.1.1", 1), {
    Action: "UPSERT",
    ResourceRecordSet: { Name: name("text"), Type: "TXT", TTL: 5, ResourceRecords: [{ Value: '"x"' }] },
  });
  const resolver = await started();
  expect(resolver.resolve(n)?.address).toBe("127.1.1.1");
  expect(resolver.resolve(`${n.toUpperCase()}.`)?.address).toBe("127.1.1.1");
  expect(resolver.resolve(name("text"))).toBeUndefined();
  expect(resolver.resolve(name("nothing-here"))).toBeUndefined();
});

test("a simple alias answers as its target does, with the target's TTL", async () => {
  const target = name("simple-target");
  await change(
    {
      Action: "UPSERT",
      ResourceRecordSet: { Name: target, Type: "A", TTL: 42, ResourceRecords: [{ Value: "127.1.2.1" }] },
    },
    {
      Action: "UPSERT",
      ResourceRecordSet: {
        Name: name("simple-alias"),
        Type: "A",
        // moto keeps the target as written: upper case and no final dot must still resolve.
        AliasTarget: { HostedZoneId: zoneId, DNSName: target.toUpperCase(), EvaluateTargetHealth: false },
      },
    },
  );
  const resolver = await started();
  expect(resolver.resolve(name("simple-alias"))).toEqual({ address: "127.1.2.1", ttlS: 42 });
});

test("weight 0 is answered only when no record with weight > 0 is healthy", async () => {
  const { down, tcpCheck } = downSet();
  const n = name("zero");
  const check = await tcpHealthCheck("127.1.3.1");
  await change(weighted(n, "up", "127.1.3.1", 1, check), weighted(n, "zero", "127.1.3.2", 0));
  const resolver = await started({ tcpCheck });
  await until(() => resolver.healthy(check) === true, "the check to be probed");
  expect(tally(resolver, n, 1000)).toEqual(new Map([["127.1.3.1", 1000]]));

  down.add("127.1.3.1");
  await until(() => resolver.healthy(check) === false, "the weighted record's check to fail");
  expect(tally(resolver, n, 1000)).toEqual(new Map([["127.1.3.2", 1000]]));
});

test("a failing check takes its record out after FailureThreshold probes, back on recovery", async () => {
  const { down, tcpCheck } = downSet();
  const n = name("threshold");
  // FailureThreshold 2 (not Route 53's default 3): the resolver must use the check's own.
  const failing = await tcpHealthCheck("127.1.4.1", 2);
  const steady = await tcpHealthCheck("127.1.4.2", 2);
  await change(weighted(n, "a", "127.1.4.1", 1, failing), weighted(n, "b", "127.1.4.2", 1, steady));
  // For each failed probe of the failing address: how many failed before it, and the state then.
  const seen: { failedBefore: number; healthy: boolean | undefined }[] = [];
  let resolver: Route53Resolver | undefined;
  const resolverRef = () => resolver;
  resolver = await started({
    tcpCheck: async (ip, port, timeoutMs) => {
      const ok = await tcpCheck(ip, port, timeoutMs);
      if (ip === "127.1.4.1" && !ok) {
        seen.push({ failedBefore: seen.length, healthy: resolverRef()?.healthy(failing) });
      }
      return ok;
    },
  });
  await until(() => resolver.healthy(failing) === true, "the check to be probed");
  expect(new Set(tally(resolver, n, 400).keys())).toEqual(new Set(["127.1.4.1", "127.1.4.2"]));

  down.add("127.1.4.1");
  await until(() => resolver.healthy(failing) === false, "the check to fail");
  await until(() => seen.length >= 3, "a third failed probe");
  // Healthy through the first two failures, unhealthy from the third probe on.
  expect(seen.slice(0, 3)).toEqual([
    { failedBefore: 0, healthy: true },
    { failedBefore: 1, healthy: true },
    { failedBefore: 2, healthy: false },
  ]);
  expect(tally(resolver, n, 400)).toEqual(new Map([["127.1.4.2", 400]]));

  down.delete("127.1.4.1");
  await until(() => resolver.healthy(failing) === true, "the check to recover");
  expect(new Set(tally(resolver, n, 400).keys())).toEqual(new Set(["127.1.4.1", "127.1.4.2"]));
});

test("when every record is unhealthy, Route 53 answers anyway by the same rules (fail open)", async () => {
  const { down, tcpCheck } = downSet();
  const n = name("fail-open");
  const ips = ["127.1.5.1", "127.1.5.2", "127.1.5.3"];
  const checks = await Promise.all(ips.map((ip) => tcpHealthCheck(ip)));
  await change(
    weighted(n, "a", ips[0]!, 2, checks[0]),
    weighted(n, "b", ips[1]!, 1, checks[1]),
    weighted(n, "zero", ips[2]!, 0, checks[2]),
  );
  const resolver = await started({ tcpCheck });
  for (const ip of ips) down.add(ip);
  await until(() => checks.every((c) => resolver.healthy(c) === false), "every check to fail");
  const counts = tally(resolver, n, 3000);
  // All treated as healthy: weight 2:1 between the nonzero records, the weight-0 one still left out.
  expect([...counts.keys()].sort()).toEqual([ips[0], ips[1]]);
  expect(Math.abs((counts.get(ips[0]!) ?? 0) - 2000)).toBeLessThan(150);
});

test("when every weight is 0, the records are answered with equal probability", async () => {
  const n = name("all-zero");
  const ips = ["127.1.6.1", "127.1.6.2", "127.1.6.3"];
  await change(...ips.map((ip, i) => weighted(n, `r${i}`, ip, 0)));
  const resolver = await started();
  const counts = tally(resolver, n, 3000);
  expect([...counts.keys()].sort()).toEqual(ips);
  for (const ip of ips) expect(Math.abs((counts.get(ip) ?? 0) - 1000)).toBeLessThan(150);
});

test("failover aliases evaluating target health: A while A has a healthy record, else B", async () => {
  const { down, tcpCheck } = downSet();
  const a = name("set-a");
  const b = name("set-b");
  const app = name("app");
  const [a1, a2, b1] = ["127.1.7.1", "127.1.7.2", "127.1.7.3"];
  const [ca1, ca2, cb1] = await Promise.all([a1!, a2!, b1!].map((ip) => tcpHealthCheck(ip)));
  const alias = (role: "PRIMARY" | "SECONDARY", target: string): Change => ({
    Action: "UPSERT",
    ResourceRecordSet: {
      Name: app,
      Type: "A",
      SetIdentifier: `${app}#${role}`,
      Failover: role,
      AliasTarget: { HostedZoneId: zoneId, DNSName: target, EvaluateTargetHealth: true },
    },
  });
  await change(
    weighted(a, "a1", a1!, 1, ca1),
    weighted(a, "a2", a2!, 1, ca2),
    weighted(b, "b1", b1!, 1, cb1),
    alias("PRIMARY", a),
    alias("SECONDARY", b),
  );
  const resolver = await started({ tcpCheck });
  const answered = () => new Set(tally(resolver, app, 300, Math.random).keys());
  expect(answered()).toEqual(new Set([a1, a2]));
  expect(resolver.resolve(app)?.ttlS).toBe(7);

  down.add(a1!);
  await until(() => resolver.healthy(ca1!) === false, "a1's check to fail");
  expect(answered()).toEqual(new Set([a2]));

  down.add(a2!);
  await until(() => answered().has(b1!), "the SECONDARY to answer");
  expect(resolver.healthy(ca2!)).toBe(false);
  expect(answered()).toEqual(new Set([b1]));

  down.delete(a1!);
  await until(() => answered().has(a1!), "the PRIMARY to answer again");
  expect(answered()).toEqual(new Set([a1]));
});

test("an HTTP health check fails on a 5xx status and passes on 2xx and 3xx", async () => {
  let status = 200;
  const server = createServer((req, res) => {
    res.statusCode = req.url === "/healthz" ? status : 404;
    res.end();
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const check = await route53.send(
    new CreateHealthCheckCommand({
      CallerReference: uniqueId("hc"),
      HealthCheckConfig: { Type: "HTTP", IPAddress: "127.0.0.1", Port: port, ResourcePath: "/healthz" },
    }),
  );
  const id = check.HealthCheck!.Id!;
  const n = name("http");
  await change(weighted(n, "web", "127.1.8.1", 1, id), weighted(n, "other", "127.1.8.2", 1));
  const resolver = await started();
  await until(() => resolver.healthy(id) === true, "the HTTP check to be probed");
  status = 503;
  await until(() => resolver.healthy(id) === false, "the HTTP check to fail");
  expect(tally(resolver, n, 200)).toEqual(new Map([["127.1.8.2", 200]]));
  status = 302;
  await until(() => resolver.healthy(id) === true, "the HTTP check to pass on a redirect");
});

test("probes of one check never overlap, and one that never answers fails at the timeout", async () => {
  const n = name("slow");
  const [slow, hanging] = ["127.1.9.1", "127.1.9.2"];
  const slowCheck = await tcpHealthCheck(slow!, 1);
  const hangingCheck = await tcpHealthCheck(hanging!, 1);
  await change(weighted(n, "slow", slow!, 1, slowCheck), weighted(n, "hanging", hanging!, 1, hangingCheck));
  let running = 0;
  let most = 0;
  let slowProbes = 0;
  const resolver = await started({
    healthCheckIntervalMs: 20,
    healthCheckTimeoutMs: 300,
    tcpCheck: (ip) => {
      // Never settles: only the resolver's timeout ends the probe.
      if (ip === hanging) return new Promise<boolean>(() => {});
      // Earlier tests' checks in the zone are probed too: healthy at once.
      if (ip !== slow) return Promise.resolve(true);
      // Takes six intervals: the next probe must wait for it.
      slowProbes++;
      most = Math.max(most, ++running);
      return new Promise<boolean>((r) =>
        setTimeout(() => {
          running--;
          r(true);
        }, 120),
      );
    },
  });
  await until(() => resolver.healthy(hangingCheck) === false, "the hanging check to fail");
  await until(() => slowProbes >= 4, "four probes of the slow check");
  expect(most).toBe(1);
  expect(resolver.healthy(slowCheck)).toBe(true);
});

test("a caching stub keeps its answer for the TTL and asks again after it", async () => {
  const n = name("cached");
  const simple = (ip: string): Change => ({
    Action: "UPSERT",
    ResourceRecordSet: { Name: n, Type: "A", TTL: 5, ResourceRecords: [{ Value: ip }] },
  });
  await change(simple("127.1.10.1"));
  const resolver = await started();
  let nowMs = 1_000;
  const stub = new CachingStub(resolver, n, () => nowMs);
  expect(stub.address()).toBe("127.1.10.1");

  await change(simple("127.1.10.2"));
  await until(() => resolver.resolve(n)?.address === "127.1.10.2", "the resolver to read the change");
  nowMs += 4_999;
  expect(stub.address()).toBe("127.1.10.1");
  nowMs += 1;
  expect(stub.address()).toBe("127.1.10.2");

  await change(simple("127.1.10.3"));
  await until(() => resolver.resolve(n)?.address === "127.1.10.3", "the resolver to read the second change");
  expect(stub.address()).toBe("127.1.10.2");
  stub.forget();
  expect(stub.address()).toBe("127.1.10.3");
});

test("timing settings are checked when the resolver is built", () => {
  expect(() => new Route53Resolver({ route53, zoneId, pollMs: 0 })).toThrow(
    "`pollMs` must be a positive number of milliseconds, got 0",
  );
  expect(() => new Route53Resolver({ route53, zoneId, healthCheckTimeoutMs: Number.NaN })).toThrow(
    "`healthCheckTimeoutMs` must be a positive number of milliseconds, got NaN",
  );
});

test("start fails with a Route 53 error naming the zone when the zone does not exist", async () => {
  const resolver = new Route53Resolver({ route53, zoneId: "ZNOSUCHZONE" });
  resolvers.push(resolver);
  await expect(resolver.start()).rejects.toMatchObject({
    code: "HAFLEET_ROUTE53",
    operation: "ListResourceRecordSets",
    message: expect.stringContaining("ZNOSUCHZONE"),
  });
});

test("real DNS over UDP answers as the resolver does: A with its TTL, NXDOMAIN, REFUSED", async () => {
  const n = name("udp");
  await change(weighted(n, "a", "127.0.77.1", 1), weighted(n, "b", "127.0.77.2", 3));
  const resolver = await started();
  await until(() => resolver.resolve(n) !== undefined, "the records read");
  const server = new DnsServer({ resolver, zoneName });
  const port = await server.start();
  try {
    // Node's own resolver (c-ares), asking the port as dig would.
    const client = new Resolver({ timeout: 2000, tries: 1 });
    client.setServers([`127.0.0.1:${port}`]);
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const [a] = await client.resolve4(n, { ttl: true });
      expect(a!.ttl).toBe(7);
      seen.add(a!.address);
    }
    expect([...seen].sort()).toEqual(["127.0.77.1", "127.0.77.2"]);
    await expect(client.resolve4(name("nosuch"))).rejects.toMatchObject({ code: "ENOTFOUND" });
    await expect(client.resolve4("example.com")).rejects.toMatchObject({ code: "EREFUSED" });
    expect(server.answered.get("NOERROR")).toBe(40);
  } finally {
    await server.stop();
  }
});
