/**
 * The local fleet: the whole system on one machine (docs/architecture.md §9).
 *
 * 1. An AWS emulator: the embedded moto server, or the one `AWS_ENDPOINT_URL`
 *    names (LocalStack, say).
 * 2. The tables, the fleet config, an EC2 instance per node and the fleet's
 *    Elastic IP, all in the emulator through the real AWS SDK.
 * 3. Demo backends: HTTP servers on loopback that answer with their own id.
 * 4. The nodes as child processes (proxy + agent), each bound to its own
 *    loopback address, as instances have their own private addresses.
 * 5. The health checker's handler logic in-process, as Lambda runs it
 *    (Lambda code does not run inside the emulator): invocations of bounded
 *    length with a gap between them, each a new `HealthChecker` (fresh memory:
 *    no probe history, heartbeat readings or DNS view carried over), on clients
 *    that live across invocations as a warm Lambda's do.
 * 6. The network fabric: a listener on each Elastic IP that forwards to the
 *    node the emulator says owns it.
 * 7. With DNS (active-active): each node's own Elastic IP, the fleet's
 *    weighted set in a Route 53 zone with a health check per record (as the
 *    CDK stack makes them), and a resolver that answers as Route 53 would.
 * 8. With `realistic`: the fault proxy's realistic mode between the fleet and
 *    the emulator (docs/architecture.md §9); the fabric and the resolver read
 *    the emulator itself.
 *
 * A state file (`.hafleet/local/<fleet>.json`) tells other commands
 * (`hafleet status`, `kill`, `pause`, ...) where the fleet runs.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { EC2Client } from "@aws-sdk/client-ec2";
import {
  ChangeResourceRecordSetsCommand,
  CreateHostedZoneCommand,
  Route53Client,
} from "@aws-sdk/client-route-53";
import { awsClientConfig } from "../../lib/core/aws";
import { HealthChecker, type HealthCheckerOptions } from "../../lib/core/checker";
import { systemClock } from "../../lib/core/clock";
import type { FleetConfigInput } from "../../lib/core/config";
import { ConfigStore } from "../../lib/core/config-store";
import { WeightedRecords } from "../../lib/core/dns";
import { ElasticIps } from "../../lib/core/elastic-ip";
import { SHARED_ENDPOINT } from "../../lib/core/failover";
import { freePort } from "../../lib/core/ports";
import { StateStore } from "../../lib/core/store";
import { ensureTables, type TableNames } from "../../lib/core/tables";
import { generateAdminToken } from "../../proxy/admin-token";
import { bundle } from "./bundle";
import { DnsServer } from "./dns-server";
import { allocateElasticIp, runInstances } from "./ec2";
import { type Emulator, emulatorEnv, startEmulator, WORK_DIR } from "./emulator";
import { ElasticIpFabric } from "./fabric";
import { FaultProxy, type RealisticMode } from "./fault-proxy";
import { createTcpHealthCheck } from "./health-checks";
import { Route53Resolver } from "./route53-resolver";

/** A Route 53 hosted zone in the emulator; two local fleets may share one. */
export interface LocalZone {
  readonly zoneId: string;
  /** e.g. `hafleet.test` (no final dot). */
  readonly zoneName: string;
}

/**
 * A PRIMARY/SECONDARY failover pair at `name`: aliases of two weighted sets in
 * the zone, each following its target's health (EvaluateTargetHealth), as the
 * CDK stack's `DnsFailover` makes it. Route 53 answers with the primary's set
 * while any of its records is healthy, else with the secondary's.
 */
export async function createFailoverPair(
  route53: Route53Client,
  zone: LocalZone,
  name: string,
  primary: string,
  secondary: string,
): Promise<void> {
  const alias = (role: "PRIMARY" | "SECONDARY", target: string) => ({
    Action: "UPSERT" as const,
    ResourceRecordSet: {
      Name: `${name}.`,
      Type: "A" as const,
      SetIdentifier: `${name}#${role.toLowerCase()}`,
      Failover: role,
      AliasTarget: { HostedZoneId: zone.zoneId, DNSName: `${target}.`, EvaluateTargetHealth: true },
    },
  });
  await route53.send(
    new ChangeResourceRecordSetsCommand({
      HostedZoneId: zone.zoneId,
      ChangeBatch: { Changes: [alias("PRIMARY", primary), alias("SECONDARY", secondary)] },
    }),
  );
}

