/**
 * The node agent, beside the proxy on every node: registers the node and
 * heartbeats, holds its own Elastic IP (active-active), and, when the fleet has
 * a shared Elastic IP (active-passive), takes part in the fleet lease and makes
 * the lease holder the owner of that address.
 *
 * The agent does not follow `failover.mode`: every node serves on its own
 * address and the holder on the shared one in both modes, and the health
 * checker moves DNS between them. So a switch of mode is one config change
 * and no node stops serving for it.
 *
 * Holding the shared address, for each one, on acquiring the lease
 * (promotion) and again at every heartbeat while leader (repair), each step
 * only while still leader:
 * 1. `vip#<allocationId>` must record {owner: me, instance, token}; when it
 *    does not (a promotion, a write that failed), it is written, fenced: the
 *    write is refused unless the lease still shows this node with this token.
 *    Nothing in the cloud moves before it is recorded;
 * 2. the address must be on this instance; when it is not, AssociateAddress
 *    with AllowReassociation, then read back with DescribeAddresses until it
 *    shows this instance;
 * 3. a move writes an audit event (who, from whom, why, token, how long),
 *    fenced like every other write.
 * The node is active once every address is recorded and on it. A failed step
 * is taken again at the next heartbeat.
 *
 * Every step is a side effect of the holding (`Lease.act`, docs/architecture.md
 * §6): it does not start without the lease, it is aborted at the validity it
 * began under (AssociateAddress in one attempt), and a release (yield, drain,
 * stop, the checker's mark) waits for it. The first move of a new holder waits
 * until no move of the holder before it can still land (`Lease.untilQuiet`),
 * so it is the last. Cloud APIs cannot check a token: anything else (an
 * association made behind the system's back) is repaired within one period.
 *
 * Demotion is immediate: on `lost` the role drops to standby before anything
 * else, and no side effect starts without `lease.isLeader()` being true at that
 * moment. A node marked failed by the health checker (gray failure), whose
 * own data plane failed `dataPlaneFailures` checks in a row, asked to yield,
 * or draining releases the lease and stops contending.
 *
 * Operator commands arrive through the node's own `node#` item (`command`),
 * so they need no network path to the node: `yield` (hand the lease over for
 * a while) and `drain` (hand it over, finish in-flight requests, exit).
 */

import { type Clock, systemClock } from "../lib/core/clock";
import { FAILOVER_DEFAULTS } from "../lib/core/config";
import { type DnsPlan, listDnsPlans } from "../lib/core/dns";
import type { ElasticIpApi } from "../lib/core/elastic-ip";
import { isHafleetError, SettingsError } from "../lib/core/errors";
import { appendEvent, type FleetEvent } from "../lib/core/events";
import { dnsDrainMs, type VipDesired } from "../lib/core/failover";
import { fencedPut } from "../lib/core/fence";
import {
  Heartbeater,
  HeartbeatMonitor,
  listNodes,
  type NodeRecord,
  type NodeReport,
  type NodeRole,
  newerNamesake,
  staleAfterMs,
  writeHeartbeat,
} from "../lib/core/heartbeat";
import type { Lease } from "../lib/core/lease";
import type { StateStore } from "../lib/core/store";
import { keys } from "../lib/core/tables";
import { getVip } from "../lib/core/vip";

export type AgentLog = (
  level: "debug" | "info" | "warn" | "error",
  message: string,
  fields?: Record<string, unknown>,
) => void;

/** What the agent needs from the proxy beside it. */
export interface ProxyHandle {
  /** True once the proxy has a config and its listeners are open. */
  ready(): boolean;
  load(): { connections: number; rps: number };
  /** Stops accepting and finishes in-flight requests. */
  drain(): Promise<void>;
  /** The listeners accept and the workers answer (`/healthz`). @default not checked */
  dataPlaneHealthy?(): Promise<boolean>;
}

/**
 * What the agent reads and writes in the fleet's state. Narrow, like the
 * lease's `LeaseStore`, so that the agent's orderings can be tested on their
 * own (test/harness/memory-agent-store.ts); `DynamoAgentStore` is the real one.
 */
