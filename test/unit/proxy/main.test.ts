/**
 * `proxy/main.ts` as a real child process: exit codes and messages for bad
 * input, drain on SIGTERM, static stability (start from the state file when
 * the store is unreachable), and cluster mode.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "../../../lib/core/ports";
import { bearer, generateAdminToken } from "../../../proxy/admin-token";
import { writeStateFile } from "../../../proxy/config-watch";
import { config, deadPort, eventually, get, Harness, startBackend } from "./helpers";

const ROOT = resolve(__dirname, "..", "..", "..");
const h = new Harness();
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "hafleet-proxy-main-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));
afterEach(() => h.closeAll());

interface Run {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

function start(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, ["--import", "tsx", "proxy/main.ts", ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (d) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  h.add({
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  });
  return { child, stderr: () => err, exited };
}

/** Ends a process this test started (a worker of its child), if it still runs. */
function killIfAlive(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone already
  }
}

async function ready(adminPort: number): Promise<Record<string, unknown>> {
  let body: Record<string, unknown> = {};
  await eventually(
    async () => {
      try {
        const r = await get(adminPort, "/readyz");
        body = JSON.parse(r.body) as Record<string, unknown>;
        return r.status === 200;
      } catch {
        return false;
      }
    },
    30_000,
    "readyz",
  );
  return body;
}

