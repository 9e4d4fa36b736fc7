/**
 * The proxy process: `tsx proxy/main.ts --config fleet.yaml` or
 * `tsx proxy/main.ts --fleet prod --state-file /var/lib/hafleet/prod.json`.
 *
 * Exit codes: 0 after a drain (SIGTERM, SIGINT, POST /drain); 2 for bad flags
 * or a bad config (one message naming what is wrong); 1 for anything else
 * (a listener that cannot bind, say).
 *
 * With `--workers N` above 1, a `node:cluster` primary loads the config, runs
 * the admin server and the config watch, and N workers run the listeners.
 * Workers share each listening socket and the kernel spreads connections
 * (SCHED_NONE: the default round-robin hands every connection through the
 * primary, a measurable cost per connection). A worker that dies is replaced.
 *
 * The node agent (lease, heartbeat, Elastic IP) is not here: it plugs in
 * beside the proxy and sets the role the admin server reports
 * (`AdminServer.setRole`).
 *
 * `/healthz` probes the data plane (`data-plane.ts`): this process's
 * listeners, or, in a cluster, the shared listeners and each worker, which
 * the primary pings every `WORKER_PING_MS` and which answers with the state
 * of its own listeners.
 */
import cluster, { type Worker } from "node:cluster";
import { availableParallelism, hostname } from "node:os";
import { Command, CommanderError } from "commander";
import pino, { type Logger } from "pino";
import { AggregatorRegistry } from "prom-client";
import { intFlag } from "../lib/core/cli";
import { type FleetConfig, type ListenerConfig, loadFleetConfigFile, NAME_PATTERN } from "../lib/core/config";
import { ConfigStore } from "../lib/core/config-store";
import { ElasticIps } from "../lib/core/elastic-ip";
import { ConfigInvalidError, HafleetError } from "../lib/core/errors";
import { dnsDrainMs } from "../lib/core/failover";
import { DynamoLeaseStore, Lease } from "../lib/core/lease";
import { SessionTable } from "../lib/core/sessions";
import { StateStore } from "../lib/core/store";
import { VERSION } from "../lib/core/version";
import { AdminServer } from "./admin";
import { readAdminToken } from "./admin-token";
import { DynamoAgentStore, NodeAgent } from "./agent";
import { type ConfigSource, ConfigWatch, type InitialConfig, loadInitialConfig } from "./config-watch";
import { DataPlaneHealth, type DataPlaneReport, type ListenerState, WORKER_PING_MS } from "./data-plane";
import { UsageError } from "./errors";
import { createProxyRegistry } from "./metrics";
import { ProxyServer } from "./server";
import type { SessionLookup } from "./sticky";

export interface MainOptions {
  readonly config?: string;
  readonly fleet?: string;
  readonly stateFile?: string;
  readonly adminPort: number;
  readonly adminHost: string;
  /** File holding the token that `POST /drain` needs (`admin-token.ts`); without it, state changes are refused. */
  readonly adminTokenFile?: string;
  readonly workers: number;
  readonly nodeId: string;
  /** The node's stable name, which a replacement instance keeps (`node-0`); defaults to the node id. */
  readonly nodeName?: string;
  readonly accessLog: boolean;
  readonly logLevel: string;
  readonly pollMs: number;
  readonly sessionWaitMs: number;
  /** Binds every listener to this address instead of the config's `bind` (local mode: one loopback address per node). */
  readonly bindAddress?: string;
  /** Run the node agent (heartbeat, fleet lease, Elastic IP) beside the proxy. */
  readonly agent: boolean;
  readonly instanceId?: string;
  readonly allocationId?: string[];
  readonly ownAllocationId?: string;
  readonly address?: string;
  readonly zone?: string;
}

function workersFlag(value: string): number {
  if (value === "auto") return availableParallelism();
  return intFlag(1, 1024)(value);
}