export interface AgentStore {
  /** Writes one heartbeat; returns the stored record (with the checker's mark and operator commands). */
  beat(report: NodeReport): Promise<NodeRecord>;
  listNodes(): Promise<NodeRecord[]>;
  listDnsPlans(): Promise<DnsPlan[]>;
  /** The desired owner as recorded; undefined when nobody recorded one. */
  getVip(allocationId: string): Promise<VipDesired | undefined>;
  /** Records the desired owner, fenced by the fleet lease (docs/architecture.md §6); throws `FencedError`. */
  putVip(vip: VipDesired, deadlineMs?: number): Promise<void>;
  /** Writes an audit event, fenced by the lease it names like every other write (`by` and `token`). */
  appendEvent(event: FleetEvent, deadlineMs?: number): Promise<void>;
}

/** `AgentStore` on the `State` table, for one node of one fleet. */
export class DynamoAgentStore implements AgentStore {
  constructor(
    private readonly store: StateStore,
    private readonly fleetId: string,
    private readonly nodeId: string,
    private readonly heartbeatMs = 1000,
  ) {}

  beat(report: NodeReport): Promise<NodeRecord> {
    return writeHeartbeat(this.store, this.fleetId, this.nodeId, report, { periodMs: this.heartbeatMs });
  }

  listNodes(): Promise<NodeRecord[]> {
    return listNodes(this.store, this.fleetId);
  }

  listDnsPlans(): Promise<DnsPlan[]> {
    return listDnsPlans(this.store, this.fleetId);
  }

  getVip(allocationId: string): Promise<VipDesired | undefined> {
    return getVip(this.store, this.fleetId, allocationId);
  }

  putVip(vip: VipDesired, deadlineMs?: number): Promise<void> {
    return fencedPut(this.store, {
      deadlineMs,
      fleetId: this.fleetId,
      sk: keys.vip(vip.allocationId),
      token: vip.token,
      attrs: {
        kind: "vip",
        allocationId: vip.allocationId,
        owner: vip.owner,
        instanceId: vip.instanceId,
        at: this.store.clock.wallMs(),
      },
      lease: { name: "fleet", holder: this.nodeId },
    });
  }

  async appendEvent(event: FleetEvent, deadlineMs?: number): Promise<void> {
    await appendEvent(this.store, this.fleetId, event, { deadlineMs });
  }
}

export interface NodeAgentOptions {
  /** The fleet's state as this node sees it (heartbeats, `vip#`, events). */
  readonly store: AgentStore;
  /** This node's contender for the fleet lease: name `fleet`, holder id the node id. */
  readonly lease: Lease;
  readonly nodeId: string;
  /**
   * The node's stable name (`node-0` on EC2), shared with its replacement: the newer live node
   * of a name holds the name's own Elastic IP. @default the node id
   */
  readonly name?: string;
  /** EC2 instance id of this node (in local mode, the emulator's). */
  readonly instanceId: string;
  /** The address the node's listeners are bound to. */
  readonly address: string;
  readonly adminUrl: string;
  readonly zone?: string;
  readonly version: string;
  readonly elasticIps: ElasticIpApi;
  /** The fleet's shared Elastic IP(s), owned by the lease holder; none: no lease contest. */
  readonly allocationIds: readonly string[];
  /** This node's own Elastic IP (active-active's weighted record points at it). */
  readonly ownAllocationId?: string;
  /** @default 1000 */
  readonly heartbeatMs?: number;
  /** After yielding, stay out of the contest this long so another node takes over. @default 2 x the lease's leaseMs */
  readonly yieldMs?: number;
  /**
   * With an own address: how long a drain may wait for the node's weighted
   * records to reach 0 and their TTL to pass, serving meanwhile.
   * @default dnsDrainMs(10): the default TTL's
   */
  readonly dnsDrainMs?: number;
  readonly proxy: ProxyHandle;
  /** Failed data-plane checks in a row (one per heartbeat) after which the node steps down. @default 3 */
  readonly dataPlaneFailures?: number;
  /** Told of every change of role (the admin endpoint reports it). */
  readonly onRole?: (role: NodeRole) => void;
  readonly log?: AgentLog;
  readonly clock?: Clock;
}

