/**
 * A fleet's happenings as one readable line each, for a terminal that
 * follows the fleet (`hafleet local up` prints them): the fleet lease
 * changing hands (with tokens), Elastic IP moves, the checker's marks and
 * weight changes (the audit trail, docs/architecture.md §6), nodes that
 * start draining, stop, die or come back (their heartbeats).
 *
 * `FleetWatch.poll` reads the lease, the nodes and the new audit events,
 * compares them with what the previous poll saw, and returns what changed:
 * the lease first, then the nodes, then the events in their order.
 * The first poll takes the fleet as it is and says nothing about it.
 */
import { FAILOVER_DEFAULTS } from "./config";
import { listEvents, type StoredEvent } from "./events";
import { listNodes, type NodeRecord, staleAfterMs } from "./heartbeat";
import { DynamoLeaseStore } from "./lease";
import type { StateStore } from "./store";

export interface WatchLine {
  /** Wall time of what the line tells (the event's, or the poll's). */
  readonly atMs: number;
  readonly text: string;
}

interface NodeSeen {
  readonly role: string;
  readonly dead: boolean;
  readonly drain: boolean;
}

export class FleetWatch {
  private readonly leases: DynamoLeaseStore;
  private started = false;
  private holder: string | undefined;
  private token = 0;
  private lastEvent = "";
  private readonly nodes = new Map<string, NodeSeen>();

  constructor(
    private readonly store: StateStore,
    private readonly fleetId: string,
    private readonly staleMs = staleAfterMs(FAILOVER_DEFAULTS.heartbeatMs),
  ) {
    this.leases = new DynamoLeaseStore(store, fleetId);
  }

  async poll(): Promise<WatchLine[]> {
    const [lease, nodes, events] = await Promise.all([
      this.leases.get("fleet"),
      listNodes(this.store, this.fleetId),
      listEvents(this.store, this.fleetId, { newestFirst: true, limit: 50 }),
    ]);
    const now = this.store.clock.wallMs();
    const out: WatchLine[] = [];
    const say = (text: string, atMs = now) => out.push({ atMs, text });

    const fresh = events
      .filter((e) => `${e.at}#${e.id}` > this.lastEvent)
      .sort((a, b) => (a.at < b.at ? -1 : 1));
    if (events.length > 0) this.lastEvent = `${events[0]!.at}#${events[0]!.id}`;

    const holder = lease?.holder;
    const token = lease?.token ?? 0;
    if (this.started && (holder !== this.holder || token !== this.token)) {
      if (holder === undefined) say(`lease: released by ${this.holder ?? "nobody"} (token ${this.token})`);
      else {
        const after = this.holder && this.holder !== holder ? `, after ${this.holder}` : "";
        say(`lease: ${holder} holds it (token ${token}${after})`);
      }
    }
    this.holder = holder;
    this.token = token;

    for (const n of nodes) this.node(n, now, say);
    if (this.started) for (const e of fresh) say(describe(e), Date.parse(e.at));
    this.started = true;
    return out;
  }

  private node(n: NodeRecord, now: number, say: (text: string) => void): void {
    const ageMs = Math.max(0, now - n.heartbeatAtMs);
    const seen: NodeSeen = { role: n.role, dead: ageMs > this.staleMs, drain: n.drain };
    const before = this.nodes.get(n.nodeId);
    this.nodes.set(n.nodeId, seen);
    if (!this.started) return;
    if (!before) {
      if (!seen.dead) say(`${n.nodeId}: joined (${n.role})`);
      return;
    }
    if (seen.dead && !before.dead) {
      say(`${n.nodeId}: no heartbeat for ${(ageMs / 1000).toFixed(1)} s, dead (was ${before.role})`);
      return;
    }
    if (!seen.dead && before.dead) {
      say(`${n.nodeId}: back (${n.role})`);
      return;
    }
    if (seen.dead) return;
    const drained = seen.drain && !before.drain;
    if (drained) say(`${n.nodeId}: draining (was ${before.role})`);
    if (seen.role !== before.role && !(drained && seen.role === "draining")) {
      say(`${n.nodeId}: ${before.role} -> ${seen.role}`);
    }
  }
}

/** One audit event as a sentence. */
export function describe(e: StoredEvent): string {
  const d = (e.detail ?? {}) as Record<string, unknown>;
  switch (e.kind) {
    case "vip-moved":
    case "vip-repaired":
      return (
        `Elastic IP ${String(d.allocationId)} ${e.kind === "vip-moved" ? "moved" : "moved back"} to ${e.by} ` +
        `(token ${e.token}, ${String(d.moveMs)} ms): ${e.reason}`
      );
    case "vip-reconciled":
      return `checker re-associated ${String(d.allocationId)} with ${String(d.to)} (token ${String(d.holderToken)}): ${e.reason}`;
    case "node-marked-failed":
      return `checker marked ${e.reason.replace(/: /, " failed: ")}`;
    case "node-failed-cleared":
      return `checker cleared the mark of ${e.reason.replace(/: .*/, "")}`;
    case "weights-changed": {
      const changes = (d.changes as { nodeId: string; from: number | null; to: number }[] | undefined) ?? [];
      const list = changes.map((c) => `${c.nodeId} ${c.from ?? "new"} -> ${c.to}`).join(", ");
      return `weights of ${String(d.name)}: ${list}`;
    }
    default:
      return `${e.kind} by ${e.by} (token ${e.token}): ${e.reason}`;
  }
}
