/**
 * The hostile corpus against hafleet, HAProxy and nginx side by side:
 * `npm run corpus:peers [-- --json]`.
 *
 * For each case and each proxy: a strict raw backend of its own, the proxy in
 * front of it on loopback (HAProxy and nginx as child processes with a config
 * written for the case, from Debian's haproxy and nginx-light packages), the
 * case's bytes, and what came of them: the statuses the client got, whether
 * the connection closed, how many requests the backend read. Prints a table
 * (or one JSON line per case with --json, then a summary line), saying for
 * each case where the peer made the decision hafleet expects (`agrees`), and
 * whether each case's `follows` says so. It compares decisions, not bytes:
 * the peers add and rewrite headers of their own.
 *
 * A test tool (it runs the test corpus), not a benchmark: nothing is timed.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFleetConfig } from "../../lib/core/config";
import { canConnect, freePort } from "../../lib/core/ports";
import { ProxyServer } from "../../proxy/server";
import { CORPUS, type HostileCase } from "../unit/proxy/hostile-corpus";
import { type ClientView, sendCase } from "../unit/proxy/hostile-runner";
import { type RawBackend, readRequest, startRawBackend } from "../unit/proxy/raw-backend";

type Target = "hafleet" | "haproxy" | "nginx";

interface Seen {
  statuses: number[];
  closed: boolean;
  requests: number;
}

async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`peer exited with ${child.exitCode}`);
    if (await canConnect(port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`peer never listened on ${port}`);
}

function haproxyConfig(port: number, backendPort: number): string {
  return `global
  maxconn 100
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout http-request 3s
frontend f
  bind 127.0.0.1:${port}
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:${backendPort}
`;
}

function nginxConfig(dir: string, port: number, backendPort: number): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  client_header_timeout 3s;
  upstream b { server 127.0.0.1:${backendPort}; keepalive 8; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
    }
  }
}
`;
}

async function runOn(target: Target, c: HostileCase, dir: string): Promise<Seen> {
  const backend: RawBackend = await startRawBackend(c.replies ?? []);
  let view: ClientView;
  try {
    if (target === "hafleet") {
      const config = parseFleetConfig({
        listeners: [
          {
            name: "web",
            protocol: "http",
            port: 8080,
            bind: "127.0.0.1",
            pool: "web",
            ...(c.trustedProxies ? { trustedProxies: [...c.trustedProxies] } : {}),
          },
        ],
        pools: {
          web: {
            backends: [{ host: "127.0.0.1", port: backend.port }],
            healthCheck: { intervalMs: 60_000, timeoutMs: 1000 },
          },
        },
        timeouts: { headMs: 60_000, requestMs: 60_000 },
      });
      const proxy = await ProxyServer.start({ config, healthChecks: false, portOverrides: { web: 0 } });
      try {
        view = await sendCase(proxy.port("web"), c);
      } finally {
        await proxy.close();
      }
    } else {
      const port = await freePort();
      const file = join(dir, `${target}.conf`);
      writeFileSync(
        file,
        target === "haproxy" ? haproxyConfig(port, backend.port) : nginxConfig(dir, port, backend.port),
      );
      const child =
        target === "haproxy"
          ? spawn("haproxy", ["-db", "-f", file], { stdio: "ignore" })
          : spawn("nginx", ["-c", file, "-p", dir], { stdio: "ignore" });
      try {
        await waitForPort(port, child);
        view = await sendCase(port, c);
      } finally {
        child.kill("SIGKILL");
        await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
      }
    }
  } finally {
    await backend.close();
  }
  return { statuses: view.statuses, closed: view.closed, requests: backend.requests.length };
}

/** The outcome a case expects, in the terms the peers can be compared in. */
function expected(c: HostileCase): Seen {
  const e = c.expect;
  // Requests the backend reads in full: counted with the strict reader itself.
  let requests = 0;
  for (let rest = e.backend; ; requests++) {
    const n = readRequest(rest);
    if (typeof n !== "number") break;
    rest = rest.slice(n);
  }
  return { statuses: [...e.statuses], closed: e.closed, requests };
}

/** Refused: the last answer is an error, or none came and the connection closed. */
function refusedOf(s: Seen): boolean {
  const last = s.statuses.at(-1);
  return last === undefined ? s.closed : last >= 400;
}

/**
 * The same decision: as many requests reached the backend, and both refused
 * (whatever the status: 400 here, 422 or 501 there) or both answered the
 * same statuses. Closing is shown but not compared: nginx lingers on a
 * connection it refused, which says nothing about its framing.
 */
function agrees(want: Seen, got: Seen): boolean {
  if (want.requests !== got.requests) return false;
  const refused = refusedOf(want);
  if (refused !== refusedOf(got)) return false;
  return refused || JSON.stringify(want.statuses) === JSON.stringify(got.statuses);
}

function show(s: Seen): string {
  return `${s.statuses.join(",") || "-"}${s.closed ? " closed" : ""} req=${s.requests}`;
}

async function main(): Promise<void> {
  const json = process.argv.includes("--json");
  const targets: Target[] = ["hafleet"];
  for (const t of ["haproxy", "nginx"] as const) {
    if (spawnSync("which", [t]).status === 0) targets.push(t);
    else process.stderr.write(`${t} not found (apt-get install haproxy nginx-light): left out\n`);
  }
  const dir = mkdtempSync(join(tmpdir(), "hafleet-peers-"));
  const totals: Record<string, number> = {};
  /** Cases whose `follows` names a peer that did otherwise, or says "neither" of a peer that agreed. */
  const wrongFollows: string[] = [];
  try {
    for (const c of CORPUS) {
      const want = expected(c);
      const row: Record<string, unknown> = { case: c.name, class: c.cls, follows: c.follows ?? null };
      const cells: string[] = [];
      for (const t of targets) {
        const got = await runOn(t, c, dir);
        const same = agrees(want, got);
        totals[t] = (totals[t] ?? 0) + (same ? 1 : 0);
        row[t] = { ...got, asExpected: same };
        cells.push(`${same ? "=" : "x"} ${show(got)}`);
        if (t !== "hafleet" && c.follows !== undefined) {
          const claimed = c.follows.includes(t === "haproxy" ? "HAProxy" : "nginx");
          if (claimed !== same) wrongFollows.push(`${c.name}: ${t} ${same ? "agrees" : "differs"}`);
        }
      }
      if (json) process.stdout.write(`${JSON.stringify(row)}\n`);
      else
        process.stdout.write(
          `${c.cls.padEnd(26)} ${c.name.slice(0, 58).padEnd(58)} ${cells.map((x) => x.padEnd(24)).join(" ")}\n`,
        );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const summary = { check: "corpus-peers", cases: CORPUS.length, asExpected: totals, wrongFollows };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
