/**
 * Whether this node's data plane works, for `/healthz` (which the health
 * checker probes) and for the node agent (which steps down when it fails):
 * each listener accepts a loopback connection on its bound address, and in a
 * cluster each worker answered the primary's last ping recently, with every
 * listener of its own open. A process that answers its admin port while its
 * listeners are gone would otherwise look alive forever (docs/architecture.md §4).
 *
 * Results are kept for `CACHE_MS` and concurrent checks share one probe, so
 * scrapes and the checker's probes never multiply connections.
 */
import { connect } from "node:net";

/** How long one loopback connect to a listener may take. */
export const PROBE_TIMEOUT_MS = 500;
/** How long a result is reused. */
export const CACHE_MS = 1000;
/** How often a cluster primary pings its workers. */
export const WORKER_PING_MS = 1000;
/** A worker whose last answer is older than this is unhealthy (three pings missed). */
export const WORKER_STALE_MS = 3 * WORKER_PING_MS;

/** A listener as its process sees it. */
export interface ListenerState {
  readonly name: string;
  /** The bound address and port; undefined when it does not listen. */
  readonly address: { readonly address: string; readonly port: number } | undefined;
}

export interface WorkerState {
  readonly pid: number;
  /** Ms since the worker last answered a ping (or, before its first answer, since it started). */
  readonly answeredMsAgo: number;
  readonly listeners: readonly ListenerState[];
}

export interface DataPlaneReport {
  readonly healthy: boolean;
  /** What is wrong, one line each; empty when healthy. */
  readonly problems: readonly string[];
  readonly listeners: readonly { readonly name: string; readonly address: string; readonly ok: boolean }[];
  /** In a cluster. */
  readonly workers?: readonly { readonly pid: number; readonly answeredMsAgo: number }[];
  /** A draining node closes its listeners on purpose: nothing is probed. */
  readonly draining?: boolean;
}

/** What the data plane consists of right now. */
export interface DataPlaneView {
  readonly draining: boolean;
  /** Listeners of this process (single process), or the union of the workers' (cluster). */
  readonly listeners: readonly ListenerState[];
  /** Cluster only: each running worker, and how many there should be. */
  readonly workers?: { readonly expected: number; readonly running: readonly WorkerState[] };
}

/** Probes the data plane described by `view()`; see the file's comment. */
export class DataPlaneHealth {
  private last: { atMs: number; report: DataPlaneReport } | undefined;
  private inFlight: Promise<DataPlaneReport> | undefined;

  constructor(
    private readonly view: () => DataPlaneView,
    private readonly o: { cacheMs?: number; probeTimeoutMs?: number } = {},
  ) {}

  check(): Promise<DataPlaneReport> {
    const now = performance.now();
    if (this.last && now - this.last.atMs < (this.o.cacheMs ?? CACHE_MS))
      return Promise.resolve(this.last.report);
    this.inFlight ??= this.probe().then(
      (report) => {
        this.last = { atMs: performance.now(), report };
        this.inFlight = undefined;
        return report;
      },
      (err: unknown) => {
        this.inFlight = undefined;
        throw err;
      },
    );
    return this.inFlight;
  }

  private async probe(): Promise<DataPlaneReport> {
    const v = this.view();
    if (v.draining) return { healthy: true, problems: [], listeners: [], draining: true };
    const problems: string[] = [];
    const w = v.workers;
    if (w) {
      if (w.running.length < w.expected)
        problems.push(`${w.running.length} of ${w.expected} workers running`);
      for (const worker of w.running) {
        if (worker.answeredMsAgo > WORKER_STALE_MS) {
          problems.push(`worker ${worker.pid} has not answered for ${Math.round(worker.answeredMsAgo)} ms`);
        }
        for (const l of worker.listeners) {
          if (!l.address) problems.push(`listener '${l.name}' of worker ${worker.pid} does not listen`);
        }
      }
    }
    // One connect per distinct address: in a cluster the workers share each socket.
    const targets = new Map<string, { name: string; host: string; port: number }>();
    const listeners: { name: string; address: string; ok: boolean }[] = [];
    for (const l of v.listeners) {
      if (!l.address) {
        problems.push(`listener '${l.name}' does not listen`);
        listeners.push({ name: l.name, address: "-", ok: false });
        continue;
      }
      const host = loopbackFor(l.address.address);
      targets.set(`${l.name} ${host}:${l.address.port}`, { name: l.name, host, port: l.address.port });
    }
    const timeoutMs = this.o.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
    const results = await Promise.all(
      [...targets.values()].map(async (t) => ({ ...t, error: await tryConnect(t.host, t.port, timeoutMs) })),
    );
    for (const r of results) {
      const address = `${r.host}:${r.port}`;
      listeners.push({ name: r.name, address, ok: r.error === undefined });
      if (r.error !== undefined)
        problems.push(`listener '${r.name}' on ${address} accepts no connection: ${r.error}`);
    }
    return {
      healthy: problems.length === 0,
      problems,
      listeners,
      ...(w
        ? { workers: w.running.map((x) => ({ pid: x.pid, answeredMsAgo: Math.round(x.answeredMsAgo) })) }
        : {}),
    };
  }
}

/** A wildcard bind is reached on loopback. */
function loopbackFor(address: string): string {
  if (address === "0.0.0.0") return "127.0.0.1";
  if (address === "::") return "::1";
  return address;
}

/** Undefined when a TCP connection to host:port opened within `timeoutMs`, else why not. */
function tryConnect(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (error: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(error);
    };
    const timer = setTimeout(() => done(`no connection within ${timeoutMs} ms`), timeoutMs);
    socket.once("connect", () => done(undefined));
    socket.once("error", (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}