/** Creates a hosted zone in the emulator. */
export async function createZone(route53: Route53Client, zoneName: string): Promise<LocalZone> {
  const out = await route53.send(
    new CreateHostedZoneCommand({
      Name: zoneName,
      CallerReference: `${zoneName}-${Date.now().toString(36)}`,
    }),
  );
  return { zoneId: out.HostedZone!.Id!.split("/").pop()!, zoneName };
}

/**
 * The checker Lambda runs 55 s of every minute (`parseCheckerInvocation`, the
 * control plane's schedule); the local fleet scales that down, so that tests
 * meet invocation boundaries: 10 s invocations, 1 s apart.
 */
export const CHECKER_INVOCATION_MS = 10_000;
export const CHECKER_GAP_MS = 1000;
/**
 * An invocation still running this long after its length has hit the Lambda's
 * timeout: the handler stops 5 s before it (`parseCheckerInvocation`).
 */
export const CHECKER_TIMEOUT_MARGIN_MS = 5000;
/** After the fleet is told to stop, how long an invocation gets to end by itself. */
const CHECKER_STOP_GRACE_MS = 2000;

export interface LocalFleetOptions {
  /** @default "local" */
  readonly fleetId?: string;
  /** @default 2 */
  readonly nodes?: number;
  /** @default 3 */
  readonly backends?: number;
  /** The HTTP listener's port on the Elastic IP and on every node. @default a free port */
  readonly port?: number;
  /** Use this emulator instead of starting moto (e.g. LocalStack). @default `AWS_ENDPOINT_URL`, else embedded moto */
  readonly endpoint?: string;
  /**
   * The endpoint the nodes use to reach AWS, e.g. a fault proxy in front of the
   * emulator, to cut them off; a function gives each node its own. @default the emulator's
   */
  readonly nodeEndpoint?: string | ((nodeId: string) => string);
  /** The endpoint the in-process health checker uses. @default the emulator's */
  readonly checkerEndpoint?: string;
  /**
   * The emulator itself, read by the fabric and the resolver: they stand for
   * AWS's network and DNS, which act on an association or a record when it is
   * applied, whatever the API says meanwhile.
   * @default `HAFLEET_EMULATOR_ENDPOINT` (past the tests' realistic proxy) without `endpoint`, else the emulator's
   */
  readonly truthEndpoint?: string;
  /**
   * Puts the fault proxy's realistic mode between the emulator and everything
   * the fleet sends it (nodes, checker, the harness's own calls), as the tests'
   * global setup does; the fabric and the resolver then read the emulator
   * itself, unless `truthEndpoint` says otherwise. @default off
   */
  readonly realistic?: { readonly mode: RealisticMode; readonly seed: number };
  /** Run the health checker in-process. @default true */
  readonly checker?: boolean;
  /** The config's `failover.mode` at start. @default "active-passive" */
  readonly mode?: "active-passive" | "active-active";
  /** The config's `failover.leaseMs`. @default the config's default */
  readonly leaseMs?: number;
  /**
   * Each node's own Elastic IP, the weighted set in Route 53 with health checks,
   * the checker managing its weights, and a resolver. @default true in active-active
   */
  readonly dns?: boolean;
  /** The config's `dns.ttlS`. @default the config's default */
  readonly ttlS?: number;
  /** The zone for the records. @default a new zone `hafleet.test` */
  readonly zone?: LocalZone;
  /** Third octet of the nodes' loopback addresses, 127.0.<block>.<n>; two fleets need two. @default 10 */
  readonly addressBlock?: number;
  /** Interval of the in-process health checker. @default 1000; 2000 (the Lambda's default) with DNS */
  readonly checkerIntervalMs?: number;
  /** How long each checker invocation runs, and the gap before the next. @default CHECKER_INVOCATION_MS, CHECKER_GAP_MS */
  readonly checkerInvocationMs?: number;
  readonly checkerGapMs?: number;
  /** The checker's probe and lease settings. @default the checker's */
  readonly checkerSettings?: Pick<
    HealthCheckerOptions,
    "probeTimeoutMs" | "rise" | "fall" | "checkerLeaseMs"
  >;
  /**
   * Interval of the resolver's health checks. Route 53's fastest is 10 s; a
   * test of DNS failover between fleets may ask for less. @default 10000
   */
  readonly healthCheckIntervalMs?: number;
  /** Node log lines go here (prefixed with the node id). @default dropped */
  readonly onNodeLog?: (nodeId: string, line: string) => void;
  readonly log?: (line: string) => void;
}