export class NodeAgent {
  readonly lease: Lease;
  private readonly heartbeater: Heartbeater;
  private readonly o: NodeAgentOptions;
  private readonly clock: Clock;
  private readonly log: AgentLog;
  private roleNow: NodeRole = "starting";
  private draining = false;
  private failedMark = false;
  private dataPlaneFailed = 0;
  private yieldUntilMs = 0;
  private lastCommand: string | undefined;
  /** The run of `holdAddresses` under way (a promotion or a repair): one at a time. */
  private holding: Promise<void> | undefined;
  /** The lease's previous holder, for the audit trail of the first move under the new token. */
  private tookOverFrom: string | undefined;
  /** The token under which this node moved a shared address first: later moves are repairs. */
  private movedUnder: number | undefined;
  /** Whether this node reports itself active under a token is decided once per holding. */
  private activeUnder: number | undefined;
  /** Ends the wait for the yield window to close (a new yield or a stop). */
  private yieldWait: AbortController | undefined;
  private readonly pending = new Set<Promise<unknown>>();
  /** True when the fleet has a shared address: the lease decides who holds it. */
  private readonly shared: boolean;
  /** The public address of this node's own Elastic IP, once read. */
  private publicIp: string | undefined;
  /** When the own address was last seen on this instance: re-read every 10 s, not every beat. */
  private ownSeenAtMs = Number.NEGATIVE_INFINITY;
  /** The newer namesake found holding the own address, while it does (logged once; checked every beat). */
  private replacedBy: string | undefined;
  /** Judges the other nodes' heartbeats, for whether a newer namesake is live. */
  private readonly monitor: HeartbeatMonitor;

  constructor(options: NodeAgentOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.log = options.log ?? (() => {});
    this.shared = options.allocationIds.length > 0;
    const { name, holderId } = options.lease.settings;
    if (name !== "fleet" || holderId !== options.nodeId) {
      throw new SettingsError(
        `\`lease\` must be the fleet lease of node '${options.nodeId}' (name 'fleet', holderId '${options.nodeId}'), got name '${name}', holderId '${holderId}'`,
      );
    }
    this.lease = options.lease;
    this.monitor = new HeartbeatMonitor(
      { staleMs: staleAfterMs(options.heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs) },
      this.clock,
    );
    this.heartbeater = new Heartbeater({
      write: (report) => options.store.beat(report),
      periodMs: options.heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs,
      clock: this.clock,
      report: () => ({
        address: options.address,
        adminUrl: options.adminUrl,
        role: this.roleNow,
        drain: this.draining,
        load: options.proxy.load(),
        version: options.version,
        instanceId: options.instanceId,
        ...(options.name ? { name: options.name } : {}),
        ...(options.zone ? { zone: options.zone } : {}),
        ...(this.publicIp ? { publicIp: this.publicIp } : {}),
      }),
      onBeat: (record) => this.track(this.onBeat(record)),
      onError: (err) => this.log("warn", "heartbeat failed", { error: String(err) }),
    });
    this.lease.on("acquired", (e) => {
      this.log("info", "acquired the fleet lease", { token: e.token, from: e.tookOverFrom });
      this.tookOverFrom = e.tookOverFrom;
      // After a run for an earlier holding (it stops at its next step): one run at a time.
      const before = this.holding ?? Promise.resolve();
      const run = this.track(before.then(() => this.holdAddresses(e.token)));
      this.holding = run;
      void run.finally(() => {
        if (this.holding === run) this.holding = undefined;
      });
    });
    this.lease.on("lost", (e) => {
      // Demote first: no side effect may start from here on.
      this.setRole(this.draining ? "draining" : "standby");
      this.log("warn", "lost the fleet lease", { token: e.token, reason: e.reason });
    });
    this.lease.on("released", (e) => {
      this.setRole(this.draining ? "draining" : "standby");
      this.log("info", "released the fleet lease", { token: e.token });
    });
  }

  get role(): NodeRole {
    return this.roleNow;
  }

