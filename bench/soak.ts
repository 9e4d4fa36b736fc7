/**
 * The leak soak: many connections, each ending one of the ways in
 * `close-patterns.ts` (half-close, reset, close while sending, backend first,
 * HTTP/1.0, pipelined after close), mixed, against `proxy/main.ts` as a child
 * process with `limits.maxConnections` at 1,000. A warm-up of as many (up to
 * 10,000) of the same
 * mix comes first; then the proxy's descriptor count, its active-connections
 * gauge and its RSS must come back to where the warm-up left them (within 5%),
 * no client may be turned away (503 or a refused connection), and a normal
 * request is served at the end. Idle clients keep their sockets open for
 * three lingers after their part, so the proxy must free its side first.
 *
 *   npm run bench:soak -- --json [--connections 100000] [--concurrency 250]
 *
 * Last line: {"bench":"soak","connections":..,"seconds":..,"fds_before":..,
 *   "fds_after":..,"rss_kib_before":..,"rss_kib_after":..,"gauge_after":..,
 *   "turned_away":..,"wrong_answers":..,"served_after":..,"ok":..}
 * `npm test` runs 10,000 (`test/unit/proxy/leak-soak.test.ts`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../lib/core/ports";
import {
  type BackendKind,
  CLOSE_CASES,
  type ClosePatternBackend,
  closeBackend,
  playClient,
} from "./close-patterns";
import { emit, round } from "./stats";

const ROOT = resolve(__dirname, "..");

export interface SoakOptions {
  readonly connections: number;
  /** Clients at once (kept below `maxConnections`, which the proxy enforces). */
  readonly concurrency: number;
  readonly lingerMs: number;
  readonly maxConnections: number;
  /** Progress lines go here (stderr in the bench). */
  readonly log?: (line: string) => void;
}

export interface SoakResult {
  readonly connections: number;
  readonly seconds: number;
  readonly fdsBefore: number;
  readonly fdsAfter: number;
  readonly rssKiBBefore: number;
  readonly rssKiBAfter: number;
  readonly gaugeAfter: number;
  /** Clients answered 503 or whose connection was refused: a leaked slot shows here first. */
  readonly turnedAway: number;
  /** Clients that did not get what their case says. */
  readonly wrongAnswers: number;
  /** Turned away or wrong, by case name. */
  readonly failures: Readonly<Record<string, number>>;
  /** A plain GET after the soak was answered 200. */
  readonly servedAfter: boolean;
  /** Everything above within its bound. */
  readonly ok: boolean;
}

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false }, (r) => {
      let body = "";
      r.setEncoding("latin1");
      r.on("data", (d: string) => {
        body += d;
      });
      r.on("end", () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on("error", rej);
    req.end();
  });
}

/** Polls `check` every 20 ms until it holds, at most `ms`. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`soak: timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The proxy's open descriptors and resident memory, from /proc. */
function usage(pid: number): { fds: number; rssKiB: number } {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return { fds, rssKiB: m ? Number(m[1]) : Number.NaN };
}