export function buildCommand(): Command {
  return new Command()
    .name("hafleet-proxy")
    .description("hafleet data plane: HTTP and TCP load balancing from a fleet config")
    .option("--config <file>", "fleet config file (YAML or JSON); re-read every --poll-ms")
    .option(
      "--fleet <id>",
      "fleet id: read the config from the store (unless --config) and share sticky sessions",
    )
    .option(
      "--state-file <path>",
      "where the last good config is kept; used at start when the store is unreachable",
    )
    .option(
      "--admin-port <port>",
      "admin endpoint port (/healthz, /readyz, /metrics, POST /drain)",
      intFlag(0, 65535),
      9900,
    )
    .option("--admin-host <address>", "admin endpoint address", "127.0.0.1")
    .option(
      "--admin-token-file <path>",
      "file (mode 600) with the token POST /drain needs; without it, the admin endpoint changes nothing",
    )
    .option("--workers <n>", "worker processes, or 'auto' for one per core", workersFlag, 1)
    .option("--node-id <id>", "this node's id (sessions, logs)", hostname())
    .option(
      "--node-name <name>",
      "this node's stable name, kept by its replacement: it owns the node's own Elastic IP and weighted record (default: the node id)",
    )
    .option("--no-access-log", "no log line per request (faster)")
    .option("--log-level <level>", "pino level: trace, debug, info, warn, error, fatal, silent", "info")
    .option(
      "--poll-ms <ms>",
      "how often the config source is checked for a new version",
      intFlag(100, 3_600_000),
      5000,
    )
    .option(
      "--session-wait-ms <ms>",
      "longest wait for the session table before hashing decides",
      intFlag(1, 60_000),
      250,
    )
    .option("--bind-address <address>", "bind every listener to this address instead of the config's bind")
    .option("--agent", "run the node agent: heartbeat, fleet lease, Elastic IP (needs --fleet)", false)
    .option("--instance-id <id>", "this node's EC2 instance id (default: from the instance metadata service)")
    .option(
      "--allocation-id <id...>",
      "the fleet's Elastic IP allocation id(s) (default: the addresses tagged hafleet:fleet=<fleet>)",
    )
    .option(
      "--own-allocation-id <id>",
      "this node's own Elastic IP allocation id (active-active: its weighted record points at it)",
    )
    .option(
      "--address <address>",
      "the address other parts reach this node on (default: --bind-address or the host's)",
    )
    .option("--zone <zone>", "availability zone, for reporting")
    .showHelpAfterError(false)
    .exitOverride();
}

