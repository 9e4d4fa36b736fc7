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
 * Promotion (on acquiring the lease), each step only while still leader:
 * 1. write `vip#<allocationId>` = {owner: me, instance, token}, fenced: the
 *    write is refused unless the lease still shows this node with this token;
 * 2. AssociateAddress with AllowReassociation, then read back with
 *    DescribeAddresses until it shows this instance;
 * 3. write an audit event (who, from whom, why, token, how long).
 * While leader, every heartbeat re-reads the association and repairs it: a
 * stale ex-leader's AssociateAddress that was in flight when it lost the lease
 * is undone within one period (cloud APIs cannot check a token).
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
import { listDnsPlans } from "../lib/core/dns";
import type { ElasticIps } from "../lib/core/elastic-ip";
import { isHafleetError } from "../lib/core/errors";
import { appendEvent } from "../lib/core/events";
import { dnsDrainMs } from "../lib/core/failover";
import { fencedPut } from "../lib/core/fence";
import { Heartbeater, listNodes, type NodeRecord, type NodeRole } from "../lib/core/heartbeat";
import { DynamoLeaseStore, Lease } from "../lib/core/lease";
import type { StateStore } from "../lib/core/store";
import { keys } from "../lib/core/tables";

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

export interface NodeAgentOptions {
  readonly store: StateStore;
  readonly fleetId: string;
  readonly nodeId: string;
  /** EC2 instance id of this node (in local mode, the emulator's). */
  readonly instanceId: string;
  /** The address the node's listeners are bound to. */
  readonly address: string;
  readonly adminUrl: string;
  readonly zone?: string;
  readonly version: string;
  readonly elasticIps: ElasticIps;
  /** The fleet's shared Elastic IP(s), owned by the lease holder; none: no lease contest. */
  readonly allocationIds: readonly string[];
  /** This node's own Elastic IP (active-active's weighted record points at it). */
  readonly ownAllocationId?: string;
  /** @default 2000 */
  readonly leaseMs?: number;
  /** @default 1000 */
  readonly heartbeatMs?: number;
  /** After yielding, stay out of the contest this long so another node takes over. @default 2 x leaseMs */
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
  private promoting: Promise<void> | undefined;
  private yieldTimer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<Promise<unknown>>();
  /** True when the fleet has a shared address: the lease decides who holds it. */
  private readonly shared: boolean;
  /** The public address of this node's own Elastic IP, once read. */
  private publicIp: string | undefined;
  /** When the own address was last seen on this instance: re-read every 10 s, not every beat. */
  private ownSeenAtMs = Number.NEGATIVE_INFINITY;

