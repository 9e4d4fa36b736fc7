/**
 * Proxy benchmark: `npm run bench:proxy -- --json`.
 *
 * In one run, on the same backends and with the same load generator (wrk):
 * hafleet HTTP and TCP, HAProxy HTTP and TCP, nginx HTTP, and the backends
 * direct. Each proxy is one process pinned to one core (taskset); wrk and the
 * backends (one nginx process serving a fixed answer on two ports) run on the
 * other cores. Prints one JSON object per line with `target`, `rps`,
 * `p50_ms`, `p99_ms` (and the proxy process's CPU time per request, which is
 * steadier than rps on a shared machine), then a summary line comparing
 * hafleet with HAProxy.
 *
 * Flags: --json (only JSON on stdout), --duration <s> (10), --connections <n>
 * (50), --rounds <n> (1; with more, each figure is the median of the rounds,
 * measured interleaved so that a noisy neighbour hits all targets alike),
 * --paced-rps <n> (10000).
 *
 * Two loads. Saturating: each connection sends its next request as soon as
 * the answer came, so each target runs at its own peak and its latency is
 * mostly queueing (Little's law: connections / rps). Paced: the same
 * connections wait between requests (wrk's `delay()`) so that every target is
 * offered about `--paced-rps`, below any of their peaks; there the difference
 * in latency from the backends direct is what the proxy adds to a request.
 *
 * Needs wrk, haproxy, nginx and taskset (Debian: apt-get install wrk haproxy
 * nginx-light util-linux); installs them with apt-get when missing and root.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, waitForPort } from "../lib/core/ports";

const ROOT = resolve(__dirname, "..");

interface Flags {
  json: boolean;
  durationS: number;
  connections: number;
  rounds: number;
  pacedRps: number;
}

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { json: false, durationS: 10, connections: 50, rounds: 1, pacedRps: 10_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (name: string) => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${name} needs a whole number above 0`);
      return v;
    };
    if (a === "--json") flags.json = true;
    else if (a === "--duration") flags.durationS = num(a);
    else if (a === "--connections") flags.connections = num(a);
    else if (a === "--rounds") flags.rounds = num(a);
    else if (a === "--paced-rps") flags.pacedRps = num(a);
    else
      throw new Error(
        `unknown flag ${a}; flags: --json --duration <s> --connections <n> --rounds <n> --paced-rps <n>`,
      );
  }
  return flags;
}

function has(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** wrk, haproxy, nginx and taskset; installed with apt-get when missing and root. */
function ensureTools(log: (s: string) => void): { nginx: string; haproxy: string } {
  const need = [
    ["wrk", "wrk"],
    ["haproxy", "haproxy"],
    ["nginx", "nginx-light"],
    ["taskset", "util-linux"],
  ] as const;
  const path = (cmd: string) => (has(cmd) ? cmd : has(`/usr/sbin/${cmd}`) ? `/usr/sbin/${cmd}` : undefined);
  const missing = need.filter(([cmd]) => !path(cmd));
  if (missing.length > 0) {
    const pkgs = missing.map(([, pkg]) => pkg);
    if (process.getuid?.() !== 0 || !has("apt-get")) {
      throw new Error(
        `missing ${missing.map(([c]) => c).join(", ")}: install them (Debian: apt-get install ${pkgs.join(" ")})`,
      );
    }
    log(`installing ${pkgs.join(" ")} with apt-get`);
    execFileSync("apt-get", ["update", "-qq"], { stdio: "ignore" });
    execFileSync("apt-get", ["install", "-y", "-qq", ...pkgs], {
      stdio: "ignore",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  }
  return { nginx: path("nginx")!, haproxy: path("haproxy")! };
}

interface WrkResult {
  rps: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  errors: number;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000;
}

/** With `pacing`, each connection waits `delayMs` after an answer before its next request. */
function wrk(
  cores: string,
  url: string,
  durationS: number,
  connections: number,
  pacing?: { script: string; delayMs: number },
): WrkResult {
  const paced = pacing ? ["-s", pacing.script] : [];
  const args = pacing ? ["--", String(pacing.delayMs)] : [];
  const out = execFileSync(
    "taskset",
    ["-c", cores, "wrk", "-t1", `-c${connections}`, `-d${durationS}s`, "--latency", ...paced, url, ...args],
    { encoding: "utf8" },
  );
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? "";
  const p99 = /^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? "";
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const errs = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = (errs ? Number(errs[1]) : 0) + (sock ? sock.slice(1).reduce((s, x) => s + Number(x), 0) : 0);
  return { rps, p50_ms: toMs(p50), p99_ms: toMs(p99), requests, errors };
}

/** utime + stime of a process in clock ticks (100 per second on Linux). */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  const log = (s: string) => {
    if (!flags.json) process.stderr.write(`${s}\n`);
  };
  const tools = ensureTools(log);
  const ncpu = availableParallelism();
  const proxyCore = "0";
  const loadCores = ncpu > 1 ? `1-${ncpu - 1}` : "0";
  if (ncpu < 2) log("one core only: proxies and load share it; figures are not comparable with a pinned run");

  const dir = mkdtempSync(join(tmpdir(), "hafleet-bench-"));
  const children: ChildProcess[] = [];
  const spawnPinned = (cores: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) => {
    const c = spawn("taskset", ["-c", cores, cmd, ...args], { stdio: ["ignore", "ignore", "pipe"], env });
    let err = "";
    c.stderr?.on("data", (d) => {
      err += d.toString();
    });
    c.on("exit", (code) => {
      if (code && code !== 0 && !stopping) process.stderr.write(`${cmd} exited ${code}: ${err}\n`);
    });
    children.push(c);
    return c;
  };
  let stopping = false;
  const cleanup = () => {
    stopping = true;
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", cleanup);
  process.on("SIGINT", () => process.exit(130));

  const ports = await Promise.all(Array.from({ length: 7 }, freePort));
  const [b1, b2, hHttp, hTcp, xHttp, xTcp, nHttp] = ports as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const body = "hello from the backend\n";

  // Backends: one nginx process, two ports, a fixed answer, on the load cores.
  writeFileSync(
    join(dir, "backend.conf"),
    `worker_processes 1; daemon off; master_process off; pid ${dir}/backend.pid; error_log ${dir}/backend.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:${b1}; location / { return 200 "${body.trim()}\\n"; } }
  server { listen 127.0.0.1:${b2}; location / { return 200 "${body.trim()}\\n"; } } }
`,
  );
  spawnPinned(loadCores, tools.nginx, ["-c", join(dir, "backend.conf"), "-p", dir]);

  // hafleet: one process (no cluster), no access log.
  writeFileSync(
    join(dir, "hafleet.yaml"),
    `listeners:
  - { name: web, protocol: http, port: ${hHttp}, bind: 127.0.0.1, pool: be }
  - { name: raw, protocol: tcp, port: ${hTcp}, bind: 127.0.0.1, pool: be }
pools:
  be:
    backends: [{ host: 127.0.0.1, port: ${b1} }, { host: 127.0.0.1, port: ${b2} }]
`,
  );
  const adminPort = await freePort();
  const hafleet = spawnPinned(proxyCore, process.execPath, [
    "--import",
    "tsx",
    join(ROOT, "proxy", "main.ts"),
    "--config",
    join(dir, "hafleet.yaml"),
    "--workers",
    "1",
    "--no-access-log",
    "--log-level",
    "warn",
    "--admin-port",
    String(adminPort),
  ]);

  // HAProxy: one process, one thread, keep-alive both sides.
  writeFileSync(
    join(dir, "haproxy.cfg"),
    `global
  nbthread 1
  maxconn 4000
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe_http
  mode http
  option http-keep-alive
  bind 127.0.0.1:${xHttp}
  default_backend be_http
backend be_http
  mode http
  balance roundrobin
  http-reuse always
  server a 127.0.0.1:${b1}
  server b 127.0.0.1:${b2}
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:${xTcp}
  default_backend be_tcp
backend be_tcp
  mode tcp
  balance roundrobin
  server a 127.0.0.1:${b1}
  server b 127.0.0.1:${b2}
`,
  );
  const haproxy = spawnPinned(proxyCore, tools.haproxy, ["-db", "-f", join(dir, "haproxy.cfg")]);

  // nginx as a proxy: one worker, upstream keep-alive.
  writeFileSync(
    join(dir, "nginx-proxy.conf"),
    `worker_processes 1; daemon off; master_process off; pid ${dir}/proxy.pid; error_log ${dir}/proxy.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  upstream be { server 127.0.0.1:${b1}; server 127.0.0.1:${b2}; keepalive 128; }
  server { listen 127.0.0.1:${nHttp};
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
`,
  );
  const nginxProxy = spawnPinned(proxyCore, tools.nginx, ["-c", join(dir, "nginx-proxy.conf"), "-p", dir]);

  await Promise.all([b1, b2, hHttp, hTcp, xHttp, xTcp, nHttp].map((p) => waitForPort(p)));

  const targets: { target: string; port: number; pid?: number }[] = [
    { target: "direct", port: b1 },
    { target: "hafleet-http", port: hHttp, pid: hafleet.pid },
    { target: "hafleet-tcp", port: hTcp, pid: hafleet.pid },
    { target: "haproxy-http", port: xHttp, pid: haproxy.pid },
    { target: "haproxy-tcp", port: xTcp, pid: haproxy.pid },
    { target: "nginx-http", port: nHttp, pid: nginxProxy.pid },
  ];
  // Warm up: JIT for node, connection pools for all.
  for (const t of targets) wrk(loadCores, `http://127.0.0.1:${t.port}/`, 2, flags.connections);

  // Paced: each of the connections offers connections / pacedRps seconds per request.
  const pacingScript = join(dir, "paced.lua");
  writeFileSync(
    pacingScript,
    "local d = 0\nfunction init(args) d = tonumber(args[1]) end\nfunction delay() return d end\n",
  );
  const pacing = {
    script: pacingScript,
    delayMs: Math.max(1, Math.round((flags.connections * 1000) / flags.pacedRps)),
  };

  type Series = { rps: number[]; p50: number[]; p99: number[]; cpu: number[]; errors: number };
  const results = new Map<string, Series>();
  const record = (key: string, r: WrkResult, cpuUs?: number) => {
    const e = results.get(key) ?? { rps: [], p50: [], p99: [], cpu: [], errors: 0 };
    e.rps.push(r.rps);
    e.p50.push(r.p50_ms);
    e.p99.push(r.p99_ms);
    if (cpuUs !== undefined) e.cpu.push(cpuUs);
    e.errors += r.errors;
    results.set(key, e);
  };
  for (let round = 0; round < flags.rounds; round++) {
    for (const t of targets) {
      log(`round ${round + 1}/${flags.rounds}: ${t.target}`);
      const url = `http://127.0.0.1:${t.port}/`;
      const before = t.pid ? cpuTicks(t.pid) : 0;
      const r = wrk(loadCores, url, flags.durationS, flags.connections);
      const after = t.pid ? cpuTicks(t.pid) : 0;
      record(t.target, r, t.pid ? ((after - before) * 10_000) / r.requests : undefined); // ticks are 10 ms
      log(`round ${round + 1}/${flags.rounds}: ${t.target}, paced`);
      record(`${t.target} paced`, wrk(loadCores, url, flags.durationS, flags.connections, pacing));
    }
  }

  const summary: Record<string, { rps: number; p50_ms: number; p99_ms: number }> = {};
  for (const load of ["saturating", "paced"] as const) {
    for (const t of targets) {
      const key = load === "paced" ? `${t.target} paced` : t.target;
      const e = results.get(key)!;
      const line = {
        target: t.target,
        load,
        ...(load === "paced" ? { offered_rps: flags.pacedRps, delay_ms: pacing.delayMs } : {}),
        rps: Math.round(median(e.rps)),
        p50_ms: round3(median(e.p50)),
        p99_ms: round3(median(e.p99)),
        ...(e.cpu.length ? { cpu_us_per_req: round3(median(e.cpu)) } : {}),
        errors: e.errors,
        connections: flags.connections,
        duration_s: flags.durationS,
        rounds: flags.rounds,
      };
      summary[key] = line;
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  }
  const s = (k: string) => summary[k]!;
  const cpu = (k: string) => median(results.get(k)!.cpu);
  process.stdout.write(
    `${JSON.stringify({
      bench: "proxy",
      http_vs_haproxy: round3(s("hafleet-http").rps / s("haproxy-http").rps),
      tcp_vs_haproxy: round3(s("hafleet-tcp").rps / s("haproxy-tcp").rps),
      // At saturation: hafleet's lower peak shows here as queueing (see the paced figure).
      http_p99_overhead_ms: round3(s("hafleet-http").p99_ms - s("direct").p99_ms),
      // Every target offered the same paced load, below their peaks: what the proxy adds.
      http_p99_overhead_ms_paced: round3(s("hafleet-http paced").p99_ms - s("direct paced").p99_ms),
      haproxy_http_p99_overhead_ms_paced: round3(s("haproxy-http paced").p99_ms - s("direct paced").p99_ms),
      paced_rps: flags.pacedRps,
      // On a shared machine every proxy's p99 carries the neighbours' noise:
      // HAProxy measured alongside tells what is ours.
      http_p99_vs_haproxy_ms: round3(s("hafleet-http").p99_ms - s("haproxy-http").p99_ms),
      // Proxy CPU per request, HAProxy's over ours (1 = as efficient).
      http_cpu_vs_haproxy: round3(cpu("haproxy-http") / cpu("hafleet-http")),
      tcp_cpu_vs_haproxy: round3(cpu("haproxy-tcp") / cpu("hafleet-tcp")),
    })}\n`,
  );
  cleanup();
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:proxy: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