export interface LocalNode {
  readonly nodeId: string;
  readonly instanceId: string;
  /** The node's own loopback address: its listeners bind here. */
  readonly address: string;
  readonly adminPort: number;
  /** The node's own Elastic IP (with DNS). */
  readonly own: { readonly allocationId: string; readonly publicIp: string } | undefined;
  child: ChildProcess | undefined;
}

/** What other hafleet commands need to find a running local fleet. */
export interface LocalFleetState {
  readonly fleetId: string;
  readonly endpoint: string;
  readonly tables: TableNames;
  readonly elasticIp: { readonly allocationId: string; readonly publicIp: string };
  readonly port: number;
  /** The weighted set, with DNS. */
  readonly dns?: {
    readonly zoneId: string;
    readonly name: string;
    /** The loopback UDP port that answers DNS for the zone (127.0.0.1). */
    readonly port?: number;
  };
  readonly nodes: {
    readonly nodeId: string;
    readonly pid: number | undefined;
    readonly instanceId: string;
    readonly address: string;
    readonly adminPort: number;
    readonly publicIp?: string;
  }[];
  readonly ownerPid: number;
  /**
   * Where the fleet's process takes `hafleet local start|restart NODE`
   * (loopback; each request carries the fleet's admin token).
   */
  readonly controlUrl?: string;
}

export function stateFile(fleetId: string): string {
  return join(WORK_DIR, "local", `${fleetId}.json`);
}

/** The fleet's admin token (mode 600), which its nodes require for `POST /drain`. */
export function adminTokenFile(fleetId: string): string {
  return join(WORK_DIR, "local", `${fleetId}.admin-token`);
}

export async function readLocalState(fleetId: string): Promise<LocalFleetState> {
  try {
    return JSON.parse(await readFile(stateFile(fleetId), "utf8")) as LocalFleetState;
  } catch {
    throw new Error(
      `no local fleet '${fleetId}' is running here (no ${stateFile(fleetId)}): start one with \`hafleet local up\``,
    );
  }
}

export class LocalFleet {
  readonly fleetId: string;
  readonly nodes: LocalNode[] = [];
  endpoint = "";
  port = 0;
  tables: TableNames = { state: "", sessions: "" };
  elasticIp = { allocationId: "", publicIp: "" };
  store!: StateStore;
  elasticIps!: ElasticIps;
  route53!: Route53Client;
  /** The zone and the weighted set's name (with DNS). */
  zone: LocalZone | undefined;
  dnsName = "";
  /** Answers for the weighted set as Route 53 would (with DNS). */
  resolver: Route53Resolver | undefined;
  /** The resolver's answers as real DNS (with DNS): `dig @127.0.0.1 -p <port> <dnsName>`. */
  dnsServer: DnsServer | undefined;
  readonly mode: "active-passive" | "active-active";
  readonly dns: boolean;
  private emulator: Emulator | undefined;
  /** The state file has been written once (up() ends with it): later changes are recorded there too. */
  private stateWritten = false;
  /** The realistic proxy (with `realistic`), and the endpoint behind it. */
  private realisticProxy: FaultProxy | undefined;
  private behindProxy: string | undefined;
  private ec2!: EC2Client;
  /** The fabric's and the resolver's view of the emulator (see `truthEndpoint`). */
  private truthIps: ElasticIps | undefined;
  private truthRoute53: Route53Client | undefined;
  private readonly backends: Server[] = [];
  /** Demo backends whose health checks fail (they still answer requests). */
  private readonly failingChecks = new Set<string>();
  private fabric: ElasticIpFabric | undefined;
  private checkerRun: Promise<unknown> | undefined;
  private checkerStore: StateStore | undefined;
  private checkerIps: ElasticIps | undefined;
  private checkerRecords: WeightedRecords | undefined;
  private readonly checkerStop = new AbortController();
  /** Ends the running checker invocation early (`restartChecker`). */
  private invocation: AbortController | undefined;
  private script = "";
  private readonly o: LocalFleetOptions;
  private readonly log: (line: string) => void;

  constructor(options: LocalFleetOptions = {}) {
    this.o = options;
    this.fleetId = options.fleetId ?? "local";
    this.log = options.log ?? (() => {});
    this.mode = options.mode ?? "active-passive";
    this.dns = options.dns ?? this.mode === "active-active";
  }

  /** What the realistic mode did (with `realistic`). */
  get realismStats(): FaultProxy["realismStats"] | undefined {
    return this.realisticProxy?.realismStats;
  }

  /** The URL clients use: the Elastic IP and the listener port. */
  get url(): string {
    return `http://${this.elasticIp.publicIp}:${this.port}`;
  }