describe("proxy/main.ts", () => {
  // Each row: arguments (FILE is a valid config file), and what the one error line must name.
  const bad: [string, string[], RegExp][] = [
    ["no config source", [], /give --config <file> or --fleet <id>/],
    ["unknown flag", ["--config", "FILE", "--colour"], /unknown option '--colour'/],
    [
      "admin port out of range",
      ["--config", "FILE", "--admin-port", "70000"],
      /--admin-port.*whole number from 0 to 65535/,
    ],
    ["workers not a number", ["--config", "FILE", "--workers", "many"], /--workers.*whole number/],
    ["bad fleet id", ["--fleet", "Bad_Fleet"], /--fleet 'Bad_Fleet' must be/],
    ["missing config file", ["--config", "/nonexistent/fleet.yaml"], /cannot read config file.*ENOENT/],
    [
      "invalid config",
      ["--config", "BAD"],
      /invalid fleet config in .*bad\.yaml: listeners\[0\]\.port \(line 1\): /,
    ],
    [
      "missing admin token file",
      ["--config", "FILE", "--admin-port", "0", "--admin-token-file", "/nonexistent/token"],
      /--admin-token-file \/nonexistent\/token: ENOENT/,
    ],
    [
      "admin token file readable by others",
      ["--config", "FILE", "--admin-port", "0", "--admin-token-file", "TOKEN_OPEN"],
      /--admin-token-file .*token-open is readable or writable by others \(mode 644\): chmod 600 it/,
    ],
    [
      "admin token too short",
      ["--config", "FILE", "--admin-port", "0", "--admin-token-file", "TOKEN_SHORT"],
      /--admin-token-file .*token-short must hold one token of at least 32 characters/,
    ],
  ];
  it.each(bad)("exits 2 with one clear line: %s", async (_name, args, message) => {
    const good = join(dir, "good.yaml");
    const badFile = join(dir, "bad.yaml");
    await writeFile(
      good,
      "listeners: [{ name: web, protocol: http, port: 1, pool: web }]\npools: { web: { backends: [{ host: 127.0.0.1, port: 1 }] } }\n",
    );
    await writeFile(
      badFile,
      "listeners: [{ name: web, protocol: http, port: 99999, pool: web }]\npools: { web: { backends: [{ host: 127.0.0.1, port: 1 }] } }\n",
    );
    const files: Record<string, string> = {
      FILE: good,
      BAD: badFile,
      TOKEN_OPEN: join(dir, "token-open"),
      TOKEN_SHORT: join(dir, "token-short"),
    };
    await writeFile(files.TOKEN_OPEN!, `${"a".repeat(64)}\n`, { mode: 0o644 });
    await chmod(files.TOKEN_OPEN!, 0o644);
    await writeFile(files.TOKEN_SHORT!, "short\n", { mode: 0o600 });
    const run = start(args.map((a) => files[a] ?? a));
    expect(await run.exited).toBe(2);
    const lines = run.stderr().trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^hafleet-proxy: /);
    expect(lines[0]).toMatch(message);
  });

  it("serves from a config file, and on SIGTERM finishes the request in flight, then exits 0", async () => {
    const a = h.add(await startBackend("a"));
    let release: () => void = () => {};
    a.handler = (req, res) => {
      if (req.url === "/slow") release = () => res.end("slow done");
      else res.end("a");
    };
    const port = await freePort();
    const adminPort = await freePort();
    const file = join(dir, "fleet.yaml");
    await writeFile(
      file,
      `listeners: [{ name: web, protocol: http, port: ${port}, bind: 127.0.0.1, pool: web }]\n` +
        `pools: { web: { backends: [{ host: 127.0.0.1, port: ${a.port} }] } }\n`,
    );
    const run = start(["--config", file, "--admin-port", String(adminPort), "--no-access-log"]);
    expect(await ready(adminPort)).toMatchObject({ ready: true, configSource: "file", configVersion: 1 });
    expect((await get(port)).body).toBe("a");
    const slow = get(port, "/slow");
    await eventually(() => a.seen.some((r) => r.url === "/slow"));
    run.child.kill("SIGTERM");
    await eventually(
      async () => (await get(adminPort, "/readyz").catch(() => ({ status: 0 }))).status !== 200,
    );
    release();
    expect((await slow).body).toBe("slow done");
    expect(await run.exited).toBe(0);
  });

  it("drains on POST /drain with the admin token from --admin-token-file, and only with it", async () => {
    const a = h.add(await startBackend("a"));
    const port = await freePort();
    const adminPort = await freePort();
    const file = join(dir, "token-fleet.yaml");
    await writeFile(
      file,
      `listeners: [{ name: web, protocol: http, port: ${port}, bind: 127.0.0.1, pool: web }]\n` +
        `pools: { web: { backends: [{ host: 127.0.0.1, port: ${a.port} }] } }\n`,
    );
    const token = generateAdminToken();
    const tokenFile = join(dir, "admin-token");
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const run = start(["--config", file, "--admin-port", String(adminPort), "--admin-token-file", tokenFile]);
    await ready(adminPort);
    const wrong = await get(adminPort, "/drain", {
      method: "POST",
      headers: { authorization: bearer(generateAdminToken()) },
    });
    expect(wrong.status).toBe(401);
    expect((await get(adminPort, "/readyz")).status).toBe(200);
    const ok = await get(adminPort, "/drain", { method: "POST", headers: { authorization: bearer(token) } });
    expect(ok.status).toBe(202);
    expect(await run.exited).toBe(0);
  });

  it("starts from the last good config on disk when the store is unreachable (static stability)", async () => {
    const a = h.add(await startBackend("a"));
    const port = await freePort();
    const adminPort = await freePort();
    const stateFile = join(dir, "state", "fleet.json");
    await writeStateFile(stateFile, {
      version: 41,
      config: config({
        listeners: [{ name: "web", protocol: "http", port, bind: "127.0.0.1", pool: "web" }],
        pools: { web: { backends: [{ host: "127.0.0.1", port: a.port }] } },
      }),
    });
    const run = start(["--fleet", "offline", "--state-file", stateFile, "--admin-port", String(adminPort)], {
      AWS_ENDPOINT_URL: `http://127.0.0.1:${await deadPort()}`,
    });
    expect(await ready(adminPort)).toMatchObject({
      ready: true,
      configSource: "state-file",
      configVersion: 41,
    });
    expect((await get(port)).body).toBe("a");
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
  });

  it("without a store and without a state file, exits 2 naming both", async () => {
    const run = start(["--fleet", "offline", "--state-file", join(dir, "none.json")], {
      AWS_ENDPOINT_URL: `http://127.0.0.1:${await deadPort()}`,
    });
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toMatch(
      /no config to start with: the store failed: .*and the state file .*none\.json does not exist/,
    );
  });

  it("runs workers with --workers 2: serves, aggregates metrics, drains on SIGTERM", async () => {
    const a = h.add(await startBackend("a"));
    const port = await freePort();
    const adminPort = await freePort();
    const file = join(dir, "cluster.yaml");
    await writeFile(
      file,
      `listeners: [{ name: web, protocol: http, port: ${port}, bind: 127.0.0.1, pool: web }]\n` +
        `pools: { web: { backends: [{ host: 127.0.0.1, port: ${a.port} }] } }\n`,
    );
    const run = start([
      "--config",
      file,
      "--admin-port",
      String(adminPort),
      "--workers",
      "2",
      "--no-access-log",
    ]);
    await ready(adminPort);
    for (let i = 0; i < 6; i++) expect((await get(port)).status).toBe(200);
    const metrics = (await get(adminPort, "/metrics")).body;
    expect(metrics).toMatch(/hafleet_proxy_requests_total\{listener="web",code="200"\} 6/);
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
  });

  it("with --workers 2, /healthz fails while a worker does not answer, naming it, and recovers when it does", async () => {
    const a = h.add(await startBackend("a"));
    const port = await freePort();
    const adminPort = await freePort();
    const file = join(dir, "cluster-health.yaml");
    await writeFile(
      file,
      `listeners: [{ name: web, protocol: http, port: ${port}, bind: 127.0.0.1, pool: web }]\n` +
        `pools: { web: { backends: [{ host: 127.0.0.1, port: ${a.port} }] } }\n`,
    );
    start(["--config", file, "--admin-port", String(adminPort), "--workers", "2", "--no-access-log"]);
    await ready(adminPort);
    let health: { healthy?: boolean; problems?: string[]; workers?: { pid: number }[] } = {};
    const healthz = async () => {
      const r = await get(adminPort, "/healthz");
      health = JSON.parse(r.body);
      return r.status;
    };
    await eventually(async () => (await healthz()) === 200 && health.workers?.length === 2);
    expect(health).toMatchObject({
      healthy: true,
      listeners: [{ name: "web", address: `127.0.0.1:${port}`, ok: true }],
    });
    const pid = health.workers![1]!.pid;
    // A stopped worker keeps its share of the listening socket but answers nothing.
    process.kill(pid, "SIGSTOP");
    h.add({ close: () => killIfAlive(pid) });
    await eventually(async () => (await healthz()) === 503, 20_000, "/healthz 503");
    expect(health.problems).toEqual([
      expect.stringMatching(new RegExp(`^worker ${pid} has not answered for \\d+ ms$`)),
    ]);
    process.kill(pid, "SIGCONT");
    await eventually(async () => (await healthz()) === 200, 20_000, "/healthz 200 again");
  });
});
