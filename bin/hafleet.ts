#!/usr/bin/env node
/**
 * hafleet, the operator CLI. Entry point only: each command calls into
 * lib/core (fleet state) or test/harness (the local fleet).
 *
 * A fleet is reached through the usual AWS variables and HAFLEET_STATE_TABLE /
 * HAFLEET_SESSIONS_TABLE, or, when `hafleet local up` runs it here, through
 * the local fleet's state file. Exit codes: 0 ok, 1 failure, 2 bad usage.
 */
import { execFile } from "node:child_process";
import { access, readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { fleetIdFlag, intFlag } from "../lib/core/cli";
import { configDiff, configYaml, FAILOVER_DEFAULTS, loadFleetConfigFile } from "../lib/core/config";
import { ConfigStore } from "../lib/core/config-store";
import { ElasticIps } from "../lib/core/elastic-ip";
import { HafleetError } from "../lib/core/errors";
import { dnsDrainMs, modeSwitchRefusal } from "../lib/core/failover";
import { listNodes, sendNodeCommand, staleAfterMs } from "../lib/core/heartbeat";
import { DynamoLeaseStore } from "../lib/core/lease";
import { type FleetStatus, fleetStatus, renderStatus } from "../lib/core/status";
import { StateStore } from "../lib/core/store";
import { tableNamesFromEnv } from "../lib/core/tables";
import { VERSION } from "../lib/core/version";
import { FleetWatch } from "../lib/core/watch";
import { emulatorEnv } from "../test/harness/emulator";
import {
  adminTokenFile,
  LocalFleet,
  type LocalFleetState,
  readLocalState,
  stateFile,
} from "../test/harness/local-fleet";
import { runActiveActiveTour, runTour } from "../test/harness/tour";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
const run = promisify(execFile);

/** Whether a process with this pid exists (EPERM: it does, under another user). */
function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Whether `pid` is this fleet's node: its command line names both (a pid may be reused). */
async function isFleetNode(pid: number, fleetId: string, nodeId: string): Promise<boolean> {
  const args = await run("ps", ["-o", "args=", "-p", String(pid)]).then(
    (r) => ` ${r.stdout.trim()} `,
    () => "",
  );
  return args.includes(` --fleet ${fleetId} `) && args.includes(` --node-id ${nodeId} `);
}

/**
 * The state file of a local fleet that still runs. A file whose owner has exited is left
 * behind (a closed terminal): the fleet is gone, and its pids may belong to anyone now.
 */
async function liveLocalState(fleetId: string): Promise<LocalFleetState> {
  const state = await readLocalState(fleetId);
  if (!alive(state.ownerPid)) {
    throw new Error(
      `no local fleet '${fleetId}' is running (its process ${state.ownerPid} has exited); start one with npm run local`,
    );
  }
  return state;
}

/** The store and EC2 client of a fleet: the local one if it runs here, otherwise the AWS environment's. */
async function connect(fleetId: string) {
  const hasFile = await access(stateFile(fleetId)).then(
    () => true,
    () => false,
  );
  const local = hasFile ? await liveLocalState(fleetId) : undefined;
  if (!local && !process.env.HAFLEET_STATE_TABLE) {
    throw new Error(
      `no local fleet '${fleetId}' is running here; start one with npm run local, or for a deployed ` +
        "fleet set HAFLEET_STATE_TABLE (the stack's StateTableName output) and your AWS credentials",
    );
  }
  if (local) Object.assign(process.env, emulatorEnv(local.endpoint));
  const store = new StateStore({ tables: local?.tables ?? tableNamesFromEnv() });
  const elasticIps = new ElasticIps();
  return {
    store,
    elasticIps,
    local,
    close: () => {
      store.destroy();
      elasticIps.destroy();
    },
  };
}

/**
 * Prints what happens in the fleet as it happens, one line each (lease moves
 * with tokens, Elastic IP moves, marks, weights, drains, deaths), until `signal`.
 */
async function followFleet(store: StateStore, fleetId: string, signal: AbortSignal): Promise<void> {
  const watch = new FleetWatch(store, fleetId);
  const time = (ms: number) => new Date(ms).toISOString().slice(11, 23);
  while (!signal.aborted) {
    try {
      for (const line of await watch.poll()) process.stdout.write(`${time(line.atMs)}  ${line.text}\n`);
    } catch (err) {
      process.stdout.write(`${time(Date.now())}  (could not read the fleet: ${String(err)})\n`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  store.destroy();
}

/** Asks the local fleet's process to start or restart one of its nodes, and waits for its answer. */
async function controlLocalNode(fleetId: string, nodeId: string, verb: "start" | "restart"): Promise<void> {
  const state = await liveLocalState(fleetId);
  if (!state.controlUrl) {
    throw new Error(`local fleet '${fleetId}' takes no commands (started by an older hafleet): restart it`);
  }
  const token = (await readFile(adminTokenFile(fleetId), "utf8")).trim();
  process.stdout.write(`${verb === "start" ? "starting" : "restarting"} ${nodeId}...\n`);
  const res = await fetch(`${state.controlUrl}/nodes/${encodeURIComponent(nodeId)}/${verb}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(120_000),
  });
  const body = (await res.json().catch(() => ({}))) as { message?: string };
  const message = body.message ?? `the local fleet answered ${res.status}`;
  if (res.status !== 200) throw new Error(message);
  process.stdout.write(`${message}\n`);
}

async function signalNode(
  fleetId: string,
  nodeId: string,
  signal: NodeJS.Signals,
  verb: string,
): Promise<void> {
  const state = await liveLocalState(fleetId);
  const node = state.nodes.find((n) => n.nodeId === nodeId);
  if (!node)
    throw new Error(
      `no node '${nodeId}' in local fleet '${fleetId}' (nodes: ${state.nodes.map((n) => n.nodeId).join(", ")})`,
    );
  if (!node.pid || !alive(node.pid)) {
    throw new Error(`${nodeId} is not running: its process ${node.pid ?? "(none)"} has exited`);
  }
  if (!(await isFleetNode(node.pid, fleetId, nodeId))) {
    throw new Error(
      `${nodeId} is not running: pid ${node.pid} is another process now, so nothing was signalled`,
    );
  }
  process.kill(node.pid, signal);
  process.stdout.write(`${verb} ${nodeId} (pid ${node.pid}, ${signal})\n`);
}

/**
 * Drains a node and waits until it has stopped: refused at once when the node is not running,
 * an error when it does not stop within its drain time and the wait to leave DNS.
 */
async function drain(fleetId: string, nodeId: string, timeoutS: number | undefined): Promise<void> {
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const c = await connect(fleetId);
  try {
    const config = (await new ConfigStore(c.store, fleetId).get())?.config;
    const staleMs = staleAfterMs(config?.failover.heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs);
    const find = async () => (await listNodes(c.store, fleetId)).find((n) => n.nodeId === nodeId);
    const node = await find();
    if (!node) throw new Error(`node '${nodeId}' is not registered in fleet '${fleetId}'`);
    const ageMs = c.store.clock.wallMs() - node.heartbeatAtMs;
    if (ageMs >= staleMs || node.role === "stopped") {
      throw new Error(
        `${nodeId} is not running (heartbeat ${(ageMs / 1000).toFixed(0)} s old, role ${node.role}): nothing to drain`,
      );
    }
    const sent = await sendNodeCommand(c.store, fleetId, nodeId, "drain");
    say(`asked ${nodeId} to drain (${sent.id}); waiting for it to stop...`);
    // Its drain time, and in active-active its wait to leave DNS, with room.
    const boundMs =
      (timeoutS ?? 0) * 1000 ||
      (config?.timeouts.drainMs ?? 30_000) + dnsDrainMs(config?.dns.ttlS ?? 10) + 15_000;
    let saidDraining = false;
    const stopped = await waitFor(boundMs, async () => {
      const n = await find();
      if (!n) return true;
      if (n.role === "draining" && !saidDraining) {
        saidDraining = true;
        say(`${nodeId} is draining: it took no new work and finishes what it has`);
      }
      const quiet = c.store.clock.wallMs() - n.heartbeatAtMs >= staleMs;
      return n.role === "stopped" || (saidDraining && quiet) ? true : undefined;
    });
    if (!stopped) throw new Error(`${nodeId} had not stopped after ${Math.round(boundMs / 1000)} s`);
    say(`${nodeId} has stopped`);
  } finally {
    c.close();
  }
}

type Connection = Awaited<ReturnType<typeof connect>>;

/** Polls `check` every 250 ms until it returns a value, for at most `ms`; undefined if it never does. */
async function waitFor<T>(ms: number, check: () => Promise<T | undefined>): Promise<T | undefined> {
  const until = Date.now() + ms;
  for (;;) {
    const got = await check();
    if (got !== undefined || Date.now() >= until) return got;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Hands the lease from its holder to a standby and waits until a standby holds it and the
 * shared Elastic IP is on it. Refuses at once when no node could take over.
 */
async function failover(c: Connection, fleetId: string, timeoutMs: number): Promise<void> {
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const heartbeatMs = (await new ConfigStore(c.store, fleetId).get())?.config.failover.heartbeatMs;
  const before = await fleetStatus(c.store, c.elasticIps, fleetId);
  const holder = before.lease?.holder;
  if (!holder || !before.lease) throw new Error(`fleet '${fleetId}' has no lease holder to fail over from`);
  const staleMs = staleAfterMs(heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs);
  const why = (n: FleetStatus["nodes"][number]): string | undefined => {
    if (n.heartbeatAgeMs >= staleMs) return `dead (heartbeat ${(n.heartbeatAgeMs / 1000).toFixed(0)} s old)`;
    if (n.role === "stopped") return "stopped";
    if (n.drain || n.role === "draining") return "draining";
    if (n.failed) return `marked failed (${n.failed})`;
    if (n.ready === false) return "not ready";
    return undefined;
  };
  const others = before.nodes.filter((n) => n.nodeId !== holder);
  if (!others.some((n) => why(n) === undefined)) {
    const reasons = others.map((n) => `${n.nodeId} is ${why(n)}`).join(", ");
    throw new Error(
      `no node can take over from ${holder}: ${reasons || "it is the only node"}; nothing was changed`,
    );
  }
  await sendNodeCommand(c.store, fleetId, holder, "yield");
  say(
    `asked ${holder} (token ${before.lease.token}) to hand over; waiting for a standby to take the lease...`,
  );
  const lease = new DynamoLeaseStore(c.store, fleetId);
  const taken = await waitFor(timeoutMs, async () => {
    const l = await lease.get("fleet");
    return l?.holder && l.holder !== holder ? l : undefined;
  });
  if (!taken?.holder) {
    throw new Error(
      `${holder} still holds the lease after ${timeoutMs / 1000} s: is it paused? (hafleet status)`,
    );
  }
  say(`${taken.holder} took over the lease (token ${taken.token})`);
  const shared = before.elasticIps.filter((a) => a.desiredOwner !== null);
  const moved = await waitFor(timeoutMs, async () => {
    const now = await fleetStatus(c.store, c.elasticIps, fleetId);
    const on = now.elasticIps.filter((a) => shared.some((s) => s.allocationId === a.allocationId));
    return on.every((a) => a.node === taken.holder) ? on : undefined;
  });
  if (!moved) {
    throw new Error(
      `${taken.holder} holds the lease, but the Elastic IP is not on it after ${timeoutMs / 1000} s`,
    );
  }
  for (const a of moved) say(`Elastic IP ${a.publicIp} is on ${taken.holder}`);
}

export function program(): Command {
  const cli = new Command()
    .name("hafleet")
    .description("highly available load-balancer fleets on AWS")
    .version(VERSION)
    .exitOverride();
  const fleetOpt = ["--fleet <id>", "fleet id", fleetIdFlag, "local"] as const;
  const modeOpt = () =>
    new Option("--mode <mode>", "failover mode")
      .choices(["active-passive", "active-active"])
      .default("active-passive");

  const local = cli.command("local").description("the whole system on this machine, on an AWS emulator");
  local
    .command("up")
    .description(
      "start the local fleet: emulator, tables, nodes, backends, health checker, network fabric; Ctrl-C stops it",
    )
    .option(...fleetOpt)
    .option("--nodes <n>", "nodes in the fleet (default: 2, or 3 in active-active)", intFlag(1, 9))
    .option("--port <port>", "HTTP listener port on the Elastic IP and the nodes", intFlag(1, 65535), 8080)
    .addOption(modeOpt())
    .option("--verbose", "print the nodes' log lines")
    .action(async (o: { fleet: string; nodes?: number; port?: number; mode: Mode; verbose?: boolean }) => {
      const fleet = new LocalFleet({
        fleetId: o.fleet,
        nodes: o.nodes ?? (o.mode === "active-active" ? 3 : 2),
        mode: o.mode,
        // Both kinds of address and the weighted set, whatever the mode: a
        // `config put` that switches the mode then has what the other needs.
        dns: true,
        ...(o.port ? { port: o.port } : {}),
        log: (l) => process.stdout.write(`${l}\n`),
        ...(o.verbose
          ? { onNodeLog: (id: string, l: string) => process.stdout.write(`[${id}] ${l}\n`) }
          : {}),
      });
      let stopping = false;
      const watching = new AbortController();
      const stop = () => {
        if (stopping) return;
        stopping = true;
        watching.abort();
        process.stdout.write("\nstopping the local fleet...\n");
        fleet.down().then(() => process.exit(0));
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
      try {
        await fleet.up();
        await fleet.serveControl();
      } catch (err) {
        await fleet.down();
        throw err;
      }
      const active = await fleet.activeNode();
      const own = (n: (typeof fleet.nodes)[number]) => (n.own ? ` public ${n.own.publicIp}` : "");
      const weights = fleet.zone ? JSON.stringify(await fleet.weights()) : "";
      process.stdout.write(
        [
          "",
          `local fleet '${fleet.fleetId}' (${fleet.mode}) is up.`,
          `  send traffic to:  ${fleet.url}   (the shared Elastic IP; try: curl -i ${fleet.url}/)`,
          ...(fleet.zone
            ? [
                `  weighted set:     ${fleet.dnsName} (zone ${fleet.zone.zoneId}, TTL ${fleet.ttlS} s) ${weights}`,
              ]
            : []),
          ...(fleet.dnsServer
            ? [
                `  DNS for it:       dig @127.0.0.1 -p ${fleet.dnsServer.port} ${fleet.dnsName} +short`,
                `                    curl --resolve ${fleet.dnsName}:${fleet.port}:$(dig @127.0.0.1 -p ${fleet.dnsServer.port} ${fleet.dnsName} +short) http://${fleet.dnsName}:${fleet.port}/`,
              ]
            : []),
          `  lease holder:     ${active?.nodeId ?? "(electing)"}`,
          `  nodes:            ${fleet.nodes.map((n) => `${n.nodeId} ${n.address}${own(n)} admin :${n.adminPort}`).join("; ")}`,
          `  emulator:         ${fleet.endpoint}`,
          "  in another terminal: npx hafleet status | npx hafleet kill node-1 | npx hafleet local start node-1 | npx hafleet failover",
          "Ctrl-C stops everything.",
          "",
        ].join("\n"),
      );
      await followFleet(new StateStore({ tables: fleet.tables }), fleet.fleetId, watching.signal);
      await new Promise(() => {}); // until Ctrl-C
    });

  for (const [verb, what] of [
    ["start", "start a local node whose process has exited (killed, drained); returns when it is ready"],
    ["restart", "stop a local node gracefully (SIGTERM: hand over, drain) and start it again"],
  ] as const) {
    local
      .command(`${verb} <node>`)
      .description(what)
      .option(...fleetOpt)
      .action((node: string, o: { fleet: string }) => controlLocalNode(o.fleet, node, verb));
  }

  cli
    .command("status")
    .description("nodes, roles, heartbeat age, lease holder and token, Elastic IP owner, backend health")
    .option(...fleetOpt)
    .option("--json", "one JSON document")
    .action(async (o: { fleet: string; json?: boolean }) => {
      const c = await connect(o.fleet);
      try {
        const s = await fleetStatus(c.store, c.elasticIps, o.fleet);
        if (s.nodes.length === 0 && !s.lease && s.elasticIps.length === 0 && s.dns.length === 0) {
          throw new Error(
            `fleet '${o.fleet}' has no nodes, lease, addresses or records in table ${c.store.tables.state}: ` +
              "is --fleet the fleet's id?",
          );
        }
        process.stdout.write(o.json ? `${JSON.stringify(s)}\n` : `${renderStatus(s)}\n`);
      } finally {
        c.close();
      }
    });

  for (const [name, signal, verb, what] of [
    ["kill", "SIGKILL", "killed", "kill a local node's process at once (SIGKILL)"],
    ["pause", "SIGSTOP", "paused", "freeze a local node's process (SIGSTOP), as a long GC pause would"],
    ["resume", "SIGCONT", "resumed", "resume a paused local node (SIGCONT)"],
  ] as const) {
    cli
      .command(`${name} <node>`)
      .description(what)
      .option(...fleetOpt)
      .action((node: string, o: { fleet: string }) => signalNode(o.fleet, node, signal, verb));
  }
  cli
    .command("drain <node>")
    .description(
      "gracefully take a node out: it hands its lease over at once, finishes in-flight requests and exits",
    )
    .option(...fleetOpt)
    .option(
      "--timeout-s <s>",
      "how long to wait for it to stop (default: its drain time and DNS wait)",
      intFlag(1, 3600),
    )
    .action((node: string, o: { fleet: string; timeoutS?: number }) => drain(o.fleet, node, o.timeoutS));
  cli
    .command("failover")
    .description("make the active node hand the lease (and the Elastic IP) to a standby now")
    .option(...fleetOpt)
    .option("--timeout-s <s>", "how long to wait for the takeover", intFlag(1, 600), 30)
    .action(async (o: { fleet: string; timeoutS: number }) => {
      const c = await connect(o.fleet);
      try {
        await failover(c, o.fleet, o.timeoutS * 1000);
      } finally {
        c.close();
      }
    });

  const config = cli.command("config").description("the fleet's configuration in the store");
  config
    .command("get")
    .description(
      "print the stored config as YAML, which `config put` takes back (its version goes to stderr)",
    )
    .option(...fleetOpt)
    .option("--json", "the version, its author and time, and the config, as one JSON document")
    .action(async (o: { fleet: string; json?: boolean }) => {
      const c = await connect(o.fleet);
      try {
        const stored = await new ConfigStore(c.store, o.fleet).get();
        if (!stored) throw new Error(`fleet '${o.fleet}' has no config yet: hafleet config put <file>`);
        if (o.json) {
          const { version, updatedBy, updatedAtMs, config } = stored;
          const updatedAt = new Date(updatedAtMs).toISOString();
          process.stdout.write(`${JSON.stringify({ version, updatedBy, updatedAt, config }, null, 2)}\n`);
          return;
        }
        process.stderr.write(
          `fleet '${o.fleet}' config version ${stored.version}, written ${new Date(stored.updatedAtMs).toISOString()} by ${stored.updatedBy}\n`,
        );
        process.stdout.write(configYaml(stored.config));
      } finally {
        c.close();
      }
    });
  config
    .command("validate <file>")
    .description("check a YAML or JSON config file, offline: every bad field with its path (and line)")
    .action(async (file: string) => {
      const doc = await loadFleetConfigFile(file);
      const pools = Object.keys(doc.pools).length;
      process.stdout.write(
        `${file}: a valid fleet config (${doc.listeners.length} listener${doc.listeners.length === 1 ? "" : "s"}, ` +
          `${pools} pool${pools === 1 ? "" : "s"}, ${doc.failover.mode})\n`,
      );
    });
  config
    .command("diff <file>")
    .description(
      "what `config put FILE` would change: a unified diff from the stored config, defaults filled in",
    )
    .option(...fleetOpt)
    .option("--exit-code", "exit 1 when there are differences (as git diff --exit-code)")
    .action(async (file: string, o: { fleet: string; exitCode?: boolean }) => {
      const doc = await loadFleetConfigFile(file);
      const c = await connect(o.fleet);
      try {
        const stored = await new ConfigStore(c.store, o.fleet).get();
        const from = stored
          ? `fleet '${o.fleet}' version ${stored.version}`
          : `fleet '${o.fleet}' (no config yet)`;
        const patch = configDiff(stored?.config, doc, { from, to: file });
        if (patch === "") {
          process.stdout.write(`${file} is the same as ${from}\n`);
          return;
        }
        process.stdout.write(patch.endsWith("\n") ? patch : `${patch}\n`);
        if (o.exitCode) process.exitCode = 1;
      } finally {
        c.close();
      }
    });
  config
    .command("put <file>")
    .description(
      "validate a YAML or JSON file and write it as the next version (nothing is written if it is invalid)",
    )
    .option(...fleetOpt)
    .option(
      "--expect-version <n>",
      "fail unless the stored version is this one",
      intFlag(0, Number.MAX_SAFE_INTEGER),
    )
    .action(async (file: string, o: { fleet: string; expectVersion?: number }) => {
      const doc = await loadFleetConfigFile(file);
      const c = await connect(o.fleet);
      try {
        const cs = new ConfigStore(c.store, o.fleet);
        const current = await cs.get();
        if (doc.failover.mode !== current?.config.failover.mode) {
          const why = modeSwitchRefusal(
            await listNodes(c.store, o.fleet),
            doc.failover.mode,
            c.store.clock.wallMs(),
            staleAfterMs(current?.config.failover.heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs),
          );
          if (why) throw new Error(`${why}: nothing was written`);
        }
        const expectedVersion = o.expectVersion ?? current?.version ?? 0;
        const stored = await cs.put(doc, { expectedVersion, by: `hafleet config put ${file}` });
        process.stdout.write(`fleet '${o.fleet}' config is now version ${stored.version}\n`);
      } finally {
        c.close();
      }
    });

  cli
    .command("demo")
    .description(
      "a bounded tour: start the local fleet, send sticky traffic, SIGKILL a node, print the summary",
    )
    .option("--json", "print the summary as the last line, as JSON")
    .addOption(modeOpt())
    .action(async (o: { json?: boolean; mode: Mode }) => {
      const say = (l: string) => process.stdout.write(`${l}\n`);
      const { summary, ok } =
        o.mode === "active-active" ? await runActiveActiveTour({ say }) : await runTour({ say });
      if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      process.exitCode = ok ? 0 : 1;
    });
  return cli;
}

type Mode = "active-passive" | "active-active";

export async function main(): Promise<void> {
  try {
    await program().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    if (err instanceof InvalidArgumentError) {
      process.stderr.write(`hafleet: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    const message =
      err instanceof HafleetError
        ? `${err.message} [${err.code}]`
        : err instanceof Error
          ? err.message
          : String(err);
    process.stderr.write(`hafleet: ${message}\n`);
    process.exitCode = 1;
  }
}

if (require.main === module) void main();