  /** Takes its own address, registers the node, starts heartbeats and (shared address) the lease contest. */
  async start(): Promise<void> {
    this.setRole(this.shared ? "standby" : "serving");
    await this.ensureOwnAddress();
    await this.heartbeater
      .beat()
      .catch((err: unknown) => this.log("warn", "first heartbeat failed", { error: String(err) }));
    this.heartbeater.start();
    if (this.shared) {
      await this.lease.setEligible(this.eligible());
      this.lease.start();
    }
  }

  /**
   * An operator's drain: hands the lease over, keeps serving until traffic
   * has moved away (`leaveTraffic`), then drains the proxy; the node stays up
   * but serves nothing new.
   */
  async drain(): Promise<void> {
    if (this.draining) return;
    const wasActive = this.shared && this.lease.isLeader();
    this.draining = true;
    this.setRole("draining");
    await this.heartbeater.beat().catch(() => {});
    await this.lease.setEligible(false);
    await this.leaveTraffic(wasActive);
    await this.o.proxy.drain();
  }

  /**
   * After the lease was handed over: waits (at most `handoverMs`) until the
   * Elastic IP has moved away and then `propagationMs` more, so that no new
   * connection reaches a closed listener; with an own address, waits to
   * leave DNS (`awaitOutOfDns`). docs/architecture.md §5.3.
   */
  private async leaveTraffic(
    wasActive: boolean,
    options: { handoverMs?: number; propagationMs?: number } = {},
  ): Promise<void> {
    if (wasActive && (await this.awaitHandover(options.handoverMs ?? 3000))) {
      // The network applies a re-association a little after EC2 reports it:
      // keep accepting for a moment (as ELB's deregistration delay does), so
      // connections still on their way here are served, not reset.
      await this.clock.sleep(options.propagationMs ?? 1000);
    }
    if (this.o.ownAllocationId) await this.awaitOutOfDns(this.o.dnsDrainMs ?? dnsDrainMs(10));
  }

  /**
   * Graceful shutdown: release the lease so the standby takes over at once,
   * keep serving until traffic has moved away (`leaveTraffic`), then drain
   * and send a last heartbeat.
   */
  async stop(options: { handoverMs?: number; propagationMs?: number } = {}): Promise<void> {
    const wasActive = this.shared && this.lease.isLeader();
    this.yieldWait?.abort();
    this.draining = true;
    this.setRole("draining");
    // Tell the checker now, not at the next beat: it takes a draining node out of DNS.
    await this.heartbeater.beat().catch(() => {});
    await this.lease.stop({ release: true });
    await this.leaveTraffic(wasActive, options);
    await this.o.proxy.drain();
    this.setRole("stopped");
    await this.heartbeater.stop();
    await this.heartbeater.beat().catch(() => {});
    await Promise.allSettled([...this.pending]);
  }