/** Parses and checks the flags; throws `UsageError` (exit 2) naming the flag. */
export function parseFlags(argv: readonly string[]): MainOptions {
  const cmd = buildCommand();
  cmd.configureOutput({ writeErr: () => {}, writeOut: (s) => process.stdout.write(s) });
  try {
    cmd.parse(argv as string[], { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version") throw err;
      throw new UsageError(err.message.replace(/^error: /, ""));
    }
    throw err;
  }
  const o = cmd.opts<MainOptions>();
  if (!o.config && !o.fleet) throw new UsageError("give --config <file> or --fleet <id>");
  if (o.fleet !== undefined && !NAME_PATTERN.test(o.fleet)) {
    throw new UsageError(`--fleet '${o.fleet}' must be 1-63 lowercase letters, digits or '-'`);
  }
  if (!["trace", "debug", "info", "warn", "error", "fatal", "silent"].includes(o.logLevel)) {
    throw new UsageError(
      `--log-level '${o.logLevel}' must be one of trace, debug, info, warn, error, fatal, silent`,
    );
  }
  if (cmd.args.length > 0) throw new UsageError(`unexpected argument '${cmd.args[0]}'`);
  if (o.nodeName !== undefined && !NAME_PATTERN.test(o.nodeName))
    throw new UsageError(`--node-name '${o.nodeName}' must be 1-63 lowercase letters, digits or '-'`);
  if (o.agent && !o.fleet)
    throw new UsageError("--agent needs --fleet <id>: the agent works on the fleet's state");
  for (const id of o.allocationId ?? []) {
    if (!/^eipalloc-[0-9a-f]{1,32}$/.test(id))
      throw new UsageError(`--allocation-id '${id}' is not an Elastic IP allocation id (eipalloc-...)`);
  }
  const own = o.ownAllocationId;
  if (own !== undefined && !/^eipalloc-[0-9a-f]{1,32}$/.test(own))
    throw new UsageError(`--own-allocation-id '${own}' is not an Elastic IP allocation id (eipalloc-...)`);
  if (own !== undefined && o.allocationId?.includes(own))
    throw new UsageError(
      `--own-allocation-id '${own}' is also given as --allocation-id: a node's own address is not shared`,
    );
  return o;
}

/** A config file as a versioned source: the version goes up when the file's content changes. */
class FileSource implements ConfigSource {
  private version = 0;
  private last = "";

  constructor(private readonly file: string) {}

  async get() {
    const config = await loadFleetConfigFile(this.file);
    const text = JSON.stringify(config);
    if (text !== this.last) {
      this.last = text;
      this.version++;
    }
    return { version: this.version, config };
  }
}

interface Runtime {
  readonly source: ConfigSource;
  readonly store: StateStore | undefined;
  readonly initial: InitialConfig;
}

/** The config with every listener bound to `address` (the node's own, in local mode). */
function rebind(config: FleetConfig, address: string | undefined): FleetConfig {
  if (!address) return config;
  return { ...config, listeners: config.listeners.map((l) => ({ ...l, bind: address })) };
}

async function loadRuntime(o: MainOptions, logger: Logger): Promise<Runtime> {
  const rt = await loadSources(o, logger);
  if (!o.bindAddress) return rt;
  const inner = rt.source;
  return {
    store: rt.store,
    initial: { ...rt.initial, config: rebind(rt.initial.config, o.bindAddress) },
    source: {
      get: async () => {
        const got = await inner.get();
        return got && { ...got, config: rebind(got.config, o.bindAddress) };
      },
    },
  };
}

async function loadSources(o: MainOptions, logger: Logger): Promise<Runtime> {
  const store = o.fleet ? new StateStore() : undefined;
  let source: ConfigSource;
  let initial: InitialConfig;
  if (o.config) {
    source = new FileSource(o.config);
    const first = await source.get(); // a bad file is an error at start, never a fallback
    initial = { ...first!, from: "store" };
  } else {
    const configStore = new ConfigStore(store!, o.fleet!);
    source = { get: () => configStore.get({ deadlineMs: 5000 }) };
    initial = await loadInitialConfig({ source, stateFile: o.stateFile, logger });
  }
  return { source, store, initial };
}

function sessionsFactory(o: MainOptions, store: StateStore | undefined) {
  if (!store || !o.fleet) return undefined;
  return (l: ListenerConfig): SessionLookup =>
    new SessionTable({
      store,
      fleetId: o.fleet!,
      listener: l.name,
      nodeId: o.nodeId,
      ttlS: l.stickiness!.ttlS,
    });
}

/** The admin token from `--admin-token-file`, or none (and a warning: drains over HTTP are refused). */
async function adminToken(o: MainOptions, logger: Logger): Promise<{ token?: string }> {
  if (o.adminTokenFile === undefined) {
    logger.warn("no --admin-token-file: the admin endpoint refuses state changes (POST /drain)");
    return {};
  }
  return { token: await readAdminToken(o.adminTokenFile) };
}

// ---- single process --------------------------------------------------------

/**
 * The seam for the node agent (lease, heartbeat, Elastic IP), which runs in
 * the same process as the primary (or the only process): it sets the role the
 * admin server reports and may start a drain. Returned by `main`.
 */
export interface ProxyNode {
  readonly admin: AdminServer;
  /** Starts a drain (as SIGTERM does); the process exits when it ends. */
  drain(): void;
  /**
   * Runs `fn` when a drain starts, before the proxy stops accepting (the agent
   * hands its lease over, or waits to leave DNS), for at most `boundMs`.
   */
  beforeDrain(fn: () => Promise<void>, boundMs?: number): void;
  /** A config is in force and the process is not draining. */
  ready(): boolean;
  /** Whether the listeners accept and the workers answer (what `/healthz` reports). */
  health(): Promise<DataPlaneReport>;
  /** Open client connections and requests per second (single process; 0 in a cluster primary). */
  load(): { connections: number; rps: number };
}

/**
 * A before-drain hook's default bound, so a hung store cannot hold a drain up.
 * 6 s: the agent's handover (release, then up to 3 s for the Elastic IP to
 * move) fits with room to spare.
 */
const HOOK_BOUND_MS = 6000;

interface DrainHook {
  readonly fn: () => Promise<void>;
  readonly boundMs: number;
}

async function runHooks(hooks: readonly DrainHook[], logger: Logger): Promise<void> {
  for (const hook of hooks) {
    await Promise.race([hook.fn(), new Promise((r) => setTimeout(r, hook.boundMs).unref())]).catch(
      (err: unknown) => logger.warn({ err: String(err) }, "before-drain hook failed"),
    );
  }
}

async function runSingle(o: MainOptions, logger: Logger): Promise<ProxyNode> {
  const rt = await loadRuntime(o, logger);
  const proxy = await ProxyServer.start({
    config: rt.initial.config,
    version: rt.initial.version,
    logger,
    accessLog: o.accessLog,
    sessions: sessionsFactory(o, rt.store),
    sessionWaitMs: o.sessionWaitMs,
  });
  const registry = createProxyRegistry({ proxy: () => proxy });
  const health = new DataPlaneHealth(() => ({
    draining: draining || proxy.draining,
    listeners: proxy.listenerStates(),
  }));
  const watch = new ConfigWatch({
    source: rt.source,
    version: rt.initial.version,
    intervalMs: o.pollMs,
    stateFile: o.fleet && !o.config ? o.stateFile : undefined,
    logger,
    apply: (config, version) => proxy.apply(config, version),
  });
  let draining = false;
  const hooks: DrainHook[] = [];
  const drain = () => {
    if (draining) return;
    draining = true;
    void (async () => {
      await runHooks(hooks, logger);
      logger.info({ drainMs: proxy.config.timeouts.drainMs }, "draining");
      await watch.stop();
      await proxy.drain();
      await admin.close();
      rt.store?.destroy();
      logger.info("drained, exiting");
      logger.flush?.();
      process.exit(0);
    })();
  };
  const admin = await AdminServer.start({
    host: o.adminHost,
    port: o.adminPort,
    ...(await adminToken(o, logger)),
    status: () => ({
      configLoaded: true,
      configVersion: proxy.version,
      draining: proxy.draining,
      configSource: o.config ? "file" : rt.initial.from,
      backends: proxy.backendHealth(),
    }),
    metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    drain,
    health: () => health.check(),
  });
  watch.start();
  process.on("SIGTERM", drain);
  process.on("SIGINT", drain);
  logger.info({ adminPort: admin.port, version: proxy.version, from: rt.initial.from }, "ready");
  let lastCount = 0;
  let lastAt = performance.now();
  return {
    admin,
    drain,
    beforeDrain: (fn, boundMs = HOOK_BOUND_MS) => hooks.push({ fn, boundMs }),
    ready: () => !draining && !proxy.draining,
    health: () => health.check(),
    load: () => {
      let connections = 0;
      let count = 0;
      for (const st of proxy.stats.values()) {
        connections += st.activeConnections;
        count += st.latencyCount;
      }
      const now = performance.now();
      const rps = now > lastAt ? ((count - lastCount) * 1000) / (now - lastAt) : 0;
      lastCount = count;
      lastAt = now;
      return { connections, rps: Math.round(rps) };
    },
  };
}

// ---- cluster ---------------------------------------------------------------

type ToWorker =
  | { type: "config"; version: number; config: FleetConfig; id: number }
  | { type: "drain" }
  | { type: "ping" };
type FromWorker =
  | { type: "applied"; id: number; error?: string }
  | { type: "hello" }
  | { type: "pong"; listeners: ListenerState[] };

async function runPrimary(o: MainOptions, logger: Logger): Promise<ProxyNode> {
  const rt = await loadRuntime(o, logger);
  let current = { version: rt.initial.version, config: rt.initial.config };
  let draining = false;
  let started = 0;
  let requestId = 0;
  const pending = new Map<number, { left: number; errors: string[]; done: (errors: string[]) => void }>();
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ env: { ...process.env, HAFLEET_PROXY_WORKER: "1" } } as never);

  const send = (w: Worker, msg: ToWorker) => w.isConnected() && w.send(msg);
  /** Each running worker: when it started or last answered a ping, and its listeners then. */
  const answers = new Map<Worker, { atMs: number; listeners: ListenerState[] }>();
  const broadcast = (version: number, config: FleetConfig): Promise<string[]> => {
    const id = ++requestId;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w?.isConnected());
    return new Promise((resolve) => {
      if (workers.length === 0) return resolve([]);
      pending.set(id, { left: workers.length, errors: [], done: resolve });
      for (const w of workers) send(w, { type: "config", version, config, id });
    });
  };
  const fork = () => {
    const w = cluster.fork({ HAFLEET_PROXY_WORKER: "1" });
    answers.set(w, { atMs: performance.now(), listeners: [] });
    w.on("message", (msg: FromWorker) => {
      if (msg.type === "pong") return answers.set(w, { atMs: performance.now(), listeners: msg.listeners });
      // The worker says hello once it listens for messages (a message sent
      // earlier, on 'online', is lost while its code still loads).
      if (msg.type === "hello") return send(w, { type: "config", ...current, id: 0 });
      if (msg.type !== "applied") return;
      if (msg.id === 0) {
        if (msg.error) {
          logger.fatal({ err: msg.error }, "worker could not start");
          process.exit(1);
        }
        started++;
        send(w, { type: "ping" }); // its listeners' state now, not at the next round
        return;
      }
      const p = pending.get(msg.id);
      if (!p) return;
      if (msg.error) p.errors.push(msg.error);
      if (--p.left === 0) {
        pending.delete(msg.id);
        p.done(p.errors);
      }
    });
  };
  cluster.on("exit", (w, code, signal) => {
    answers.delete(w);
    if (draining) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        logger.info("all workers drained, exiting");
        process.exit(0);
      }
      return;
    }
    logger.error({ pid: w.process.pid, code, signal }, "worker died: starting another");
    fork();
  });
  for (let i = 0; i < o.workers; i++) fork();
  setInterval(() => {
    for (const w of answers.keys()) send(w, { type: "ping" });
  }, WORKER_PING_MS).unref();
  const health = new DataPlaneHealth(() => {
    const now = performance.now();
    const running = [...answers].map(([w, a]) => ({
      pid: w.process.pid ?? 0,
      answeredMsAgo: now - a.atMs,
      listeners: a.listeners,
    }));
    // The workers share each listening socket, bound where the config says: one connect per
    // listener reaches whichever worker accepts.
    const listeners = current.config.listeners.map((l) => ({
      name: l.name,
      address: { address: l.bind, port: l.port },
    }));
    return { draining, listeners, workers: { expected: o.workers, running } };
  });

  const aggregator = new AggregatorRegistry();
  const watch = new ConfigWatch({
    source: rt.source,
    version: current.version,
    intervalMs: o.pollMs,
    stateFile: o.fleet && !o.config ? o.stateFile : undefined,
    logger,
    apply: async (config, version) => {
      const errors = await broadcast(version, config);
      if (errors.length > 0) throw new Error(errors.join("; "));
      current = { version, config };
    },
  });
  const hooks: DrainHook[] = [];
  const drain = () => {
    if (draining) return;
    draining = true;
    void (async () => {
      await runHooks(hooks, logger);
      logger.info("draining workers");
      void watch.stop();
      for (const w of Object.values(cluster.workers ?? {})) if (w) send(w, { type: "drain" });
    })();
    // Backstop: a worker that does not exit within the drain deadline is killed.
    setTimeout(() => {
      for (const w of Object.values(cluster.workers ?? {})) w?.kill("SIGKILL");
    }, current.config.timeouts.drainMs + 5000).unref();
  };
  const admin = await AdminServer.start({
    host: o.adminHost,
    port: o.adminPort,
    ...(await adminToken(o, logger)),
    status: () => ({
      configLoaded: started >= o.workers,
      configVersion: current.version,
      draining,
      configSource: o.config ? "file" : rt.initial.from,
    }),
    metrics: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
    drain,
    health: () => health.check(),
  });
  watch.start();
  process.on("SIGTERM", drain);
  process.on("SIGINT", drain);
  logger.info({ adminPort: admin.port, workers: o.workers, version: current.version }, "primary ready");
  return {
    admin,
    drain,
    beforeDrain: (fn, boundMs = HOOK_BOUND_MS) => hooks.push({ fn, boundMs }),
    ready: () => !draining && started >= o.workers,
    health: () => health.check(),
    load: () => ({ connections: 0, rps: 0 }),
  };
}

