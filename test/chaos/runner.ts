/**
 * The chaos runner: runs one fault schedule (`schedule.ts`) against a fresh
 * local fleet on a shared emulator, samples its state meanwhile
 * (`sampler.ts`), heals every fault at the schedule's end, lets the fleet
 * settle (bounded), and judges the observation with the invariants
 * (`invariants.ts`).
 *
 * Faults are made by real means: signals to the nodes' processes (SIGKILL,
 * SIGSTOP, SIGCONT), a fault proxy per node and one for the checker between
 * them and the emulator (refused, hung, throttled calls, lost and late
 * answers), the checker's probe path (`probe-path.ts`), checker invocations
 * ended early or overlapped by a second one, drains through the node's
 * `node#` item, and config writes (a change, a mode switch).
 *
 * Every fleet is three nodes with DNS in both modes (so that a mode switch
 * moves traffic), on loopback block 127.0.77.x, its own fleet id and tables.
 */

import type { FleetConfig } from "../../lib/core/config";
import { ConfigStore } from "../../lib/core/config-store";
import { listEvents } from "../../lib/core/events";
import { sendNodeCommand } from "../../lib/core/heartbeat";
import { DynamoLeaseStore } from "../../lib/core/lease";
import {
  type FaultAction,
  FaultProxy,
  type FaultRequest,
  INTERNAL_ERROR,
  operationOf,
  THROTTLING,
} from "../harness/fault-proxy";
import { LocalFleet, type LocalNode } from "../harness/local-fleet";
import { StickyTraffic } from "../harness/traffic";
import { CHAOS_BOUNDS, CHAOS_TIMING, type ChaosBounds } from "./bounds";
import { checkInvariants, differences, stablePlan, type Violation } from "./invariants";
import {
  downIntervals,
  type Happening,
  liveAt,
  type Mode,
  modeAt,
  type Observation,
  type StateSample,
} from "./observation";
import { Rng } from "./prng";
import { ProbePath } from "./probe-path";
import { Sampler } from "./sampler";
import {
  type Calls,
  CONFIG_CHANGES,
  type FaultKind,
  formatStep,
  generateSchedule,
  type Schedule,
  type Step,
  type Target,
} from "./schedule";

/** How long each run's faults last, and its fleet's size. */
export const CHAOS_RUN = { durationMs: 10_000, nodes: 3, clients: 4, clientIntervalMs: 250 } as const;
/** The third octet of the chaos fleets' node addresses: apart from the local fleet's default. */
const ADDRESS_BLOCK = 77;
/** After the heal, the longest a run waits for the fleet to settle. */
const SETTLE_MAX_MS =
  Math.max(
    CHAOS_BOUNDS.convergeMs,
    CHAOS_BOUNDS.deadWeightMs,
    CHAOS_BOUNDS.leaderlessMs + CHAOS_BOUNDS.probeHealMs,
  ) + 1000;

export interface RunResult {
  readonly seed: number;
  readonly schedule: Schedule;
  /** What each step did when it ran: the node it hit, or why it was skipped. */
  readonly applied: readonly string[];
  readonly violations: readonly Violation[];
  readonly observation: Observation;
  readonly samples: { eip: number; state: number; sessions: number; answers: number; failedReads: number };
  /** Checker invocations that hung past the Lambda's timeout and were abandoned. */
  readonly abandoned: readonly string[];
  /** Node and fleet log lines, for a violation's report. */
  readonly log: readonly string[];
  readonly ms: number;
}

export interface ChaosRunnerOptions {
  /** The emulator every run's fleet uses. */
  readonly endpoint: string;
  readonly durationMs?: number;
  readonly bounds?: ChaosBounds;
  /** Progress lines. */
  readonly say?: (line: string) => void;
}

/** Runs schedules one after another; `setup` once before, `close` once after. */
export class ChaosRunner {
  private readonly probes = new ProbePath();

  constructor(private readonly o: ChaosRunnerOptions) {}

  async setup(): Promise<void> {
    await this.probes.install();
  }

  async close(): Promise<void> {
    await this.probes.uninstall();
  }

  /** The schedule of the run with this seed. */
  schedule(seed: number): Schedule {
    return generateSchedule(seed, {
      durationMs: this.o.durationMs ?? CHAOS_RUN.durationMs,
      nodes: CHAOS_RUN.nodes,
    });
  }

  async run(seed: number): Promise<RunResult> {
    const run = new Run(this.schedule(seed), this.o, this.probes);
    return run.go();
  }
}

type NodeState = "running" | "paused" | "gone" | "draining";