  async up(): Promise<void> {
    // 1. The emulator.
    const endpoint = this.o.endpoint ?? process.env.AWS_ENDPOINT_URL;
    if (endpoint) this.endpoint = endpoint;
    else {
      this.log("starting the AWS emulator (moto server)...");
      this.emulator = await startEmulator({ log: this.log });
      this.endpoint = this.emulator.endpoint;
    }
    if (this.o.realistic) {
      this.realisticProxy = await new FaultProxy(this.endpoint, { realistic: this.o.realistic }).start();
      this.behindProxy = this.endpoint;
      this.endpoint = this.realisticProxy.endpoint;
      this.log(`realistic AWS mode on, seed ${this.o.realistic.seed}`);
    }
    Object.assign(process.env, emulatorEnv(this.endpoint), {
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
    });
    const suffix = Date.now().toString(36);
    this.tables = {
      state: `hafleet-${this.fleetId}-state-${suffix}`,
      sessions: `hafleet-${this.fleetId}-sessions-${suffix}`,
    };
    const ddb = new DynamoDBClient(awsClientConfig());
    try {
      await ensureTables(ddb, this.tables);
    } finally {
      ddb.destroy();
    }
    this.store = new StateStore({ tables: this.tables });
    this.ec2 = new EC2Client(awsClientConfig());
    this.elasticIps = new ElasticIps({ ec2: this.ec2 });

    // 3. Backends, then the config that names them.
    const backendIds: string[] = [];
    for (let i = 1; i <= (this.o.backends ?? 3); i++) {
      const id = `backend-${i}`;
      const server = createServer((req, res) => {
        if (req.url === "/healthz") {
          const up = !this.failingChecks.has(id);
          return res.writeHead(up ? 200 : 503).end(up ? "ok" : "failing");
        }
        const body = JSON.stringify({ backend: id, path: req.url });
        res
          .writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
          .end(body);
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      this.backends.push(server);
      backendIds.push(`${id}@${(server.address() as AddressInfo).port}`);
    }
    this.port = this.o.port ?? (await freePort());
    const config: FleetConfigInput = {
      listeners: [
        {
          name: "web",
          protocol: "http",
          port: this.port,
          pool: "app",
          stickiness: { cookieName: "HAFLEET", ttlS: 3600 },
        },
      ],
      pools: {
        app: {
          algorithm: "round-robin",
          backends: backendIds.map((b) => {
            const [id, port] = b.split("@");
            return { id: id!, host: "127.0.0.1", port: Number(port) };
          }),
          healthCheck: { type: "http", path: "/healthz", intervalMs: 1000, timeoutMs: 500 },
        },
      },
      failover: { mode: this.mode, ...(this.o.leaseMs ? { leaseMs: this.o.leaseMs } : {}) },
      ...(this.o.ttlS ? { dns: { ttlS: this.o.ttlS } } : {}),
    };
    await new ConfigStore(this.store, this.fleetId).put(config, {
      expectedVersion: 0,
      by: "hafleet local up",
    });

    // 2. Instances and the Elastic IP.
    const count = this.o.nodes ?? 2;
    const nodeIds = Array.from({ length: count }, (_, i) => `node-${i + 1}`);
    const instances = await runInstances(this.ec2, this.fleetId, nodeIds);
    this.elasticIp = await allocateElasticIp(this.ec2, this.fleetId);
    this.log(
      `emulator ${this.endpoint}; Elastic IP ${this.elasticIp.publicIp} (${this.elasticIp.allocationId})`,
    );
    this.route53 = new Route53Client(awsClientConfig());

    // 4. Nodes, with one admin token for the fleet (the stack keeps it in Secrets Manager).
    this.script = await bundle("proxy/main.ts");
    await mkdir(join(WORK_DIR, "local"), { recursive: true });
    await writeFile(adminTokenFile(this.fleetId), `${generateAdminToken()}\n`, { mode: 0o600 });
    for (const [i, nodeId] of nodeIds.entries()) {
      this.nodes.push({
        nodeId,
        instanceId: instances[i]!,
        address: `127.0.${this.o.addressBlock ?? 10}.${i + 1}`,
        adminPort: await freePort(),
        own: this.dns ? await allocateElasticIp(this.ec2, this.fleetId) : undefined,
        child: undefined,
      });
    }
    // 7. The weighted set, as the stack makes it: a record and a health check per address.
    if (this.dns) await this.createRecords();
    for (const node of this.nodes) this.spawnNode(node);
    await this.waitFor(() => this.allReady(), 60_000, "nodes did not become ready");

    // 6. The fabric, 5. the checker.
    const truth =
      this.o.truthEndpoint ??
      this.behindProxy ??
      (this.o.endpoint ? undefined : process.env.HAFLEET_EMULATOR_ENDPOINT);
    if (truth && truth !== this.endpoint) {
      this.truthIps = new ElasticIps({ aws: { endpoint: truth } });
      this.truthRoute53 = new Route53Client(awsClientConfig({ endpoint: truth }));
    }
    this.fabric = new ElasticIpFabric({
      elasticIps: this.truthIps ?? this.elasticIps,
      store: this.store,
      fleetId: this.fleetId,
      addresses: [this.elasticIp, ...this.nodes.flatMap((n) => (n.own ? [n.own] : []))],
      ports: [this.port],
    });
    await this.fabric.start();
    if (this.zone) {
      const fabric = this.fabric;
      this.resolver = new Route53Resolver({
        route53: this.truthRoute53 ?? this.route53,
        zoneId: this.zone.zoneId,
        tcpCheck: (ip, port, timeoutMs) => fabric.check(ip, port, timeoutMs),
        healthCheckIntervalMs: this.o.healthCheckIntervalMs ?? 10_000,
      });
      await this.resolver.start();
      // Real DNS for dig and curl --resolve, on a loopback UDP port.
      this.dnsServer = new DnsServer({ resolver: this.resolver, zoneName: this.zone.zoneName });
      await this.dnsServer.start();
    }
    if (this.o.checker ?? true) {
      const endpoint = this.o.checkerEndpoint;
      this.checkerStore = endpoint ? new StateStore({ tables: this.tables, aws: { endpoint } }) : undefined;
      this.checkerIps = endpoint ? new ElasticIps({ aws: { endpoint } }) : undefined;
      this.checkerRecords = endpoint ? new WeightedRecords({ aws: { endpoint } }) : undefined;
      this.checkerRun = this.runCheckerInvocations();
    }
    await this.waitFor(
      async () => !!this.fabric?.ownerOf(this.elasticIp.allocationId),
      30_000,
      "no node took the Elastic IP",
    );
    await this.waitFor(
      async () => this.nodes.every((n) => !n.own || !!this.fabric?.ownerOf(n.own.allocationId)),
      30_000,
      "not every node took its own Elastic IP",
    );
    await this.writeState();
  }

  /**
   * Makes a demo backend (`backend-N`) fail its health checks, so that the
   * nodes take it out of their pools, or pass them again.
   */
  setBackendHealthy(id: string, healthy: boolean): void {
    if (healthy) this.failingChecks.delete(id);
    else this.failingChecks.add(id);
  }

  /** The backends' health as a node sees it (its `/readyz`), by backend id; undefined when it does not answer. */
  async backendHealth(nodeId: string): Promise<Record<string, boolean> | undefined> {
    const n = this.node(nodeId);
    try {
      const res = await fetch(`http://${n.address}:${n.adminPort}/readyz`, {
        signal: AbortSignal.timeout(1000),
      });
      const body = (await res.json()) as { backends?: { id: string; healthy: boolean }[] };
      return Object.fromEntries((body.backends ?? []).map((b) => [b.id, b.healthy]));
    } catch {
      return undefined;
    }
  }

  /** True when `ip` is one of this fleet's Elastic IPs. */
  serves(ip: string): boolean {
    return !!this.fabric?.serves(ip);
  }

  /** What a Route 53 TCP health check of `ip:port` would see (see `ElasticIpFabric.check`). */
  check(ip: string, port: number, timeoutMs: number): Promise<boolean> {
    return this.fabric ? this.fabric.check(ip, port, timeoutMs) : Promise.resolve(false);
  }

  /** The config's `dns.ttlS` as the fleet was started with. */
  get ttlS(): number {
    return this.o.ttlS ?? 10;
  }

  /**
   * The weights of the fleet's weighted set in Route 53 now, by node id (and
   * `active`), as DNS serves them: read from the emulator itself, so that a
   * test watching them spends none of the API's rate the checker lives within.
   */
  async weights(): Promise<Record<string, number>> {
    if (!this.zone) return {};
    const now = await new WeightedRecords({ route53: this.truthRoute53 ?? this.route53 }).read({
      zoneId: this.zone.zoneId,
      name: this.dnsName,
      ttlS: this.ttlS,
    });
    return Object.fromEntries([...now.values()].map((r) => [r.nodeId, r.weight]));
  }

  /**
   * The checker as Lambda runs it, until the fleet goes down: each invocation a
   * new checker (its own id, as each Lambda request has), running for its
   * length; a failed invocation is logged and the next one runs, as the next
   * scheduled one would.
   */
  private async runCheckerInvocations(): Promise<void> {
    const stop = this.checkerStop.signal;
    for (let n = 1; !stop.aborted; n++) {
      const invocation = new AbortController();
      const end = () => invocation.abort();
      stop.addEventListener("abort", end, { once: true });
      this.invocation = invocation;
      const id = `local-checker-${n}`;
      const ended = await this.invoke(
        this.newChecker(id),
        this.o.checkerInvocationMs ?? CHECKER_INVOCATION_MS,
        invocation.signal,
      );
      stop.removeEventListener("abort", end);
      if (ended !== "returned") this.log(`checker invocation ${id} ${ended}`);
      await systemClock.sleep(this.o.checkerGapMs ?? CHECKER_GAP_MS, stop);
    }
  }

  /**
   * One checker invocation, bounded as Lambda bounds it: `runFor` for
   * `runForMs`; when it has not returned by the Lambda's timeout (a call that
   * never answers), or soon after `signal` aborts, it is abandoned as the
   * timeout would end it: its lease loop stops without a release, so the next
   * invocation waits the lease out, and anything it still does later is fenced
   * by that lost lease.
   */
  async invoke(
    checker: HealthChecker,
    runForMs: number,
    signal: AbortSignal,
  ): Promise<"returned" | `failed: ${string}` | "timed out: abandoned"> {
    const intervalMs = this.o.checkerIntervalMs ?? (this.dns ? 2000 : 1000);
    const run = checker.runFor(runForMs, intervalMs, signal).then(
      () => "returned" as const,
      (err: unknown) => `failed: ${String(err)}` as const,
    );
    const abandoned = "timed out: abandoned" as const;
    const timers: NodeJS.Timeout[] = [];
    let grace = () => {};
    const bound = new Promise<typeof abandoned>((resolve) => {
      timers.push(setTimeout(() => resolve(abandoned), runForMs + CHECKER_TIMEOUT_MARGIN_MS));
      grace = () => timers.push(setTimeout(() => resolve(abandoned), CHECKER_STOP_GRACE_MS));
    });
    if (signal.aborted) grace();
    else signal.addEventListener("abort", grace, { once: true });
    const ended = await Promise.race([run, bound]);
    signal.removeEventListener("abort", grace);
    for (const t of timers) clearTimeout(t);
    if (ended === abandoned) await checker.lease.stop({ release: false });
    return ended;
  }

  /** Ends the running checker invocation now (it releases its lease); the next starts after the gap. */
  restartChecker(): void {
    this.invocation?.abort();
  }

  /** A health checker for this fleet as the control plane runs it (the tests start a second one). */
  newChecker(checkerId: string): HealthChecker {
    const zone = this.zone;
    return new HealthChecker({
      store: this.checkerStore ?? this.store,
      fleetId: this.fleetId,
      checkerId,
      elasticIps: this.checkerIps ?? this.elasticIps,
      ...this.o.checkerSettings,
      ...(zone
        ? {
            dns: {
              records: this.checkerRecords ?? new WeightedRecords({ route53: this.route53 }),
              zoneId: zone.zoneId,
              name: this.dnsName,
              sharedAddress: async () => this.elasticIp.publicIp,
            },
          }
        : {}),
    });
  }

  /** The zone (unless given), a health check per address and the weighted set, weighted for the mode. */
  private async createRecords(): Promise<void> {
    this.zone = this.o.zone ?? (await createZone(this.route53, "hafleet.test"));
    this.dnsName = `${this.fleetId}.${this.zone.zoneName}`;
    const aa = this.mode === "active-active";
    const endpoints = [
      { nodeId: SHARED_ENDPOINT, address: this.elasticIp.publicIp, weight: aa ? 0 : 100 },
      ...this.nodes.map((n) => ({ nodeId: n.nodeId, address: n.own!.publicIp, weight: aa ? 100 : 0 })),
    ];
    const records = [];
    for (const e of endpoints) {
      const healthCheckId = await createTcpHealthCheck(this.route53, e.address, {
        port: this.port,
        callerReference: `${this.fleetId}-${e.nodeId}-${Date.now().toString(36)}`,
      });
      records.push({ ...e, healthCheckId });
    }
    const weighted = new WeightedRecords({ route53: this.route53 });
    const set = { zoneId: this.zone.zoneId, name: this.dnsName, ttlS: this.ttlS };
    await weighted.apply(set, records, await weighted.read(set));
    this.log(`weighted set ${this.dnsName} in zone ${this.zone.zoneId}: ${endpoints.length} records`);
  }

  /**
   * Starts (or restarts) a node's process and, once the fleet is up, records
   * its pid in the state file for the other commands.
   */
  async startNode(node: LocalNode): Promise<void> {
    this.spawnNode(node);
    if (this.stateWritten) await this.writeState();
  }

  private spawnNode(node: LocalNode): void {
    const args = [
      this.script,
      "--fleet",
      this.fleetId,
      "--node-id",
      node.nodeId,
      "--bind-address",
      node.address,
      "--admin-host",
      node.address,
      "--admin-port",
      String(node.adminPort),
      "--admin-token-file",
      adminTokenFile(this.fleetId),
      "--agent",
      "--instance-id",
      node.instanceId,
      "--allocation-id",
      this.elasticIp.allocationId,
      ...(node.own ? ["--own-allocation-id", node.own.allocationId] : []),
      "--state-file",
      this.nodeStateFile(node),
      "--poll-ms",
      "1000",
      "--no-access-log",
    ];
    const child = spawn(process.execPath, args, {
      env: {
        ...process.env,
        ...emulatorEnv(this.nodeEndpoint(node.nodeId)),
        HAFLEET_STATE_TABLE: this.tables.state,
        HAFLEET_SESSIONS_TABLE: this.tables.sessions,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    node.child = child;
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => this.o.onNodeLog?.(node.nodeId, line));
    }
  }

  private nodeEndpoint(nodeId: string): string {
    const e = this.o.nodeEndpoint;
    return (typeof e === "function" ? e(nodeId) : e) ?? this.endpoint;
  }

  /** The node's last good config (its `--state-file`). */
  private nodeStateFile(node: LocalNode): string {
    return join(WORK_DIR, "local", `${this.fleetId}-${node.nodeId}.config.json`);
  }

  /** Whether the node's process runs (it may be paused). */
  running(nodeId: string): boolean {
    const c = this.node(nodeId).child;
    return !!c && c.exitCode === null && c.signalCode === null;
  }

  /**
   * Starts a node whose process has exited (killed, crashed, drained) and
   * records its new pid for the other commands; resolves once its `/readyz`
   * answers 200, or throws after `readyMs`.
   */
  async startAgain(nodeId: string, readyMs = 30_000): Promise<LocalNode> {
    const node = this.node(nodeId);
    if (this.running(nodeId)) {
      throw new Error(`${nodeId} is running (pid ${node.child?.pid}): use restart`);
    }
    await this.startNode(node);
    await this.waitFor(() => this.ready(node), readyMs, `${nodeId} did not become ready`);
    return node;
  }

  /**
   * Stops a node as systemd would (SIGTERM: it hands over and drains; SIGKILL
   * after `stopMs`) and starts it again.
   */
  async restart(nodeId: string, stopMs = 60_000): Promise<LocalNode> {
    const c = this.node(nodeId).child;
    if (c && this.running(nodeId)) {
      const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
      const hard = setTimeout(() => c.kill("SIGKILL"), stopMs);
      c.kill("SIGCONT");
      c.kill("SIGTERM");
      await exited;
      clearTimeout(hard);
    }
    return this.startAgain(nodeId);
  }

  /**
   * Serves `POST /nodes/<id>/start` and `POST /nodes/<id>/restart` on a
   * loopback port for the `hafleet local` commands of other processes, each
   * with `authorization: Bearer <the fleet's admin token>`; answers when the
   * node is ready, with `{ message }` (200), or the reason (4xx, 5xx).
   */
  async serveControl(): Promise<string> {
    const token = (await readFile(adminTokenFile(this.fleetId), "utf8")).trim();
    const server = createServer((req, res) => {
      const answer = (status: number, message: string) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify({ message }));
      };
      const m = /^\/nodes\/([^/]+)\/(start|restart)$/.exec(req.url ?? "");
      if (req.method !== "POST" || !m) return answer(404, "not found");
      if (req.headers.authorization !== `Bearer ${token}`)
        return answer(401, "a valid admin token is required");
      const [, nodeId, verb] = m as unknown as [string, string, "start" | "restart"];
      if (!this.nodes.some((n) => n.nodeId === nodeId)) {
        return answer(
          404,
          `no node '${nodeId}' in local fleet '${this.fleetId}' (nodes: ${this.nodes.map((n) => n.nodeId).join(", ")})`,
        );
      }
      const started = Date.now();
      (verb === "start" ? this.startAgain(nodeId) : this.restart(nodeId)).then(
        (n) =>
          answer(
            200,
            `${verb === "start" ? "started" : "restarted"} ${nodeId} (pid ${n.child?.pid}), ready after ${((Date.now() - started) / 1000).toFixed(1)} s`,
          ),
        (err: unknown) =>
          answer(
            /is running/.test(String(err)) ? 409 : 504,
            err instanceof Error ? err.message : String(err),
          ),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.control = server;
    this.controlUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await this.writeState();
    return this.controlUrl;
  }

  private control: Server | undefined;
  private controlUrl: string | undefined;

  private async ready(node: LocalNode): Promise<boolean> {
    try {
      const res = await fetch(`http://${node.address}:${node.adminPort}/readyz`, {
        signal: AbortSignal.timeout(500),
      });
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  }

  node(nodeId: string): LocalNode {
    const n = this.nodes.find((x) => x.nodeId === nodeId);
    if (!n)
      throw new Error(
        `no node '${nodeId}' in fleet '${this.fleetId}' (nodes: ${this.nodes.map((x) => x.nodeId).join(", ")})`,
      );
    return n;
  }

  signal(nodeId: string, signal: NodeJS.Signals): void {
    this.node(nodeId).child?.kill(signal);
  }

  /** The node whose instance holds the Elastic IP, as the network sees it (the emulator itself). */
  async activeNode(): Promise<LocalNode | undefined> {
    const a = await (this.truthIps ?? this.elasticIps).describe(this.elasticIp.allocationId);
    return this.nodes.find((n) => n.instanceId === a.instanceId);
  }

  async allReady(): Promise<boolean> {
    const states = await Promise.all(this.nodes.map((n) => this.ready(n)));
    return states.every(Boolean);
  }

  async waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${what} within ${timeoutMs} ms`);
  }

  private async writeState(): Promise<void> {
    this.stateWritten = true;
    const state: LocalFleetState = {
      fleetId: this.fleetId,
      endpoint: this.endpoint,
      tables: this.tables,
      elasticIp: this.elasticIp,
      port: this.port,
      ...(this.zone
        ? {
            dns: {
              zoneId: this.zone.zoneId,
              name: this.dnsName,
              ...(this.dnsServer ? { port: this.dnsServer.port } : {}),
            },
          }
        : {}),
      nodes: this.nodes.map((n) => ({
        nodeId: n.nodeId,
        pid: n.child?.pid,
        instanceId: n.instanceId,
        address: n.address,
        adminPort: n.adminPort,
        ...(n.own ? { publicIp: n.own.publicIp } : {}),
      })),
      ownerPid: process.pid,
      ...(this.controlUrl ? { controlUrl: this.controlUrl } : {}),
    };
    await mkdir(join(WORK_DIR, "local"), { recursive: true });
    await writeFile(stateFile(this.fleetId), `${JSON.stringify(state, null, 2)}\n`);
  }

  /** Stops everything it started and leaves nothing running. */
  async down(): Promise<void> {
    this.control?.close();
    this.checkerStop.abort();
    await this.checkerRun?.catch(() => {});
    await this.dnsServer?.stop();
    await this.resolver?.stop();
    await this.fabric?.stop();
    await Promise.all(
      this.nodes.map(
        (n) =>
          new Promise<void>((resolve) => {
            const c = n.child;
            if (!c || c.exitCode !== null || c.signalCode !== null) return resolve();
            const hard = setTimeout(() => c.kill("SIGKILL"), 10_000);
            c.once("exit", () => {
              clearTimeout(hard);
              resolve();
            });
            c.kill("SIGCONT");
            c.kill("SIGTERM");
          }),
      ),
    );
    for (const b of this.backends) {
      b.closeAllConnections();
      await new Promise<void>((r) => b.close(() => r()));
    }
    this.store?.destroy();
    this.ec2?.destroy();
    this.route53?.destroy();
    this.checkerStore?.destroy();
    this.checkerIps?.destroy();
    this.truthIps?.destroy();
    this.truthRoute53?.destroy();
    this.checkerRecords?.destroy();
    await rm(stateFile(this.fleetId), { force: true });
    for (const n of this.nodes) await rm(this.nodeStateFile(n), { force: true });
    await this.realisticProxy?.close();
    await this.emulator?.stop();
  }
}
