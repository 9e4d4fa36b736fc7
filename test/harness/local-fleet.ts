/**
 * The local fleet: the whole system on one machine (DESIGN.md, "Local mode").
 *
 * 1. An AWS emulator: the embedded moto server, or the one `AWS_ENDPOINT_URL`
 *    names (LocalStack, say).
 * 2. The tables, the fleet config, an EC2 instance per node and the fleet's
 *    Elastic IP, all in the emulator through the real AWS SDK.
 * 3. Demo backends: HTTP servers on loopback that answer with their own id.
 * 4. The nodes as child processes (proxy + agent), each bound to its own
 *    loopback address, as instances have their own private addresses.
 * 5. The health checker's handler logic in-process on a timer (Lambda code
 *    does not run inside the emulator).
 * 6. The network fabric: a listener on the Elastic IP that forwards to the
 *    node the emulator says owns it.
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
import { awsClientConfig } from "../../lib/core/aws";
import { HealthChecker } from "../../lib/core/checker";
import type { FleetConfigInput } from "../../lib/core/config";
import { ConfigStore } from "../../lib/core/config-store";
import { ElasticIps } from "../../lib/core/elastic-ip";
import { StateStore } from "../../lib/core/store";
import { ensureTables, type TableNames } from "../../lib/core/tables";
import { bundle } from "./bundle";
import { allocateElasticIp, runInstances } from "./ec2";
import { type Emulator, emulatorEnv, freePort, startEmulator, WORK_DIR } from "./emulator";
import { ElasticIpFabric } from "./fabric";

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
   * emulator, to cut them off. @default the emulator's
   */
  readonly nodeEndpoint?: string;
  /** The endpoint the in-process health checker uses. @default the emulator's */
  readonly checkerEndpoint?: string;
  /** Run the health checker in-process. @default true */
  readonly checker?: boolean;
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
  child: ChildProcess | undefined;
}

/** What other hafleet commands need to find a running local fleet. */
export interface LocalFleetState {
  readonly fleetId: string;
  readonly endpoint: string;
  readonly tables: TableNames;
  readonly elasticIp: { readonly allocationId: string; readonly publicIp: string };
  readonly port: number;
  readonly nodes: {
    readonly nodeId: string;
    readonly pid: number | undefined;
    readonly instanceId: string;
    readonly address: string;
    readonly adminPort: number;
  }[];
  readonly ownerPid: number;
}

export function stateFile(fleetId: string): string {
  return join(WORK_DIR, "local", `${fleetId}.json`);
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
  private emulator: Emulator | undefined;
  private ec2!: EC2Client;
  private readonly backends: Server[] = [];
  private fabric: ElasticIpFabric | undefined;
  private checker: HealthChecker | undefined;
  private checkerRun: Promise<unknown> | undefined;
  private checkerStore: StateStore | undefined;
  private checkerIps: ElasticIps | undefined;
  private readonly checkerStop = new AbortController();
  private script = "";
  private readonly o: LocalFleetOptions;
  private readonly log: (line: string) => void;

  constructor(options: LocalFleetOptions = {}) {
    this.o = options;
    this.fleetId = options.fleetId ?? "local";
    this.log = options.log ?? (() => {});
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
        if (req.url === "/healthz") return res.writeHead(200).end("ok");
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
      failover: { mode: "active-passive" },
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

    // 4. Nodes.
    this.script = await bundle("proxy/main.ts");
    for (const [i, nodeId] of nodeIds.entries()) {
      this.nodes.push({
        nodeId,
        instanceId: instances[i]!,
        address: `127.0.10.${i + 1}`,
        adminPort: await freePort(),
        child: undefined,
      });
    }
    for (const node of this.nodes) this.startNode(node);
    await this.waitFor(() => this.allReady(), 60_000, "nodes did not become ready");

    // 6. The fabric, 5. the checker.
    this.fabric = new ElasticIpFabric({
      elasticIps: this.elasticIps,
      store: this.store,
      fleetId: this.fleetId,
      addresses: [this.elasticIp],
      ports: [this.port],
    });
    await this.fabric.start();
    if (this.o.checker ?? true) {
      const endpoint = this.o.checkerEndpoint;
      this.checkerStore = endpoint ? new StateStore({ tables: this.tables, aws: { endpoint } }) : undefined;
      this.checkerIps = endpoint ? new ElasticIps({ aws: { endpoint } }) : undefined;
      this.checker = new HealthChecker({
        store: this.checkerStore ?? this.store,
        fleetId: this.fleetId,
        checkerId: "local-checker",
        elasticIps: this.checkerIps ?? this.elasticIps,
      });
      this.checkerRun = this.checker.runFor(24 * 3600_000, 1000, this.checkerStop.signal);
    }
    await this.waitFor(
      async () => !!this.fabric?.ownerOf(this.elasticIp.allocationId),
      30_000,
      "no node took the Elastic IP",
    );
    await this.writeState();
  }

  /** Starts (or restarts) a node's process. */
  startNode(node: LocalNode): void {
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
      "--agent",
      "--instance-id",
      node.instanceId,
      "--allocation-id",
      this.elasticIp.allocationId,
      "--state-file",
      this.nodeStateFile(node),
      "--poll-ms",
      "1000",
      "--no-access-log",
    ];
    const child = spawn(process.execPath, args, {
      env: {
        ...process.env,
        ...emulatorEnv(this.o.nodeEndpoint ?? this.endpoint),
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

  /** The node's last good config (its `--state-file`). */
  private nodeStateFile(node: LocalNode): string {
    return join(WORK_DIR, "local", `${this.fleetId}-${node.nodeId}.config.json`);
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

  /** The node whose instance holds the Elastic IP, by the emulator. */
  async activeNode(): Promise<LocalNode | undefined> {
    const a = await this.elasticIps.describe(this.elasticIp.allocationId);
    return this.nodes.find((n) => n.instanceId === a.instanceId);
  }

  async allReady(): Promise<boolean> {
    const states = await Promise.all(
      this.nodes.map(async (n) => {
        try {
          const res = await fetch(`http://${n.address}:${n.adminPort}/readyz`, {
            signal: AbortSignal.timeout(500),
          });
          await res.arrayBuffer();
          return res.status === 200;
        } catch {
          return false;
        }
      }),
    );
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
    const state: LocalFleetState = {
      fleetId: this.fleetId,
      endpoint: this.endpoint,
      tables: this.tables,
      elasticIp: this.elasticIp,
      port: this.port,
      nodes: this.nodes.map((n) => ({
        nodeId: n.nodeId,
        pid: n.child?.pid,
        instanceId: n.instanceId,
        address: n.address,
        adminPort: n.adminPort,
      })),
      ownerPid: process.pid,
    };
    await mkdir(join(WORK_DIR, "local"), { recursive: true });
    await writeFile(stateFile(this.fleetId), `${JSON.stringify(state, null, 2)}\n`);
  }

  /** Stops everything it started and leaves nothing running. */
  async down(): Promise<void> {
    this.checkerStop.abort();
    await this.checkerRun?.catch(() => {});
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
    this.checkerStore?.destroy();
    this.checkerIps?.destroy();
    await rm(stateFile(this.fleetId), { force: true });
    for (const n of this.nodes) await rm(this.nodeStateFile(n), { force: true });
    await this.emulator?.stop();
  }
}