async function runWorker(o: MainOptions, logger: Logger): Promise<void> {
  const store = o.fleet ? new StateStore() : undefined;
  let proxy: ProxyServer | undefined;
  const registry = createProxyRegistry({ proxy: () => proxy });
  new AggregatorRegistry(); // installs the worker's answer to the primary's metrics requests
  AggregatorRegistry.setRegistries([registry]);
  const reply = (msg: FromWorker) => process.send?.(msg);
  process.on("message", (msg: ToWorker) => {
    if (msg.type === "config") {
      const work = proxy
        ? proxy.apply(msg.config, msg.version)
        : ProxyServer.start({
            config: msg.config,
            version: msg.version,
            logger,
            accessLog: o.accessLog,
            sessions: sessionsFactory(o, store),
            sessionWaitMs: o.sessionWaitMs,
            connectionShare: 1 / o.workers,
          }).then((p) => {
            proxy = p;
          });
      work.then(
        () => reply({ type: "applied", id: msg.id }),
        (err: unknown) =>
          reply({ type: "applied", id: msg.id, error: err instanceof Error ? err.message : String(err) }),
      );
    } else if (msg.type === "ping") {
      reply({ type: "pong", listeners: proxy?.listenerStates() ?? [] });
    } else if (msg.type === "drain") {
      void (proxy?.drain() ?? Promise.resolve()).then(() => {
        store?.destroy();
        process.exit(0);
      });
    }
  });
  // Signals go to the primary, which tells workers to drain; ignore them here.
  process.on("SIGTERM", () => {});
  process.on("SIGINT", () => {});
  reply({ type: "hello" });
}