  constructor(options: NodeAgentOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.log = options.log ?? (() => {});
    this.shared = options.allocationIds.length > 0;
    const leaseMs = options.leaseMs ?? 2000;
    this.lease = new Lease(
      new DynamoLeaseStore(options.store, options.fleetId),
      { name: "fleet", holderId: options.nodeId, leaseMs },
      this.clock,
    );
    this.heartbeater = new Heartbeater({
      store: options.store,
      fleetId: options.fleetId,
      nodeId: options.nodeId,
      periodMs: options.heartbeatMs ?? 1000,
      clock: this.clock,
      report: () => ({
        address: options.address,
        adminUrl: options.adminUrl,
        role: this.roleNow,
        drain: this.draining,
        load: options.proxy.load(),
        version: options.version,
        instanceId: options.instanceId,
        ...(options.zone ? { zone: options.zone } : {}),
        ...(this.publicIp ? { publicIp: this.publicIp } : {}),
      }),
      onBeat: (record) => this.track(this.onBeat(record)),
      onError: (err) => this.log("warn", "heartbeat failed", { error: String(err) }),
    });
    this.lease.on("acquired", (e) => {
      this.log("info", "acquired the fleet lease", { token: e.token, from: e.tookOverFrom });
      this.promoting = this.track(this.promote(e.token, e.tookOverFrom));
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

  /** Drains the proxy and hands the lease over; the node stays up but serves nothing new. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.setRole("draining");
    await this.lease.setEligible(false);
    await this.o.proxy.drain();
  }

  /**
   * Graceful shutdown: release the lease so the standby takes over at once,
   * wait (at most `handoverMs`) until the Elastic IP has moved away and then
   * `propagationMs` more, so that no new connection reaches a closed listener;
   * with an own address, wait to leave DNS (`awaitOutOfDns`); then drain and
   * send a last heartbeat.
   */
  async stop(options: { handoverMs?: number; propagationMs?: number } = {}): Promise<void> {
    const wasActive = this.shared && this.lease.isLeader();
    if (this.yieldTimer) clearTimeout(this.yieldTimer);
    this.draining = true;
    this.setRole("draining");
    // Tell the checker now, not at the next beat: it takes a draining node out of DNS.
    await this.heartbeater.beat().catch(() => {});
    await this.lease.stop({ release: true });
    if (wasActive && (await this.awaitHandover(options.handoverMs ?? 3000))) {
      // The network applies a re-association a little after EC2 reports it:
      // keep accepting for a moment (as ELB's deregistration delay does), so
      // connections still on their way here are served, not reset.
      await this.clock.sleep(options.propagationMs ?? 1000);
    }
    if (this.o.ownAllocationId) await this.awaitOutOfDns(this.o.dnsDrainMs ?? dnsDrainMs(10));
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
      const plans = await listDnsPlans(this.o.store, this.o.fleetId).catch((err: unknown) => {
        this.log("warn", "could not read the DNS weights", { error: String(err) });
        return undefined;
      });
      const mine = (plans ?? [])
        .filter((p) => this.o.nodeId in p.weights)
        .map((p) => ({ weight: p.weights[this.o.nodeId]!.weight, ttlS: p.ttlS, syncedAt: p.syncedAt }));
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
    const freshMs = 3 * (this.o.heartbeatMs ?? 1000) + 1000;
    const nodes = await listNodes(this.o.store, this.o.fleetId).catch(() => undefined);
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
        const yieldMs = this.o.yieldMs ?? 2 * (this.o.leaseMs ?? 2000);
        this.yieldUntilMs = this.clock.nowMs() + yieldMs;
        await this.lease.setEligible(false);
        // Contend again the moment the window ends, not at the next heartbeat: a
        // graceful handover by another node may be waiting for this one.
        if (this.yieldTimer) clearTimeout(this.yieldTimer);
        this.yieldTimer = setTimeout(() => {
          this.yieldTimer = undefined;
          if (this.shared) this.track(this.lease.setEligible(this.eligible()));
        }, yieldMs + 1);
        this.yieldTimer.unref?.();
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
    if (this.lease.isLeader() && !this.promoting) await this.ensureAddresses(this.lease.token!, "repair");
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
   * (at start, then at every heartbeat). Only this node ever takes it, so no
   * lease is needed; it is a no-op without `ownAllocationId`.
   */
  private async ensureOwnAddress(): Promise<void> {
    const id = this.o.ownAllocationId;
    if (!id || this.clock.nowMs() - this.ownSeenAtMs < 10_000) return;
    try {
      const now = await this.o.elasticIps.describe(id);
      this.publicIp = now.publicIp || this.publicIp;
      if (now.instanceId === this.o.instanceId) {
        this.ownSeenAtMs = this.clock.nowMs();
        return;
      }
      const moved = await this.o.elasticIps.moveTo(id, this.o.instanceId);
      this.ownSeenAtMs = this.clock.nowMs();
      this.log("info", `own Elastic IP ${id} (${this.publicIp}) now on ${this.o.instanceId}`, {
        ms: Math.round(moved.elapsedMs),
      });
    } catch (err) {
      this.log("error", `could not take own Elastic IP ${id}`, { error: String(err) });
    }
  }

  /** Steps 1-3 of a promotion; a failed step is retried by the next heartbeat's repair. */
  private async promote(token: number, from: string | undefined): Promise<void> {
    const started = this.clock.nowMs();
    try {
      await this.ensureAddresses(token, "promote", from);
      if (this.lease.token === token) {
        this.setRole("active");
        this.log("info", "active", { token, ms: Math.round(this.clock.nowMs() - started) });
      }
    } finally {
      this.promoting = undefined;
    }
  }

  private async ensureAddresses(token: number, why: "promote" | "repair", from?: string): Promise<void> {
    for (const allocationId of this.o.allocationIds) {
      try {
        if (why === "promote") {
          await fencedPut(this.o.store, {
            fleetId: this.o.fleetId,
            sk: keys.vip(allocationId),
            token,
            attrs: {
              kind: "vip",
              allocationId,
              owner: this.o.nodeId,
              instanceId: this.o.instanceId,
              at: this.clock.wallMs(),
            },
            lease: { name: "fleet", holder: this.o.nodeId },
          });
        } else {
          const now = await this.o.elasticIps.describe(allocationId);
          if (now.instanceId === this.o.instanceId) continue;
        }
        if (this.lease.token !== token) return; // lost meanwhile: no side effect
        const moved = await this.o.elasticIps.moveTo(allocationId, this.o.instanceId);
        const reason =
          why === "promote"
            ? from
              ? `took over the lease from ${from}`
              : "acquired the free fleet lease"
            : "the Elastic IP was associated elsewhere while this node holds the lease";
        await appendEvent(this.o.store, this.o.fleetId, {
          kind: why === "promote" ? "vip-moved" : "vip-repaired",
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
        });
        this.log("info", `Elastic IP ${allocationId} now on ${this.o.instanceId}`, {
          // The audit event's kind; the stack counts "vip-moved" lines with a `from` as takeovers
          // (a log metric filter), so a fleet's first acquisition is no failover.
          event: why === "promote" ? "vip-moved" : "vip-repaired",
          ...(from ? { from } : {}),
          token,
          reason,
          ms: Math.round(moved.elapsedMs),
        });
      } catch (err) {
        const fenced = isHafleetError(err, "HAFLEET_FENCED");
        this.log(fenced ? "warn" : "error", `could not ${why} Elastic IP ${allocationId}`, {
          token,
          error: String(err),
        });
        if (fenced) return;
      }
    }
  }
}
