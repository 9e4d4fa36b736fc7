/**
 * The proxy of one process: listeners and pools built from a `FleetConfig`,
 * hot reload (`apply`), drain and close.
 *
 * Reload keeps connections: a listener whose protocol, address and port are
 * unchanged keeps its socket and its client connections, and takes the new
 * settings for the next request; pools keep the state (health, ejections,
 * idle keep-alive connections) of backends whose id, host and port are
 * unchanged. A listener that moves opens its new address before the old one
 * drains; when a new address cannot be bound, nothing of the new config is
 * applied and the error says which listener.
 */

import pino, { type Logger } from "pino";
import type { FleetConfig, ListenerConfig } from "../lib/core/config";
import type { BackendHealth } from "./admin";
import type { ListenerState } from "./data-plane";
import { HealthChecker } from "./health";
import { HttpListener } from "./http-listener";
import { ConnectionGate, type Listener, type ListenerSettings } from "./listener";
import { Pool } from "./pool";
import { ListenerStats } from "./stats";
import { type SessionLookup, StickyRouter } from "./sticky";
import { TcpListener } from "./tcp-listener";

export interface ProxyServerOptions {
  readonly config: FleetConfig;
  /** Version of `config` in the store, reported by /readyz and /metrics. @default 0 */
  readonly version?: number;
  /** @default a silent logger */
  readonly logger?: Logger;
  /** One log line per request (HTTP) or connection (TCP) at `info` (a JSON write per request: off for the last bit of speed). @default false */
  readonly accessLog?: boolean;
  /**
   * The session table of a sticky listener; called once per listener and
   * stickiness setting. Without it, sticky listeners route by consistent
   * hashing of the session key (still sticky, not shared across a backend-set change).
   */
  readonly sessions?: (listener: ListenerConfig) => SessionLookup | undefined;
  /** Longest wait for the session table before falling back to hashing. @default 250 */
  readonly sessionWaitMs?: number;
  /** Run active health checks. @default true */
  readonly healthChecks?: boolean;
  /** Ports to bind instead of the configured ones, by listener name (tests bind 0). */
  readonly portOverrides?: Readonly<Record<string, number>>;
  /** This process's share of `limits.maxConnections` (a cluster worker's is 1/workers). @default 1 */
  readonly connectionShare?: number;
  /** Client sockets read into reusable buffers (faster; see `listener.ts`). @default true */
  readonly readBuffers?: boolean;
}

type AnyListener = Listener<never> & (HttpListener | TcpListener);

interface PoolEntry {
  pool: Pool;
  checker: HealthChecker | undefined;
}

export class ProxyServer {
  config: FleetConfig;
  version: number;
  readonly logger: Logger;
  readonly gate: ConnectionGate;
  readonly pools = new Map<string, PoolEntry>();
  readonly listeners = new Map<string, AnyListener>();
  /** Stats outlive listeners (reload, drain), so counters never go backwards. */
  readonly stats = new Map<string, ListenerStats>();
  readonly stickyRouters = new Map<string, StickyRouter>();
  draining = false;
  private readonly options: ProxyServerOptions;
  private readonly retiring = new Set<Promise<void>>();

  private constructor(options: ProxyServerOptions) {
    this.options = options;
    this.config = options.config;
    this.version = options.version ?? 0;
    this.logger = options.logger ?? pino({ level: "silent" });
    this.gate = new ConnectionGate(this.connectionLimit(options.config));
  }

  /** Builds the pools, binds every listener, starts health checks. */
  static async start(options: ProxyServerOptions): Promise<ProxyServer> {
    const server = new ProxyServer(options);
    try {
      await server.applyConfig(options.config, server.version, true);
    } catch (err) {
      await server.close();
      throw err;
    }
    return server;
  }

  /** Applies a new config without dropping connections; throws (changing nothing) if a new address cannot be bound. */
  async apply(config: FleetConfig, version = this.version + 1): Promise<void> {
    if (this.draining) throw new Error("the proxy is draining: no new config is applied");
    await this.applyConfig(config, version, false);
  }