  /**
   * Active-active's deregistration delay: serves until every weighted record
   * of this node is at 0 in Route 53 (the checker's `dns#` items say so, with
   * `syncedAt`) and the records' TTL has passed since, so that no client still
   * holds this address from an answer. Returns at once when no weighted set
   * names this node, no other node serves, or its weight was already 0 a TTL
   * ago; gives up after `maxWaitMs`.
   */
  private async awaitOutOfDns(maxWaitMs: number): Promise<void> {
    const deadline = this.clock.nowMs() + maxWaitMs;
    const started = this.clock.nowMs();
    for (;;) {
      const plans = await this.o.store.listDnsPlans().catch((err: unknown) => {
        this.log("warn", "could not read the DNS weights", { error: String(err) });
        return undefined;
      });
      // The records this node stands for: by endpoint (its name), with its id when they differ.
      const mine = (plans ?? []).flatMap((p) =>
        Object.entries(p.weights)
          .filter(([endpoint, w]) => (w.nodeId ?? endpoint) === this.o.nodeId)
          .map(([, w]) => ({ weight: w.weight, ttlS: p.ttlS, syncedAt: p.syncedAt })),
      );
      if (plans && mine.length === 0) return; // no weighted set names this node
      if (!(await this.anotherNodeServes())) {
        // The whole fleet is stopping (or this is the last node): no one to send clients to,
        // and the checker keeps a last node's weight (fail open). Waiting would help no one.
        this.log("info", "no other node serves: draining without waiting to leave DNS");
        return;
      }
      if (plans && mine.every((r) => r.weight === 0 && r.syncedAt !== undefined)) {
        // `syncedAt`: when Route 53 served the checker's last plan of the set, at or after the
        // one that took this node to 0. A TTL from it, and no cached answer names this node.
        // One more second for the resolvers between (an answer fetched as the change lands).
        const cachedUntil = Math.max(...mine.map((r) => r.syncedAt! + r.ttlS * 1000)) + 1000;
        const waitMs = Math.min(cachedUntil - this.clock.wallMs(), deadline - this.clock.nowMs());
        if (waitMs > 0) {
          this.log("info", `out of DNS: serving ${Math.round(waitMs)} ms more, until cached answers expire`, {
            waitedMs: Math.round(this.clock.nowMs() - started),
          });
          await this.clock.sleep(waitMs);
        }
        return;
      }
      if (this.clock.nowMs() + 250 > deadline) {
        this.log("warn", `still in DNS after ${maxWaitMs} ms: draining anyway`);
        return;
      }
      await this.clock.sleep(250);
    }
  }

  /** Whether another node heartbeats and serves (not draining or stopped); true when it cannot tell. */
  private async anotherNodeServes(): Promise<boolean> {
    // Stale as the checker judges it, plus a second: it compares another node's wall clock with this one's.
    const freshMs = staleAfterMs(this.o.heartbeatMs ?? FAILOVER_DEFAULTS.heartbeatMs) + 1000;
    const nodes = await this.o.store.listNodes().catch(() => undefined);
    if (!nodes) return true;
    return nodes.some(
      (n) =>
        n.nodeId !== this.o.nodeId &&
        !n.drain &&
        n.role !== "draining" &&
        n.role !== "stopped" &&
        this.clock.wallMs() - n.heartbeatAtMs < freshMs,
    );
  }

  /** True once every Elastic IP shows another instance; false after `handoverMs`. */
  private async awaitHandover(handoverMs: number): Promise<boolean> {
    const deadline = this.clock.nowMs() + handoverMs;
    while (this.clock.nowMs() < deadline) {
      const states = await Promise.all(
        this.o.allocationIds.map((id) => this.o.elasticIps.describe(id).catch(() => undefined)),
      );
      if (states.every((a) => a && a.instanceId !== this.o.instanceId)) {
        this.log("info", "the Elastic IP has moved to the new active: draining after the propagation delay");
        return true;
      }
      await this.clock.sleep(100);
    }
    this.log("warn", `the Elastic IP did not move within ${handoverMs} ms: draining anyway`);
    return false;
  }

  private eligible(): boolean {
    return (
      this.o.proxy.ready() &&
      !this.draining &&
      !this.failedMark &&
      this.dataPlaneFailed < (this.o.dataPlaneFailures ?? 3) &&
      this.clock.nowMs() >= this.yieldUntilMs
    );
  }

  private setRole(role: NodeRole): void {
    if (role === this.roleNow) return;
    this.roleNow = role;
    this.o.onRole?.(role);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    p.finally(() => this.pending.delete(p)).catch(() => {});
    return p;
  }

