/**
 * The CLI's commands on a local fleet that is gone: a state file left behind
 * (a closed terminal, `npm run local | tee` then Ctrl-C) must never make
 * `kill`, `pause` or `resume` signal a process that is not the fleet's node.
 * Each row: the state left behind, the command, and what must happen.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { stateFile } from "../../harness/local-fleet";

const ROOT = resolve(__dirname, "..", "..", "..");
const run = promisify(execFile);

/** Runs the CLI; resolves with its exit code and output, whatever the code. */
async function hafleet(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true" };
  delete env.HAFLEET_STATE_TABLE;
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", "bin/hafleet.ts", ...args], {
      cwd: ROOT,
      env,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** A process that is not a node of any fleet: what a reused pid looks like. */
function bystander(): { child: ChildProcess; alive: () => boolean } {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  return { child, alive: () => child.exitCode === null && child.signalCode === null };
}

/** A pid that no process has: a child that has exited and been reaped. */
async function deadPid(): Promise<number> {
  const child = spawn("true", { stdio: "ignore" });
  await new Promise((r) => child.on("exit", r));
  return child.pid!;
}

function state(fleetId: string, ownerPid: number, nodePid: number) {
  return {
    fleetId,
    endpoint: "http://127.0.0.1:1",
    tables: { state: "s", sessions: "x" },
    elasticIp: { allocationId: "eipalloc-1", publicIp: "127.0.0.9" },
    port: 8080,
    nodes: [{ nodeId: "node-1", pid: nodePid, instanceId: "i-1", address: "127.0.10.1", adminPort: 1 }],
    ownerPid,
  };
}

const CASES: ReadonlyArray<{
  name: string;
  command: "kill" | "pause" | "resume";
  owner: "dead" | "alive";
  message: RegExp;
}> = [
  {
    name: "the fleet's owner exited (its state file stayed)",
    command: "kill",
    owner: "dead",
    message:
      /no local fleet '[a-z0-9-]+' is running \(its process \d+ has exited\); start one with npm run local/,
  },
  {
    name: "the owner lives but the node's pid now belongs to another process",
    command: "kill",
    owner: "alive",
    message: /node-1 is not running: pid \d+ is another process now, so nothing was signalled/,
  },
  {
    name: "pause, with the pid reused",
    command: "pause",
    owner: "alive",
    message: /node-1 is not running: pid \d+ is another process now, so nothing was signalled/,
  },
  {
    name: "resume, with the owner gone",
    command: "resume",
    owner: "dead",
    message: /no local fleet '[a-z0-9-]+' is running/,
  },
];

describe("hafleet kill / pause / resume on a fleet that is gone", () => {
  const children: ChildProcess[] = [];
  const fleets: string[] = [];
  afterAll(async () => {
    for (const c of children) c.kill("SIGKILL");
    for (const f of fleets) await rm(stateFile(f), { force: true });
  });

  it.each(CASES)("$name: exits 1, says so, signals nobody", async (row) => {
    const fleetId = `stale-${process.pid}-${fleets.length}`;
    fleets.push(fleetId);
    const other = bystander();
    children.push(other.child);
    const ownerPid = row.owner === "dead" ? await deadPid() : process.pid;
    await mkdir(join(ROOT, ".hafleet", "local"), { recursive: true });
    await writeFile(stateFile(fleetId), JSON.stringify(state(fleetId, ownerPid, other.child.pid!)));
    const out = await hafleet(row.command, "node-1", "--fleet", fleetId);
    expect(out.stderr.trim()).toMatch(/^hafleet: /);
    expect(out.stderr).toMatch(row.message);
    expect(out.code).toBe(1);
    expect(other.alive()).toBe(true);
  });

  it("npx hafleet runs the CLI in the checkout (package.json bin), with package.json's version", async () => {
    const { stdout } = await run("npx", ["--no-install", "hafleet", "--help"], { cwd: ROOT });
    expect(stdout).toMatch(/^Usage: hafleet /);
    const version = await run("npx", ["--no-install", "hafleet", "--version"], { cwd: ROOT });
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version);
  });

  it("status of a fleet that runs nowhere says so in a sentence, not as a credentials error", async () => {
    const out = await hafleet("status", "--fleet", "nosuch");
    expect(out.code).toBe(1);
    expect(out.stderr.trim()).toBe(
      "hafleet: no local fleet 'nosuch' is running here; start one with npm run local, or for a deployed " +
        "fleet set HAFLEET_STATE_TABLE (the stack's StateTableName output) and your AWS credentials",
    );
  });

  it("a node that has exited is reported as not running, not as kill ESRCH", async () => {
    const fleetId = `stale-${process.pid}-dead-node`;
    fleets.push(fleetId);
    await writeFile(stateFile(fleetId), JSON.stringify(state(fleetId, process.pid, await deadPid())));
    const out = await hafleet("kill", "node-1", "--fleet", fleetId);
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(/node-1 is not running: its process \d+ has exited/);
    expect(out.stderr).not.toContain("ESRCH");
  });
});