  private connectionLimit(config: FleetConfig): number {
    return Math.max(1, Math.ceil(config.limits.maxConnections * (this.options.connectionShare ?? 1)));
  }

  private async applyConfig(config: FleetConfig, version: number, initial: boolean): Promise<void> {
    // 1. Bind what is new first: a failure here leaves the running config untouched.
    const created = new Map<string, AnyListener>();
    const replaced: AnyListener[] = [];
    const poolsNext = new Map<string, PoolEntry>();
    const poolFor = (name: string): Pool => {
      const existing = this.pools.get(name);
      if (existing) return existing.pool;
      let entry = poolsNext.get(name);
      if (!entry) {
        entry = { pool: new Pool(name, config.pools[name]!, { logger: this.logger }), checker: undefined };
        poolsNext.set(name, entry);
      }
      return entry.pool;
    };
    try {
      for (const lc of config.listeners) {
        const old = this.listeners.get(lc.name);
        if (old && sameAddress(old.settings.listener, lc)) continue;
        if (old && sameBind(old.settings.listener, lc)) {
          // Same address, other protocol: the old one must let go of the port first.
          await old.drain(0);
          this.listeners.delete(lc.name);
        } else if (old) replaced.push(old);
        const settings = this.settingsFor(lc, config, poolFor(lc.pool));
        const listener = this.createListener(lc, settings);
        await listener.listen();
        created.set(lc.name, listener);
      }
    } catch (err) {
      for (const l of created.values()) await l.close();
      for (const e of poolsNext.values()) e.pool.close();
      throw err;
    }

    // 2. Swap: pools updated in place, listeners take their new settings.
    this.config = config;
    this.version = version;
    this.gate.max = this.connectionLimit(config);
    for (const [name, pc] of Object.entries(config.pools)) {
      const existing = this.pools.get(name);
      if (existing) {
        existing.pool.update(pc);
        existing.checker?.stop();
        existing.checker = undefined;
        this.pools.set(name, existing);
      } else {
        this.pools.set(
          name,
          poolsNext.get(name) ?? { pool: new Pool(name, pc, { logger: this.logger }), checker: undefined },
        );
      }
    }
    for (const lc of config.listeners) {
      const l = created.get(lc.name);
      if (l) this.listeners.set(lc.name, l);
      else this.listeners.get(lc.name)!.update(this.settingsFor(lc, config, this.pools.get(lc.pool)!.pool));
    }
    // 3. Retire what left: listeners drain in the background, pools without listeners close.
    const names = new Set(config.listeners.map((l) => l.name));
    for (const [name, l] of this.listeners) {
      if (!names.has(name)) {
        this.listeners.delete(name);
        replaced.push(l);
      }
    }
    for (const l of replaced) this.retire(l, config.timeouts.drainMs);
    for (const [name, entry] of this.pools) {
      if (!(name in config.pools)) {
        entry.checker?.stop();
        entry.pool.close();
        this.pools.delete(name);
      }
    }
    if (this.options.healthChecks ?? true) {
      for (const entry of this.pools.values()) {
        entry.checker ??= new HealthChecker(entry.pool);
        entry.checker.start();
      }
    }
    this.logger.info(
      {
        version,
        listeners: config.listeners.map((l) => `${l.name}:${l.protocol}:${this.addressOf(l.name)}`),
      },
      initial ? "proxy started" : "config applied",
    );
  }

  private settingsFor(lc: ListenerConfig, config: FleetConfig, pool: Pool): ListenerSettings {
    return {
      listener: lc,
      pool,
      timeouts: config.timeouts,
      limits: config.limits,
      retries: config.retries,
      sticky: lc.stickiness ? this.stickyFor(lc) : undefined,
    };
  }