  private async onBeat(record: NodeRecord): Promise<void> {
    const command = record.command;
    if (command && command.id !== this.lastCommand) {
      this.lastCommand = command.id;
      this.log("info", `operator command: ${command.kind}`, { id: command.id });
      if (command.kind === "yield") {
        const yieldMs = this.o.yieldMs ?? 2 * this.lease.settings.leaseMs;
        this.yieldUntilMs = this.clock.nowMs() + yieldMs;
        // Contend again the moment the window ends, not at the next heartbeat: a
        // graceful handover by another node may be waiting for this one.
        this.yieldWait?.abort();
        const wait = new AbortController();
        this.yieldWait = wait;
        this.track(
          this.clock.sleep(yieldMs + 1, wait.signal).then(async () => {
            if (wait.signal.aborted) return;
            if (this.shared) await this.lease.setEligible(this.eligible());
          }),
        );
        await this.lease.setEligible(false);
      } else if (command.kind === "drain") {
        await this.drain();
      }
    }
    const failed = !!record.failed;
    if (failed !== this.failedMark) {
      this.failedMark = failed;
      this.log(
        failed ? "warn" : "info",
        failed ? "marked failed by the health checker: stepping down" : "failed mark cleared",
        {
          reason: record.failed?.reason,
        },
      );
    }
    await this.checkDataPlane();
    await this.ensureOwnAddress();
    if (!this.shared) return;
    await this.lease.setEligible(this.eligible());
    const token = this.lease.token;
    if (token !== undefined && !this.holding) {
      const run = this.holdAddresses(token);
      this.holding = run;
      await run.finally(() => {
        if (this.holding === run) this.holding = undefined;
      });
    }
  }

  /** Counts failed data-plane checks in a row: at the limit the node is not eligible (releases the lease). */
  private async checkDataPlane(): Promise<void> {
    if (!this.o.proxy.dataPlaneHealthy) return;
    const ok = await this.o.proxy.dataPlaneHealthy().catch(() => false);
    const limit = this.o.dataPlaneFailures ?? 3;
    const before = this.dataPlaneFailed;
    this.dataPlaneFailed = ok ? 0 : before + 1;
    if (this.dataPlaneFailed === limit)
      this.log("warn", `data plane failed ${limit} checks in a row: stepping down`);
    if (ok && before >= limit) this.log("info", "data plane healthy again: contending");
  }

  /**
   * Associates this node's own Elastic IP with its instance when it is not
   * (at start, then every 10 s at a heartbeat, and every beat while a newer
   * namesake holds it); a no-op without `ownAllocationId`. The address
   * belongs to the node's name, and only nodes of that name take it, so no
   * lease is needed. Of two namesakes (a replacement and the node it
   * replaces, both up for a while), the newer live one holds it: this node
   * stops claiming the address once such a node has it, and takes it back
   * only when that node is no longer live (docs/architecture.md §5.2).
   */
  private async ensureOwnAddress(): Promise<void> {
    const id = this.o.ownAllocationId;
    if (!id || this.clock.nowMs() - this.ownSeenAtMs < 10_000) return;
    try {
      const now = await this.o.elasticIps.describe(id);
      this.publicIp = now.publicIp || this.publicIp;
      if (now.instanceId === this.o.instanceId) {
        this.ownSeenAtMs = this.clock.nowMs();
        this.replacedBy = undefined;
        return;
      }
      const newer = now.instanceId ? await this.newerHolder(now.instanceId) : undefined;
      if (newer) {
        // Looked at again next beat, not in 10 s: should the newer node die, the address is on a
        // dead instance until this one takes it back.
        if (this.replacedBy !== newer.nodeId)
          this.log(
            "info",
            `own Elastic IP ${id} is held by ${newer.nodeId}, a newer node named ${newer.name}: not claiming it`,
            {
              instanceId: now.instanceId,
            },
          );
        this.replacedBy = newer.nodeId;
        return;
      }
      this.replacedBy = undefined;
      const moved = await this.o.elasticIps.moveTo(id, this.o.instanceId);
      this.ownSeenAtMs = this.clock.nowMs();
      this.log("info", `own Elastic IP ${id} (${this.publicIp}) now on ${this.o.instanceId}`, {
        ms: Math.round(moved.elapsedMs),
      });
    } catch (err) {
      this.log("error", `could not take own Elastic IP ${id}`, { error: String(err) });
    }
  }

  /**
   * The live node of this node's name that started after it and is on
   * `instanceId`, if any. This node's start is as its own item records it (a
   * restart of its process keeps it); without one yet, it is the newest.
   */
  private async newerHolder(instanceId: string): Promise<NodeRecord | undefined> {
    const nodes = await this.o.store.listNodes();
    const live = new Map(this.monitor.observe(nodes).map((l) => [l.nodeId, l.state !== "dead"]));
    const self = nodes.find((n) => n.nodeId === this.o.nodeId);
    if (!self) return undefined;
    const newer = newerNamesake(self, nodes, (n) => live.get(n.nodeId) === true);
    return newer?.instanceId === instanceId ? newer : undefined;
  }