/** The sum of `hafleet_proxy_active_connections` over listeners, from `/metrics`. */
async function gauge(adminPort: number): Promise<number> {
  const { body } = await httpGet(adminPort, "/metrics");
  let sum = 0;
  for (const line of body.split("\n"))
    if (line.startsWith("hafleet_proxy_active_connections{"))
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), "hafleet-soak-"));
  const backends = new Map<BackendKind, ClosePatternBackend>();
  let child: ChildProcess | undefined;
  try {
    // One listener per backend kind, so every case reaches the backend it names.
    const kinds = [...new Set(CLOSE_CASES.map((c) => c.backend))];
    const listenerOf = new Map<BackendKind, { name: string; port: number }>();
    const listeners: string[] = [];
    const pools: string[] = [];
    for (const [i, kind] of kinds.entries()) {
      const b = await closeBackend(kind);
      backends.set(kind, b);
      const port = await freePort();
      const name = `l${i}`;
      listenerOf.set(kind, { name, port });
      const protocol = CLOSE_CASES.find((c) => c.backend === kind)!.protocol;
      listeners.push(`{ name: ${name}, protocol: ${protocol}, port: ${port}, bind: 127.0.0.1, pool: p${i} }`);
      pools.push(
        `p${i}: { backends: [{ host: 127.0.0.1, port: ${b.port} }], healthCheck: { type: tcp, intervalMs: 60000 } }`,
      );
    }
    const file = join(dir, "fleet.yaml");
    writeFileSync(
      file,
      `listeners: [${listeners.join(", ")}]\npools: { ${pools.join(", ")} }\n` +
        `timeouts: { lingerMs: ${options.lingerMs}, headMs: 60000, idleMs: 60000 }\n` +
        `limits: { maxConnections: ${options.maxConnections} }\n`,
    );
    const adminPort = await freePort();
    const proc = spawn(
      process.execPath,
      [
        "--expose-gc",
        "--require",
        join(__dirname, "gc-on-signal.cjs"),
        "--import",
        "tsx",
        "proxy/main.ts",
        "--config",
        file,
        "--admin-port",
        String(adminPort),
      ],
      { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] },
    );
    child = proc;
    let stderr = "";
    proc.stderr!.on("data", (d) => {
      stderr += d.toString();
    });
    await until(
      async () => {
        if (proc.exitCode !== null) throw new Error(`soak: the proxy exited: ${stderr.trim()}`);
        return (await httpGet(adminPort, "/readyz")).status === 200;
      },
      30_000,
      "the proxy to be ready",
    );

    let turnedAway = 0;
    let wrongAnswers = 0;
    const failures: Record<string, number> = {};
    const round_ = async (count: number) => {
      let next = 0;
      const worker = async () => {
        for (;;) {
          const i = next++;
          if (i >= count) return;
          const c = CLOSE_CASES[i % CLOSE_CASES.length]!;
          const client = await playClient(c, listenerOf.get(c.backend)!.port);
          const got = client.received;
          // Idle clients hold their socket for three lingers: the proxy frees its side first.
          setTimeout(() => client.close(), 3 * options.lingerMs).unref();
          let failed = true;
          if (got.includes(" 503 ") || (c.answer !== "" && got === "")) turnedAway++;
          else if (c.answer !== "" && !got.includes(c.answer)) wrongAnswers++;
          else failed = false;
          if (failed) failures[c.name] = (failures[c.name] ?? 0) + 1;
        }
      };
      await Promise.all(Array.from({ length: options.concurrency }, worker));
    };
    const settled = () =>
      until(async () => (await gauge(adminPort)) === 0, 30_000, "the gauge to return to 0");

    // Measured with no client connection and no pooled one: the backends
    // close theirs, and the count must hold still over five reads.
    const quiet = async () => {
      await settled();
      await new Promise((r) => setTimeout(r, 4 * options.lingerMs));
      for (const b of backends.values()) b.dropConnections();
      let last = -1;
      let same = 0;
      await until(
        async () => {
          const n = usage(proc.pid!).fds;
          same = n === last ? same + 1 : 0;
          last = n;
          return same >= 4;
        },
        30_000,
        "the descriptor count to hold still",
      );
      // Resident memory after a full collection (`gc-on-signal.cjs`), twice
      // so that what the first freed is given back too.
      for (let i = 0; i < 2; i++) {
        proc.kill("SIGUSR2");
        await new Promise((r) => setTimeout(r, 200));
      }
      return usage(proc.pid!);
    };

    await round_(Math.min(10_000, options.connections));
    const before = await quiet();
    log(`warm: ${before.fds} descriptors, ${before.rssKiB} KiB resident`);

    const t0 = performance.now();
    await round_(options.connections);
    const seconds = (performance.now() - t0) / 1000;
    const after = await quiet();
    const gaugeAfter = await gauge(adminPort);
    const served = await httpGet(listenerOf.get("http")!.port, "/").then(
      (r) => r.status === 200,
      () => false,
    );
    log(`after ${options.connections}: ${after.fds} descriptors, ${after.rssKiB} KiB resident`);
    const within = (a: number, b: number) => Math.abs(a - b) <= 0.05 * b;
    return {
      connections: options.connections,
      seconds,
      fdsBefore: before.fds,
      fdsAfter: after.fds,
      rssKiBBefore: before.rssKiB,
      rssKiBAfter: after.rssKiB,
      gaugeAfter,
      turnedAway,
      wrongAnswers,
      failures,
      servedAfter: served,
      ok:
        within(after.fds, before.fds) &&
        after.rssKiB <= before.rssKiB * 1.05 &&
        gaugeAfter === 0 &&
        turnedAway === 0 &&
        wrongAnswers === 0 &&
        served,
    };
  } finally {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    }
    for (const b of backends.values()) await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function wholeFlag(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`--${name} must be a whole number of at least ${min}, got '${text}'`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: "boolean", default: false },
      connections: { type: "string", default: "100000" },
      concurrency: { type: "string", default: "250" },
    },
    strict: true,
  });
  const connections = wholeFlag("connections", values.connections, 1);
  const concurrency = wholeFlag("concurrency", values.concurrency, 1);
  if (concurrency >= 1000)
    throw new Error(`--concurrency must stay below maxConnections (1000), got ${concurrency}`);
  const r = await runSoak({
    connections,
    concurrency,
    lingerMs: 100,
    maxConnections: 1000,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  const line = {
    bench: "soak",
    connections: r.connections,
    seconds: round(r.seconds, 1),
    connections_per_second: Math.round(r.connections / r.seconds),
    fds_before: r.fdsBefore,
    fds_after: r.fdsAfter,
    rss_kib_before: r.rssKiBBefore,
    rss_kib_after: r.rssKiBAfter,
    gauge_after: r.gaugeAfter,
    turned_away: r.turnedAway,
    wrong_answers: r.wrongAnswers,
    failures: r.failures,
    served_after: r.servedAfter,
    ok: r.ok,
  };
  if (values.json) emit(line);
  else process.stdout.write(`${JSON.stringify(line, null, 2)}\n`);
  if (!r.ok) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