interface OpenFault {
  readonly from: number;
  readonly heal: () => void;
  /** The ground truth it leaves, once its end is known. */
  readonly happenings: (until: number) => Happening[];
  done: boolean;
}

class Run {
  private readonly happenings: Happening[] = [];
  private readonly state = new Map<string, NodeState>();
  private readonly faults: OpenFault[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly seconds: { stop: AbortController; run: Promise<unknown> }[] = [];
  private readonly applied: string[] = [];
  private readonly log: string[] = [];
  private readonly abandoned: string[] = [];
  private readonly rng: Rng;
  private readonly b: ChaosBounds;
  private proxies = new Map<string, FaultProxy>();
  private checkerProxy: FaultProxy | undefined;
  private fleet!: LocalFleet;
  private startedAt = 0;
  private healed = false;

  constructor(
    private readonly schedule: Schedule,
    private readonly o: ChaosRunnerOptions,
    private readonly probes: ProbePath,
  ) {
    // Choices made while running (which standby) have their own stream, so they
    // do not shift with the schedule's.
    this.rng = new Rng(schedule.seed ^ 0x5eed);
    this.b = o.bounds ?? CHAOS_BOUNDS;
  }

  private note(line: string): void {
    this.log.push(`${new Date().toISOString()} ${line}`);
  }

  async go(): Promise<RunResult> {
    const begun = Date.now();
    const s = this.schedule;
    const nodeIds = Array.from({ length: CHAOS_RUN.nodes }, (_, i) => `node-${i + 1}`);
    for (const id of nodeIds) this.proxies.set(id, await new FaultProxy(this.o.endpoint).start());
    this.checkerProxy = await new FaultProxy(this.o.endpoint).start();
    const c = CHAOS_TIMING.checker;
    this.fleet = new LocalFleet({
      fleetId: `chaos-${s.seed.toString(16)}-${Date.now().toString(36)}`,
      nodes: CHAOS_RUN.nodes,
      mode: s.mode,
      dns: true,
      ttlS: 2,
      endpoint: this.o.endpoint,
      addressBlock: ADDRESS_BLOCK,
      nodeEndpoint: (id) => this.proxies.get(id)!.endpoint,
      checkerEndpoint: this.checkerProxy.endpoint,
      checkerIntervalMs: c.intervalMs,
      checkerInvocationMs: c.invocationMs,
      checkerGapMs: c.gapMs,
      checkerSettings: {
        probeTimeoutMs: c.probeTimeoutMs,
        rise: c.rise,
        fall: c.fall,
        checkerLeaseMs: c.checkerLeaseMs,
      },
      onNodeLog: (id, line) => this.note(`[${id}] ${line}`),
      log: (line) => {
        if (line.includes("abandoned")) this.abandoned.push(line);
        this.note(line);
      },
    });
    const f = this.fleet;
    let sampler: Sampler | undefined;
    let traffic: StickyTraffic | undefined;
    try {
      const upAt = Date.now();
      await f.up();
      for (const n of f.nodes) this.started(n, upAt);
      sampler = new Sampler(f);
      sampler.start();
      traffic = new StickyTraffic({
        url: `http://${f.dnsName}:${f.port}`,
        clients: CHAOS_RUN.clients,
        intervalMs: CHAOS_RUN.clientIntervalMs,
        dns: { resolver: f.resolver!, name: f.dnsName },
      });
      traffic.start();
      this.startedAt = Date.now();
      for (const step of s.steps) {
        await sleep(this.startedAt + step.at - Date.now());
        const what = await this.apply(step).catch((err: unknown) => `failed: ${String(err)}`);
        this.applied.push(`${formatStep(step)}: ${what}`);
        this.note(`step ${formatStep(step)}: ${what}`);
      }
      await sleep(this.startedAt + s.durationMs - Date.now());
      const healedAt = await this.heal();
      await this.settle(sampler, healedAt);
      await traffic.stop();
      await sampler.end();
      const endedAt = Date.now();
      const events = (await listEvents(f.store, f.fleetId)).map((e) => ({
        at: Date.parse(e.at),
        kind: e.kind,
        by: e.by,
        token: e.token,
      }));
      const observation: Observation = {
        startedAt: this.startedAt,
        healedAt,
        endedAt,
        initialMode: s.mode,
        nodes: f.nodes.map((n) => ({ nodeId: n.nodeId, instanceId: n.instanceId })),
        happenings: [...this.happenings],
        eip: sampler.eip,
        state: sampler.state,
        sessions: sampler.sessions,
        answers: traffic.outcomes
          .filter((x) => x.ok && x.backend)
          .map((x) => ({ client: x.client, at: x.sentAt, backend: x.backend! })),
        events,
      };
      return {
        seed: s.seed,
        schedule: s,
        applied: this.applied,
        violations: checkInvariants(observation, this.b),
        observation,
        samples: {
          eip: sampler.eip.length,
          state: sampler.state.length,
          sessions: sampler.sessions.length,
          answers: observation.answers.length,
          failedReads: sampler.failures,
        },
        abandoned: this.abandoned,
        log: this.log,
        ms: Date.now() - begun,
      };
    } finally {
      if (!this.healed) await this.heal().catch(() => {});
      await traffic?.stop();
      await sampler?.end();
      for (const n of f.nodes) if (n.child && n.child.exitCode === null) n.child.kill("SIGKILL");
      await f.down().catch((err: unknown) => this.note(`down: ${String(err)}`));
      for (const p of [...this.proxies.values(), this.checkerProxy]) await p?.close();
    }
  }

  /** Records a node's start and watches for its exit. */
  private started(n: LocalNode, at = Date.now()): void {
    this.state.set(n.nodeId, "running");
    this.happenings.push({ at, kind: "start", node: n.nodeId });
    const child = n.child;
    child?.once("exit", () => {
      if (n.child !== child) return;
      this.happenings.push({ at: Date.now(), kind: "exit", node: n.nodeId });
      this.state.set(n.nodeId, "gone");
    });
  }

  private running(): string[] {
    return [...this.state].filter(([, s]) => s === "running").map(([id]) => id);
  }

  /** The fleet lease's holder now, as the emulator says. */
  private holder(): Promise<string | undefined> {
    return new DynamoLeaseStore(this.fleet.store, this.fleet.fleetId)
      .get("fleet")
      .then((l) => l?.holder)
      .catch(() => undefined);
  }

  /** The node a target names now: the lease holder, a standby, or any running node. */
  private async resolve(t: Target): Promise<string | undefined> {
    const running = this.running();
    if (running.length === 0) return undefined;
    const holder = await this.holder();
    if (t === "holder" && holder && running.includes(holder)) return holder;
    const standbys = running.filter((id) => id !== holder);
    if (t === "standby" && standbys.length > 0) return this.rng.pick(standbys);
    return this.rng.pick(running);
  }

  /** Runs `fn` after `ms` unless the run has healed by then. */
  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.healed) fn();
    }, ms);
    this.timers.add(t);
  }

  /** A fault that lasts `forMs` (or until the heal), leaving its ground truth when it ends. */
  private open(
    forMs: number,
    heal: () => void,
    happenings: (from: number, until: number) => Happening[],
  ): void {
    const from = Date.now();
    const fault: OpenFault = { from, heal, happenings: (until) => happenings(from, until), done: false };
    this.faults.push(fault);
    this.later(forMs, () => this.close(fault));
  }

  private close(fault: OpenFault): void {
    if (fault.done) return;
    fault.done = true;
    fault.heal();
    this.happenings.push(...fault.happenings(Date.now()));
  }

  private async apply(step: Step): Promise<string> {
    const f = this.fleet;
    switch (step.kind) {
      case "kill":
      case "pause":
      case "drain": {
        if (this.running().length < 2) return "skipped: it would leave no node up";
        const id = await this.resolve(step.target);
        if (!id) return "skipped: no node running";
        if (step.kind === "kill" || step.kind === "pause")
          this.fail(id, step.kind, step.kind === "pause" ? step.forMs : 0);
        else {
          await sendNodeCommand(f.store, f.fleetId, id, "drain");
          this.state.set(id, "draining");
          this.happenings.push({ at: Date.now(), kind: "drain", node: id });
        }
        return id;
      }
      case "restart": {
        const exited = (n: LocalNode) =>
          !!n.child && (n.child.exitCode !== null || n.child.signalCode !== null);
        const gone = f.nodes.filter((n) => this.state.get(n.nodeId) === "gone" && exited(n));
        if (gone.length === 0) return "skipped: no node has exited";
        const n = this.rng.pick(gone);
        await f.startNode(n);
        this.started(n);
        return n.nodeId;
      }
      case "aws-fault":
        return this.awsFault(step);
      case "probe-cut": {
        const ids = step.target === "all" ? f.nodes.map((n) => n.nodeId) : [await this.resolve(step.target)];
        const cut = ids.filter((id): id is string => id !== undefined);
        if (cut.length === 0) return "skipped: no node running";
        const hosts = cut.map((id) => f.node(id).address);
        this.probes.cutOff(hosts, step.how);
        this.open(
          step.forMs,
          () => this.probes.heal(hosts),
          (from, until) =>
            cut.map((node) => ({ at: from, kind: "probe-cut", node, all: step.target === "all", until })),
        );
        return cut.join(", ");
      }
      case "cascade": {
        if (this.running().length < 3) return "skipped: it needs three nodes up";
        const first = (await this.resolve("holder"))!;
        const slow = step.slowMs > 0 ? this.rng.pick(this.running().filter((id) => id !== first)) : undefined;
        if (slow) {
          const h = this.proxies.get(slow)!.add({
            match: callsMatcher("ec2"),
            action: { kind: "latency", ms: step.slowMs },
          });
          // EC2 alone: the lease and heartbeats are untouched, so it leaves no ground truth.
          this.open(
            this.b.leaderlessMs + step.thenMs + step.slowMs,
            () => h.remove(),
            () => [],
          );
        }
        this.fail(first, step.how, step.forMs);
        void this.afterTakeover(first).then((next) => {
          if (!next) return this.report(step, "then skipped: nobody took over");
          this.later(step.thenMs, () => {
            const up = this.running();
            if (!up.includes(next) || up.length < 2)
              return this.report(step, `then skipped: ${next} is down`);
            this.fail(next, step.how, step.forMs);
            this.report(step, `then ${next}`);
          });
        });
        return slow ? `${first} (${slow}'s EC2 calls slow)` : first;
      }
      case "checker-restart":
        f.restartChecker();
        this.happenings.push({ at: Date.now(), kind: "checker-restart" });
        return "the running invocation ended";
      case "second-checker": {
        const stop = new AbortController();
        const id = `chaos-checker-${this.seconds.length + 1}`;
        const run = f.invoke(f.newChecker(id), step.forMs, stop.signal).then((ended) => {
          if (ended.includes("abandoned")) this.abandoned.push(`${id} ${ended}`);
          this.note(`${id}: ${ended}`);
          this.happenings.push({ at: Date.now(), kind: "checker-restart" });
        });
        this.seconds.push({ stop, run });
        this.happenings.push({ at: Date.now(), kind: "checker-restart" });
        return id;
      }
      case "config-change": {
        const v = await this.updateConfig(CONFIG_CHANGES[step.change]);
        return `version ${v}`;
      }
      case "mode-switch": {
        let to: Mode = "active-passive";
        const v = await this.updateConfig((c) => {
          to = c.failover.mode === "active-active" ? "active-passive" : "active-active";
          return { ...c, failover: { ...c.failover, mode: to } };
        });
        this.happenings.push({ at: Date.now(), kind: "mode", mode: to });
        return `${to} (version ${v})`;
      }
    }
  }

  private async updateConfig(change: (c: FleetConfig) => FleetConfig): Promise<number> {
    const stored = await new ConfigStore(this.fleet.store, this.fleet.fleetId).update(
      (c) => {
        if (!c) throw new Error("the fleet has no config");
        return change(c);
      },
      { by: "chaos" },
    );
    return stored.version;
  }

  private async awsFault(step: Extract<Step, { kind: "aws-fault" }>): Promise<string> {
    let ids: string[] = [];
    let proxies: FaultProxy[];
    if (step.path === "checker") proxies = [this.checkerProxy!];
    else {
      const one = step.path === "node" ? await this.resolve(step.target ?? "any") : undefined;
      ids = step.path === "fleet" ? this.fleet.nodes.map((n) => n.nodeId) : one ? [one] : [];
      if (ids.length === 0) return "skipped: no node running";
      proxies = ids.map((id) => this.proxies.get(id)!);
    }
    const rule = { match: callsMatcher(step.calls), action: faultAction(step.fault, step.ms ?? 0) };
    const handles = proxies.map((p) => p.add(rule));
    const store = step.calls === "all" || step.calls === "dynamodb";
    // Refused, hung, throttled calls never land; lost or late answers do (see `Happening`).
    const lands = step.fault === "drop-answers" || step.fault === "delay";
    this.open(
      step.forMs,
      () => {
        for (const h of handles) h.remove();
      },
      (from, until): Happening[] =>
        step.path === "checker"
          ? [{ at: from, kind: "checker-fault", until }]
          : store
            ? ids.map((node) => ({ at: from, kind: lands ? "store-impaired" : "store-cut", node, until }))
            : [],
    );
    return step.path === "checker" ? "checker" : ids.join(", ");
  }

  /** The node that holds the lease once `from` does not, polled until the leaderless bound; undefined if none. */
  private async afterTakeover(from: string): Promise<string | undefined> {
    const until = Date.now() + this.b.leaderlessMs;
    while (Date.now() < until && !this.healed) {
      const h = await this.holder();
      if (h && h !== from) return h;
      await sleep(100);
    }
    return undefined;
  }

  private report(step: Step, what: string): void {
    this.applied.push(`${formatStep(step)}: ${what}`);
    this.note(`${formatStep(step)}: ${what}`);
  }

  /** SIGKILL, or SIGSTOP with a SIGCONT `forMs` later. */
  private fail(id: string, how: "kill" | "pause", forMs: number): void {
    if (how === "kill") {
      this.fleet.signal(id, "SIGKILL");
      this.state.set(id, "gone");
      this.happenings.push({ at: Date.now(), kind: "kill", node: id });
      return;
    }
    this.fleet.signal(id, "SIGSTOP");
    this.state.set(id, "paused");
    this.happenings.push({ at: Date.now(), kind: "pause", node: id });
    this.later(forMs, () => this.resume(id));
  }

  private resume(id: string): void {
    if (this.state.get(id) !== "paused") return;
    this.fleet.signal(id, "SIGCONT");
    this.state.set(id, "running");
    this.happenings.push({ at: Date.now(), kind: "resume", node: id });
  }

  /** Ends every fault: rules removed, paths open, paused nodes resumed, second checkers stopped. */
  private async heal(): Promise<number> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const fault of this.faults) this.close(fault);
    for (const p of [...this.proxies.values(), this.checkerProxy]) p?.clear();
    this.probes.heal();
    for (const [id, s] of this.state) if (s === "paused") this.resume(id);
    for (const s of this.seconds) s.stop.abort();
    await Promise.all(this.seconds.map((s) => s.run));
    this.healed = true;
    const at = Date.now();
    this.note("healed");
    return at;
  }

  /**
   * After the heal, waits (at most SETTLE_MAX_MS) until the last samples show
   * the plan in sync and in Route 53, a live leader when a node could lead, and
   * in active-active every down node at weight 0 or past its bound: what the
   * invariants judge the end of a run by.
   */
  private async settle(sampler: Sampler, healedAt: number): Promise<void> {
    // Two samples in a row, each new and taken after the heal: on a loaded
    // machine the sampler lags, and a sample from before the heal (or the
    // same one seen twice) would end the run before the invariants have
    // anything to judge its end by.
    let good = 0;
    let seen: StateSample | undefined;
    while (Date.now() < healedAt + SETTLE_MAX_MS && good < 2) {
      await sleep(250);
      const s = sampler.last;
      if (!s || s === seen || s.at < healedAt) continue;
      seen = s;
      good = this.settled(s) ? good + 1 : 0;
    }
  }

  private settled(s: StateSample): boolean {
    // The same test as the invariant's (`dnsConverges`): a stable plan in sync, matched by the records.
    const plan = stablePlan(s);
    if (!plan || differences(plan, s.records).length > 0) return false;
    const now = Date.now();
    const h = this.happenings;
    const live = this.fleet.nodes.filter((n) => liveAt(h, n.nodeId, now));
    if (live.length > 0 && !(s.lease?.holder && liveAt(h, s.lease.holder, now))) return false;
    if (modeAt(h, this.schedule.mode, now) !== "active-active") return true;
    return this.fleet.nodes.every((n) => {
      const down = downIntervals(h, n.nodeId).find((d) => d.to === Number.POSITIVE_INFINITY);
      return !down || (s.records[n.nodeId]?.weight ?? 0) === 0 || now > down.from + this.b.deadWeightMs + 500;
    });
  }
}

function callsMatcher(calls: Calls): ((req: FaultRequest) => boolean) | undefined {
  if (calls === "all") return undefined;
  const prefix = { dynamodb: "DynamoDB.", ec2: "EC2.", route53: "Route53." }[calls];
  return (req) => operationOf(req.headers, Buffer.from(req.body), req.method, req.url).startsWith(prefix);
}

function faultAction(kind: FaultKind, ms: number): FaultAction {
  switch (kind) {
    case "reset":
      return { kind: "reset" };
    case "hang":
      return { kind: "hang" };
    case "drop-answers":
      return { kind: "drop-response" };
    case "delay":
      return { kind: "latency", ms };
    case "throttle":
      return THROTTLING;
    case "server-error":
      return INTERNAL_ERROR;
  }
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}