  /**
   * Steps 1-3 for every shared address under the holding with `token`; the
   * node becomes active once all of them are recorded and on it. A step that
   * failed is taken again by the next heartbeat's run.
   */
  private async holdAddresses(token: number): Promise<void> {
    const started = this.clock.nowMs();
    let held = 0;
    for (const allocationId of this.o.allocationIds) {
      if (this.lease.token !== token) return; // lost meanwhile: no side effect
      try {
        await this.holdAddress(allocationId, token);
        held++;
      } catch (err) {
        // Fenced, or the lease lost or handed over: this holding is over, and so is the run.
        const over = isHafleetError(err, "HAFLEET_FENCED") || isHafleetError(err, "HAFLEET_LEASE_LOST");
        this.log(over ? "warn" : "error", `could not hold Elastic IP ${allocationId}`, {
          token,
          error: String(err),
        });
        if (over) return;
      }
    }
    if (held === this.o.allocationIds.length && this.lease.token === token && this.activeUnder !== token) {
      this.activeUnder = token;
      this.setRole("active");
      this.log("info", "active", { token, ms: Math.round(this.clock.nowMs() - started) });
    }
  }

  private async holdAddress(allocationId: string, token: number): Promise<void> {
    // 1. The decision first, fenced, whenever the store does not record it (docs/architecture.md §6).
    const recorded = await this.o.store.getVip(allocationId);
    if (
      recorded?.owner !== this.o.nodeId ||
      recorded.instanceId !== this.o.instanceId ||
      recorded.token !== token
    ) {
      await this.lease.act(
        (h) =>
          this.o.store.putVip(
            { allocationId, owner: this.o.nodeId, instanceId: this.o.instanceId, token: h.token },
            h.remainingMs(),
          ),
        { token },
      );
      if (this.activeUnder === token)
        this.log("warn", `vip# of ${allocationId} did not record this node: recorded it again`, { token });
    }
    // 2. Then the cloud, only when it differs, and only once no deposed holder's move can still land:
    // read it after that, so that such a move is not taken for this node's own.
    await this.lease.untilQuiet(token);
    const now = await this.o.elasticIps.describe(allocationId);
    if (now.instanceId === this.o.instanceId) return;
    const moved = await this.lease.act(
      // The association ends at the validity; its read-back when the holding does, since EC2 may
      // show a move later than a lease stays valid (docs/architecture.md §6).
      (h) =>
        this.o.elasticIps.moveTo(allocationId, this.o.instanceId, {
          signal: h.signal,
          verifySignal: h.ended,
        }),
      { token, unfenced: true },
    );
    // 3. The audit trail. The first move under a token is the takeover; later ones are repairs.
    const first = this.movedUnder !== token;
    this.movedUnder = token;
    const from = first ? this.tookOverFrom : undefined;
    const kind = first ? "vip-moved" : "vip-repaired";
    const reason = first
      ? from
        ? `took over the lease from ${from}`
        : "acquired the free fleet lease"
      : "the Elastic IP was associated elsewhere while this node holds the lease";
    const event = {
      kind,
      lease: "fleet",
      by: this.o.nodeId,
      token,
      reason,
      detail: {
        allocationId,
        instanceId: this.o.instanceId,
        from: from ?? null,
        moveMs: Math.round(moved.elapsedMs),
        verifyReads: moved.verifyReads,
      },
    };
    await this.lease.act((h) => this.o.store.appendEvent(event, h.remainingMs()), { token });
    this.log("info", `Elastic IP ${allocationId} now on ${this.o.instanceId}`, {
      // The audit event's kind; the stack counts "vip-moved" lines with a `from` as takeovers
      // (a log metric filter), so a fleet's first acquisition is no failover.
      event: kind,
      ...(from ? { from } : {}),
      token,
      reason,
      ms: Math.round(moved.elapsedMs),
    });
  }
}
