/**
 * The fleet's state in memory, for the table-driven tests of the node agent
 * (test/unit/proxy/agent.test.ts): `vip#` items, events, node items, and the
 * lease items of a shared `MemoryLeaseStore`. Writes are fenced as
 * lib/core/fence.ts fences them on DynamoDB (the lease item must still show
 * the writer with its token, and an item never goes back to a lower token), so
 * the orderings can be tested without the emulator; the real store is tested
 * against it in test/integration.
 *
 * Faults per node, as data: `down` (every call fails, as when the node is cut
 * off from DynamoDB), `failVipWrites` (the next N `vip#` writes fail without
 * landing) and `callMs` (every call takes that long on the test's clock).
 */
import type { Clock } from "../../lib/core/clock";
import type { DnsPlan } from "../../lib/core/dns";
import { FencedError, StoreError } from "../../lib/core/errors";
import type { FleetEvent } from "../../lib/core/events";
import type { VipDesired } from "../../lib/core/failover";
import type { NodeCommand, NodeRecord, NodeReport } from "../../lib/core/heartbeat";
import type { AgentStore } from "../../proxy/agent";
import type { MemoryLeaseStore } from "./memory-lease-store";

export interface RecordedEvent extends FleetEvent {
  readonly atMs: number;
}

/** What every node's store shares: one fleet's items. */
export class FleetMemory {
  readonly vips = new Map<string, VipDesired>();
  readonly events: RecordedEvent[] = [];
  readonly nodes = new Map<string, NodeRecord>();
  /** Writes refused by a fence, for the tests to see that a stale writer tried. */
  readonly refused: string[] = [];
  /** The checker's recorded plans of weighted sets (`dns#`), as a test writes them. */
  dnsPlans: DnsPlan[] = [];

  constructor(
    readonly leases: MemoryLeaseStore,
    readonly clock: Clock,
  ) {}

  /** The checker's mark on a node (gray failure); undefined clears it. */
  markFailed(nodeId: string, failed: boolean): void {
    const n = this.node(nodeId);
    this.nodes.set(nodeId, {
      ...n,
      failed: failed
        ? { by: "checker", reason: "probes failed", atMs: 0, token: 1, untilSeq: Number.MAX_SAFE_INTEGER }
        : undefined,
    });
  }

  /** An operator command, as `hafleet failover` or `hafleet drain` writes it. */
  command(nodeId: string, kind: NodeCommand["kind"]): void {
    this.nodes.set(nodeId, { ...this.node(nodeId), command: { kind, id: `${kind}-${this.clock.nowMs()}` } });
  }

  private node(nodeId: string): NodeRecord {
    const n = this.nodes.get(nodeId);
    if (!n) throw new Error(`node ${nodeId} has not sent a heartbeat yet`);
    return n;
  }
}

export class MemoryAgentStore implements AgentStore {
  down = false;
  failVipWrites = 0;
  callMs = 0;

  constructor(
    private readonly fleet: FleetMemory,
    private readonly nodeId: string,
  ) {}

  async beat(report: NodeReport): Promise<NodeRecord> {
    await this.call();
    const before = this.fleet.nodes.get(this.nodeId);
    const record: NodeRecord = {
      ...report,
      nodeId: this.nodeId,
      name: report.name ?? this.nodeId,
      // As `writeHeartbeat` keeps it: the first beat's time, across restarts.
      startedAtMs: before?.startedAtMs ?? this.fleet.clock.wallMs(),
      seq: (before?.seq ?? 0) + 1,
      heartbeatAtMs: this.fleet.clock.wallMs(),
      ...(before?.failed ? { failed: before.failed } : {}),
      ...(before?.command ? { command: before.command } : {}),
    };
    this.fleet.nodes.set(this.nodeId, record);
    return record;
  }

  async listNodes(): Promise<NodeRecord[]> {
    await this.call();
    return [...this.fleet.nodes.values()];
  }

  async listDnsPlans(): Promise<DnsPlan[]> {
    await this.call();
    return this.fleet.dnsPlans;
  }

  async getVip(allocationId: string): Promise<VipDesired | undefined> {
    await this.call();
    return this.fleet.vips.get(allocationId);
  }

  async putVip(vip: VipDesired): Promise<void> {
    await this.call();
    if (this.failVipWrites > 0) {
      this.failVipWrites--;
      throw new StoreError("HAFLEET_STORE_UNAVAILABLE", "TransactWriteItems", "injected failure", true);
    }
    this.fence(`vip#${vip.allocationId}`, vip.token);
    const now = this.fleet.vips.get(vip.allocationId);
    if (now && now.token > vip.token) {
      this.fleet.refused.push(`vip#${vip.allocationId} ${this.nodeId} ${vip.token}`);
      throw new FencedError(`vip#${vip.allocationId}`, vip.token, "a higher token is recorded on the item");
    }
    this.fleet.vips.set(vip.allocationId, vip);
    this.fleet.leases.raiseFloor("fleet", vip.token);
  }

  async appendEvent(event: FleetEvent): Promise<void> {
    await this.call();
    this.fence(`event ${event.kind}`, event.token);
    this.fleet.events.push({ ...event, atMs: this.fleet.clock.nowMs() });
    this.fleet.leases.raiseFloor("fleet", event.token);
  }

  /** The lease item must still show this node with this token, as fence.ts's ConditionCheck requires. */
  private fence(what: string, token: number): void {
    const lease = this.fleet.leases.records.get("fleet");
    if (lease?.holder !== this.nodeId || lease.token !== token) {
      this.fleet.refused.push(`${what} ${this.nodeId} ${token}`);
      throw new FencedError(what, token, `lease 'fleet' is no longer held by ${this.nodeId} with this token`);
    }
  }

  private async call(): Promise<void> {
    if (this.callMs > 0) await this.fleet.clock.sleep(this.callMs);
    if (this.down) throw new StoreError("HAFLEET_STORE_UNAVAILABLE", "test", "partitioned", true);
  }
}