// ---- entry -----------------------------------------------------------------

/** Runs the proxy process; resolves with the agent's seam (undefined in a cluster worker). */
export async function main(argv: readonly string[]): Promise<ProxyNode | undefined> {
  let o: MainOptions;
  try {
    o = parseFlags(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(0); // --help
    fail(err);
  }
  const logger = pino({
    level: o.logLevel,
    base: { ...(o.fleet ? { fleet: o.fleet } : {}), node: o.nodeId, pid: process.pid },
  });
  try {
    if (o.workers > 1 && process.env.HAFLEET_PROXY_WORKER === "1") {
      await runWorker(o, logger);
      return undefined;
    }
    const node = o.workers > 1 ? await runPrimary(o, logger) : await runSingle(o, logger);
    if (o.agent) await startAgent(o, node, logger);
    return node;
  } catch (err) {
    fail(err);
  }
}

/**
 * The node agent beside the proxy: heartbeats, its own Elastic IP, and the
 * fleet lease with the shared Elastic IP. It hands the lease over before a drain.
 */
async function startAgent(o: MainOptions, node: ProxyNode, logger: Logger): Promise<NodeAgent> {
  const store = new StateStore();
  const elasticIps = new ElasticIps();
  const instanceId = o.instanceId ?? (await instanceIdFromMetadata());
  // The shared address(es): as given; else, for a node without an own address, the fleet-tagged ones.
  const allocationIds =
    o.allocationId ??
    (o.ownAllocationId ? [] : (await elasticIps.listByFleet(o.fleet!)).map((a) => a.allocationId));
  const stored = await new ConfigStore(store, o.fleet!).get({ deadlineMs: 5000 }).catch(() => undefined);
  const failover = stored?.config.failover;
  const drainDnsMs = dnsDrainMs(stored?.config.dns.ttlS ?? 10);
  const address = o.address ?? o.bindAddress ?? "127.0.0.1";
  const agent = new NodeAgent({
    store: new DynamoAgentStore(store, o.fleet!, o.nodeId, failover?.heartbeatMs),
    lease: new Lease(new DynamoLeaseStore(store, o.fleet!), {
      name: "fleet",
      holderId: o.nodeId,
      leaseMs: failover?.leaseMs,
    }),
    nodeId: o.nodeId,
    ...(o.nodeName ? { name: o.nodeName } : {}),
    instanceId,
    address,
    adminUrl: `http://${o.adminHost === "0.0.0.0" ? address : o.adminHost}:${node.admin.port}`,
    ...(o.zone ? { zone: o.zone } : {}),
    version: VERSION,
    elasticIps,
    allocationIds,
    ...(o.ownAllocationId ? { ownAllocationId: o.ownAllocationId } : {}),
    heartbeatMs: failover?.heartbeatMs,
    dnsDrainMs: drainDnsMs,
    proxy: {
      ready: () => node.ready(),
      load: () => node.load(),
      drain: async () => node.drain(),
      dataPlaneHealthy: async () => (await node.health()).healthy,
    },
    onRole: (role) => node.admin.setRole(role),
    log: (level, message, fields) => logger[level](fields ?? {}, message),
  });
  // The handover's bound, and with an own address the wait to leave DNS.
  node.beforeDrain(() => agent.stop(), HOOK_BOUND_MS + (o.ownAllocationId ? drainDnsMs : 0));
  await agent.start();
  logger.info(
    { instanceId, allocationIds, ownAllocationId: o.ownAllocationId, mode: failover?.mode },
    "node agent started",
  );
  return agent;
}

/** The instance id from IMDSv2 (EC2 only); a clear error elsewhere. */
async function instanceIdFromMetadata(): Promise<string> {
  const base = "http://169.254.169.254/latest";
  try {
    const token = await fetch(`${base}/api/token`, {
      method: "PUT",
      headers: { "x-aws-ec2-metadata-token-ttl-seconds": "60" },
      signal: AbortSignal.timeout(1000),
    }).then((r) => r.text());
    const res = await fetch(`${base}/meta-data/instance-id`, {
      headers: { "x-aws-ec2-metadata-token": token },
      signal: AbortSignal.timeout(1000),
    });
    if (res.ok) return (await res.text()).trim();
  } catch {
    // not on EC2
  }
  throw new UsageError("--instance-id is needed: the instance metadata service did not answer (not on EC2?)");
}

function fail(err: unknown): never {
  const usage = err instanceof UsageError || err instanceof ConfigInvalidError || isMissingFile(err);
  const missing = err instanceof HafleetError && err.code === "HAFLEET_CONFIG_MISSING";
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`hafleet-proxy: ${message}\n`);
  process.exit(usage || missing ? 2 : 1);
}

function isMissingFile(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === "ENOENT" || e?.code === "EISDIR" || e?.code === "EACCES") {
    e.message = `cannot read config file: ${e.message}`;
    return true;
  }
  return false;
}

if (require.main === module) void main(process.argv.slice(2));
