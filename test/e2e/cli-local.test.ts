/**
 * The local fleet as the README starts it, `hafleet local up` in a child
 * process, driven by `hafleet` commands in others: what an operator types.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { Resolver } from "node:dns/promises";
import { rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { freePort } from "../../lib/core/ports";
import { uniqueId } from "../harness/aws";

jest.setTimeout(180_000);

const ROOT = resolve(__dirname, "..", "..");
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function hafleet(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", "bin/hafleet.ts", ...args], {
      cwd: ROOT,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Polls `probe` until it returns a value, at most `ms`; throws `what` otherwise. */
async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms`);
    await sleep(250);
  }
}

let fleet: ChildProcess | undefined;
let output = "";
afterEach(async () => {
  if (fleet && fleet.exitCode === null) {
    const exited = new Promise((r) => fleet!.once("exit", r));
    fleet.kill("SIGINT");
    await Promise.race([exited, sleep(20_000)]);
    if (fleet.exitCode === null) fleet.kill("SIGKILL");
  }
  fleet = undefined;
});

async function localUp(fleetId: string, ...args: string[]): Promise<void> {
  const port = await freePort();
  output = "";
  fleet = spawn(
    process.execPath,
    ["--import", "tsx", "bin/hafleet.ts", "local", "up", "--fleet", fleetId, "--port", String(port), ...args],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  fleet.stdout!.on("data", (d: Buffer) => {
    output += d.toString();
  });
  fleet.stderr!.on("data", (d: Buffer) => {
    output += d.toString();
  });
  await until("the local fleet is up", 120_000, async () => {
    if (fleet!.exitCode !== null) throw new Error(`hafleet local up exited ${fleet!.exitCode}:\n${output}`);
    return output.includes(`local fleet '${fleetId}'`) && output.includes("is up") ? true : undefined;
  });
}

interface StatusJson {
  readonly dns: readonly {
    readonly mode: string;
    readonly weights: readonly { id: string; weight: number }[];
  }[];
}

test("a fleet started without --mode switches to active-active by config put", async () => {
  const fleetId = uniqueId("cli");
  await localUp(fleetId);

  const got = await hafleet("config", "get", "--fleet", fleetId);
  expect(got.code).toBe(0);
  expect(got.stdout).toContain("mode: active-passive");
  const file = join(tmpdir(), `${fleetId}-switch.yaml`);
  await writeFile(file, got.stdout.replace("mode: active-passive", "mode: active-active"));
  try {
    const put = await hafleet("config", "put", file, "--fleet", fleetId);
    expect(put).toMatchObject({ code: 0 });
  } finally {
    await rm(file, { force: true });
  }

  // The checker plans the weighted set for the new mode: every node serving with weight.
  const set = await until("the weighted set in active-active with every node weighted", 60_000, async () => {
    const out = await hafleet("status", "--fleet", fleetId, "--json");
    if (out.code !== 0) return undefined;
    const d = (JSON.parse(out.stdout) as StatusJson).dns[0];
    const nodes = d?.weights.filter((w) => w.id.startsWith("node-")) ?? [];
    return d?.mode === "active-active" && nodes.length === 2 && nodes.every((w) => w.weight > 0)
      ? d
      : undefined;
  });
  expect(set.mode).toBe("active-active");

  // Real DNS on the port the fleet printed answers for the set, and the answer serves.
  const printedDig = /dig @127\.0\.0\.1 -p (\d+) (\S+) \+short/.exec(output);
  expect(printedDig).not.toBeNull();
  const dns = new Resolver({ timeout: 2000, tries: 2 });
  dns.setServers([`127.0.0.1:${printedDig![1]}`]);
  const port = /--resolve \S+:(\d+):/.exec(output)![1];
  const [address] = await dns.resolve4(printedDig![2]!);
  const res = await fetch(`http://${address}:${port}/`);
  expect(res.status).toBe(200);
  await res.arrayBuffer();
});

test("the fleet's terminal tells a failover; a killed node comes back with local start", async () => {
  const fleetId = uniqueId("cli");
  await localUp(fleetId);
  const status = async () =>
    JSON.parse((await hafleet("status", "--fleet", fleetId, "--json")).stdout) as {
      lease: { holder: string; token: number } | null;
      nodes: { nodeId: string; role: string; heartbeatAgeMs: number }[];
    };
  // Once the holder is active: with the realistic mode its move may still be landing at first.
  const lease = await until("a lease holder that is active", 30_000, async () => {
    const s = await status();
    const active = s.nodes.find((n) => n.nodeId === s.lease?.holder && n.role === "active");
    return active ? s.lease! : undefined;
  });
  const holder = lease.holder;
  const other = holder === "node-1" ? "node-2" : "node-1";
  const printed = (pattern: RegExp) =>
    until(`the fleet printed ${pattern}`, 20_000, async () => (pattern.test(output) ? true : undefined));

  expect(await hafleet("kill", holder, "--fleet", fleetId)).toMatchObject({ code: 0 });
  // One line each, as it happens: the death, the lease with its token, the address.
  await printed(new RegExp(`${holder}: no heartbeat for [\\d.]+ s, dead \\(was active\\)`));
  await printed(new RegExp(`lease: ${other} holds it \\(token \\d+, after ${holder}\\)`));
  await printed(
    new RegExp(
      `Elastic IP eipalloc-\\S+ moved to ${other} \\(token \\d+, \\d+ ms\\): took over the lease from ${holder}`,
    ),
  );
  const taken = new RegExp(`lease: ${other} holds it \\(token (\\d+), after ${holder}\\)`).exec(output)!;
  expect(Number(taken[1])).toBeGreaterThan(lease.token);

  const running = await hafleet("local", "start", other, "--fleet", fleetId);
  expect(running.code).toBe(1);
  expect(running.stderr).toMatch(new RegExp(`${other} is running \\(pid \\d+\\): use restart`));

  const started = await hafleet("local", "start", holder, "--fleet", fleetId);
  expect(started.stderr).toBe("");
  expect(started.stdout).toMatch(new RegExp(`started ${holder} \\(pid \\d+\\), ready after [\\d.]+ s`));
  await printed(new RegExp(`${holder}: back \\(standby\\)`));

  // The new pid is the one the other commands act on.
  const pid = /pid (\d+)/.exec(started.stdout)![1];
  const killed = await hafleet("kill", holder, "--fleet", fleetId);
  expect(killed).toMatchObject({ code: 0 });
  expect(killed.stdout).toContain(`pid ${pid}`);

  const restarted = await hafleet("local", "restart", other, "--fleet", fleetId);
  expect(restarted.stdout).toMatch(new RegExp(`restarted ${other} \\(pid \\d+\\), ready after`));
  const unknown = await hafleet("local", "start", "node-9", "--fleet", fleetId);
  expect(unknown.code).toBe(1);
  expect(unknown.stderr).toContain("no node 'node-9' in local fleet");
});