  private stickyFor(lc: ListenerConfig): StickyRouter | undefined {
    const ttlS = lc.stickiness!.ttlS;
    const key = `${lc.name}:${ttlS}`;
    let router = this.stickyRouters.get(key);
    if (router) return router;
    const lookup = this.options.sessions?.(lc) ?? noSessionTable;
    router = new StickyRouter({
      lookup,
      ttlS,
      waitMs: this.options.sessionWaitMs ?? 250,
      logger: this.logger,
    });
    this.stickyRouters.set(key, router);
    return router;
  }

  private createListener(lc: ListenerConfig, settings: ListenerSettings): AnyListener {
    let stats = this.stats.get(lc.name);
    if (!stats || stats.protocol !== lc.protocol || stats.pool !== lc.pool) {
      stats = new ListenerStats(lc.name, lc.protocol, lc.pool);
      this.stats.set(lc.name, stats);
    }
    const options = {
      settings,
      stats,
      gate: this.gate,
      logger: this.logger,
      accessLog: this.options.accessLog ?? false,
      port: this.options.portOverrides?.[lc.name],
      readBuffers: this.options.readBuffers,
    };
    return (lc.protocol === "http" ? new HttpListener(options) : new TcpListener(options)) as AnyListener;
  }

  private retire(l: AnyListener, drainMs: number): void {
    const p = l.drain(drainMs).finally(() => this.retiring.delete(p));
    this.retiring.add(p);
  }

  /** `address:port` a listener is bound to (the real port when 0 was asked). */
  addressOf(name: string): string {
    const l = this.listeners.get(name);
    if (!l) return "-";
    const a = l.address();
    return `${a.address}:${a.port}`;
  }

  /** Each listener's bound address; undefined for one that no longer listens (its server closed). */
  listenerStates(): ListenerState[] {
    return [...this.listeners.values()].map((l) => {
      try {
        return { name: l.name, address: l.address() };
      } catch {
        return { name: l.name, address: undefined };
      }
    });
  }

  /** The port a listener is bound to. */
  port(name: string): number {
    const l = this.listeners.get(name);
    if (!l) throw new Error(`no listener '${name}'`);
    return l.address().port;
  }

  /**
   * Drain: stop accepting on every listener, let requests in flight finish
   * (answers carry `connection: close`), close idle keep-alive connections;
   * after `timeouts.drainMs` whatever is left is closed.
   */
  /** Each backend's health, for `/readyz` and `hafleet status`. */
  backendHealth(): BackendHealth[] {
    const out: BackendHealth[] = [];
    for (const [pool, entry] of this.pools) {
      for (const b of entry.pool.backends) {
        if (!b.removed) out.push({ pool, id: b.id, healthy: b.healthy && !b.ejected, ejected: b.ejected });
      }
    }
    return out;
  }

  async drain(): Promise<void> {
    this.draining = true;
    const ms = this.config.timeouts.drainMs;
    await Promise.all([...this.listeners.values()].map((l) => l.drain(ms)));
    await Promise.all(this.retiring);
    this.stopPools();
  }

  /** Closes everything at once. */
  async close(): Promise<void> {
    this.draining = true;
    await Promise.all([...this.listeners.values()].map((l) => l.close()));
    await Promise.all(this.retiring);
    this.stopPools();
  }

  private stopPools(): void {
    for (const e of this.pools.values()) {
      e.checker?.stop();
      e.pool.close();
    }
  }
}

function sameBind(a: ListenerConfig, b: ListenerConfig): boolean {
  return a.bind === b.bind && a.port === b.port;
}

function sameAddress(a: ListenerConfig, b: ListenerConfig): boolean {
  return sameBind(a, b) && a.protocol === b.protocol;
}

/** Without a session table, every lookup "fails" fast and consistent hashing routes. */
const noSessionTable: SessionLookup = {
  get: () => Promise.reject(new Error("no session table")),
  getOrCreate: () => Promise.reject(new Error("no session table")),
  touch: () => Promise.resolve(),
};
