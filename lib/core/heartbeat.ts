/**
 * Node registration and heartbeats (`node#<nodeId>` items), and a reader that
 * classifies nodes alive / suspect / dead.
 *
 * The writer bumps `seq` (an atomic ADD, so it keeps rising across restarts)
 * every `periodMs` and refreshes what the node reports about itself. The item
 * carries a TTL of a day so that a node removed for good disappears, but the
 * reader never relies on TTL.
 *
 * The reader judges freshness by how long *it* has seen the same `seq`, on its
 * own monotonic clock: no clock of one node is compared with another's. Only
 * on the first sight of a node, with nothing to compare yet, does it estimate
 * the age from the wall-clock `heartbeatAt` (display and a first guess). Damping
 * is HAProxy's: `fall` consecutive stale readings make a node dead, `rise`
 * consecutive fresh readings make it alive again; in between it is suspect.
 */

import { randomBytes } from "node:crypto";
import { type Clock, systemClock } from "./clock";
import { HafleetError, SettingsError } from "./errors";
import { type LeaseGuard, leaseGuardedUpdate } from "./fence";
import type { Item, StateStore } from "./store";
import { keys } from "./tables";

/**
 * A heartbeat older than this is stale: three periods, so that one lost or slow write
 * (DynamoDB's p99 is tens of ms, an attempt times out in seconds) does not make a node look dead.
 */
export function staleAfterMs(heartbeatMs: number): number {
  return 3 * heartbeatMs;
}

/**
 * A node whose heartbeat has been stale this long (its wall-clock age, so that a
 * checker that just started can tell too) is gone: the fleet no longer knows it.
 * Its weighted record is not written, and one the checker made is removed; five
 * minutes are far beyond any pause of a live node and any clock skew between
 * the node and its reader (docs/architecture.md §5.2).
 */
export const NODE_GONE_AFTER_MS = 5 * 60_000;

export type NodeRole = "starting" | "active" | "standby" | "serving" | "draining" | "stopped";

/** What a node says about itself in each heartbeat. */
export interface NodeReport {
  readonly address: string;
  /** Where the checker probes `/healthz`, e.g. `http://10.0.1.5:9901`. */
  readonly adminUrl: string;
  readonly role: NodeRole;
  readonly drain: boolean;
  readonly load: { readonly connections: number; readonly rps: number };
  readonly version: string;
  /** EC2 instance id, when on EC2 or in local mode's emulator. */
  readonly instanceId?: string;
  readonly zone?: string;
  /** The node's own Elastic IP (active-active): the address its weighted record points at. */
  readonly publicIp?: string;
  /**
   * The node's stable name (`node-0` on EC2), which a replacement instance takes
   * over with a new id: the name owns the node's Elastic IP and its weighted
   * record (docs/architecture.md §5.2). @default the node id
   */
  readonly name?: string;
}

export interface NodeRecord extends NodeReport {
  readonly nodeId: string;
  /** The node's stable name; its id when it reported none. */
  readonly name: string;
  /** Wall time of the node's first heartbeat (kept across restarts of its process): which of two namesakes is newer. */
  readonly startedAtMs: number;
  readonly seq: number;
  /** Wall time of the last heartbeat: display and first-sight estimate only. */
  readonly heartbeatAtMs: number;
  /**
   * Set by the health checker when it judged the node failed (gray failure).
   * Present only while it holds: `toNodeRecord` drops a mark whose `untilSeq`
   * the node's heartbeat has reached.
   */
  readonly failed?: FailedMark;
  /** The last operator command written for this node; its agent acts on each new `id` once. */
  readonly command?: NodeCommand;
}

/**
 * The checker's mark on a node. It lasts until the node's own heartbeat `seq`
 * reaches `untilSeq`, unless the checker renews it: a TTL counted in the
 * node's beats, so no clock of the checker is compared with the node's, and a
 * mark left by a checker that stopped running lapses by itself
 * (docs/architecture.md §4).
 */
export interface FailedMark {
  readonly by: string;
  readonly reason: string;
  readonly atMs: number;
  readonly token: number;
  readonly untilSeq: number;
}

/** Whether a stored mark still holds at heartbeat `seq`; one without `untilSeq` (an older checker's) never does. */
export function markHolds(mark: unknown, seq: number): mark is FailedMark {
  const until = (mark as { untilSeq?: unknown } | null | undefined)?.untilSeq;
  return typeof until === "number" && seq < until;
}

/** Operator commands carried by the node's own item, so they need no network path to the node. */
export interface NodeCommand {
  /** `yield`: hand the fleet lease over for a while; `drain`: hand it over, finish in-flight requests, exit. */
  readonly kind: "yield" | "drain";
  readonly id: string;
}

export const NODE_TTL_S = 24 * 3600;

/**
 * Writes one heartbeat of `nodeId`: bumps `seq` (an atomic ADD), refreshes what
 * the node reports, and returns the record as stored (with the checker's
 * `failed` mark and the last operator command).
 */
export async function writeHeartbeat(
  store: StateStore,
  fleetId: string,
  nodeId: string,
  r: NodeReport,
  options: { periodMs?: number } = {},
): Promise<NodeRecord> {
  const now = store.clock.wallMs();
  const item = await store.update(
    "state",
    { pk: keys.fleet(fleetId), sk: keys.node(nodeId) },
    "ADD seq :one SET kind = :kind, nodeId = :id, address = :address, adminUrl = :admin, #role = :role, " +
      "drain = :drain, #load = :load, version = :version, heartbeatAt = :now, expiresAt = :exp, " +
      "startedAt = if_not_exists(startedAt, :now)" +
      (r.instanceId ? ", instanceId = :instance" : "") +
      (r.zone ? ", #zone = :zone" : "") +
      (r.publicIp ? ", publicIp = :publicIp" : "") +
      (r.name ? ", nodeName = :name" : ""),
    {
      names: { "#role": "role", "#load": "load", ...(r.zone ? { "#zone": "zone" } : {}) },
      values: {
        ":one": 1,
        ":kind": "node",
        ":id": nodeId,
        ":address": r.address,
        ":admin": r.adminUrl,
        ":role": r.role,
        ":drain": r.drain,
        ":load": r.load,
        ":version": r.version,
        ":now": now,
        ":exp": Math.floor(now / 1000) + NODE_TTL_S,
        ...(r.instanceId ? { ":instance": r.instanceId } : {}),
        ...(r.zone ? { ":zone": r.zone } : {}),
        ...(r.publicIp ? { ":publicIp": r.publicIp } : {}),
        ...(r.name ? { ":name": r.name } : {}),
      },
    },
    // At least 2 s: on a slow store a late beat still moves `seq`; one cut at the
    // period's length would make a live node look dead.
    { deadlineMs: Math.max(options.periodMs ?? 1000, 2000) },
  );
  return toNodeRecord(item ?? {});
}

/** Where beats go: a node's item in `store`, or `write` (e.g. `writeHeartbeat` behind a narrower port). */
export type HeartbeaterOptions = HeartbeatLoopOptions &
  (
    | { readonly store: StateStore; readonly fleetId: string; readonly nodeId: string }
    | { readonly write: (report: NodeReport) => Promise<NodeRecord> }
  );

export interface HeartbeatLoopOptions {
  /** @default 1000 */
  readonly periodMs?: number;
  /** Called before each beat for the node's current report. */
  readonly report: () => NodeReport;
  readonly clock?: Clock;
  /** Called with each failed beat (the loop goes on). */
  readonly onError?: (err: unknown) => void;
  /** Called with the stored record after each beat (e.g. to notice `failed`). */
  readonly onBeat?: (record: NodeRecord) => void;
}

/** Writes a heartbeat every `periodMs` until stopped. */
export class Heartbeater {
  readonly periodMs: number;
  private readonly o: HeartbeaterOptions;
  private readonly clock: Clock;
  private abort = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(options: HeartbeaterOptions) {
    this.o = options;
    this.clock = options.clock ?? systemClock;
    this.periodMs = options.periodMs ?? 1000;
    if (!(this.periodMs >= 10))
      throw new SettingsError(`\`periodMs\` must be at least 10, got ${this.periodMs}`);
  }

  /** Writes one heartbeat and returns the record as stored. */
  async beat(): Promise<NodeRecord> {
    const o = this.o;
    const report = o.report();
    const record =
      "write" in o
        ? await o.write(report)
        : await writeHeartbeat(o.store, o.fleetId, o.nodeId, report, { periodMs: this.periodMs });
    this.o.onBeat?.(record);
    return record;
  }

  start(): void {
    if (this.loop) return;
    this.abort = new AbortController();
    const signal = this.abort.signal;
    this.loop = (async () => {
      while (!signal.aborted) {
        const started = this.clock.nowMs();
        try {
          await this.beat();
        } catch (err) {
          this.o.onError?.(err);
        }
        await this.clock.sleep(Math.max(0, this.periodMs - (this.clock.nowMs() - started)), signal);
      }
    })();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.loop = undefined;
  }
}

/** Every node of a fleet (live items only). */
export async function listNodes(store: StateStore, fleetId: string): Promise<NodeRecord[]> {
  const items = await store.query("state", keys.fleet(fleetId), { prefix: "node#" });
  return items.map(toNodeRecord);
}

/**
 * Marks a node failed (the checker's verdict on a gray failure), renews the
 * mark (the same call with a later `untilSeq`), or clears it. With `guard`,
 * only while the checker still holds its lease with that token.
 */
export async function setNodeFailed(
  store: StateStore,
  fleetId: string,
  nodeId: string,
  failed: NodeRecord["failed"] | undefined,
  guard?: LeaseGuard,
): Promise<void> {
  const key = { pk: keys.fleet(fleetId), sk: keys.node(nodeId) };
  if (guard) {
    await leaseGuardedUpdate(store, {
      fleetId,
      sk: key.sk,
      update: failed ? "SET failed = :f" : "REMOVE failed",
      ...(failed ? { values: { ":f": failed } } : {}),
      guard,
    });
    return;
  }
  if (failed) {
    await store.update("state", key, "SET failed = :f", {
      condition: "attribute_exists(sk)",
      values: { ":f": failed },
    });
  } else {
    await store.update("state", key, "REMOVE failed", { condition: "attribute_exists(sk)" });
  }
}

/** Writes an operator command into a node's item; its agent acts on it at its next heartbeat. */
export async function sendNodeCommand(
  store: StateStore,
  fleetId: string,
  nodeId: string,
  kind: NodeCommand["kind"],
): Promise<NodeCommand> {
  const command: NodeCommand = {
    kind,
    id: `${kind}-${store.clock.wallMs().toString(36)}-${randomBytes(3).toString("hex")}`,
  };
  const done = await store.update(
    "state",
    { pk: keys.fleet(fleetId), sk: keys.node(nodeId) },
    "SET command = :c",
    {
      condition: "attribute_exists(sk)",
      values: { ":c": command },
    },
  );
  if (!done)
    throw new HafleetError(
      "HAFLEET_NODE_UNKNOWN",
      `node '${nodeId}' is not registered in fleet '${fleetId}'`,
    );
  return command;
}

/** A `node#` item as every reader sees it: the agent (its own beat), the checker, status. An expired mark is no mark. */
export function toNodeRecord(item: Item): NodeRecord {
  const seq = Number(item.seq ?? 0);
  const nodeId = String(item.nodeId ?? String(item.sk ?? "").replace(/^node#/, ""));
  return {
    nodeId,
    name: item.nodeName ? String(item.nodeName) : nodeId,
    startedAtMs: Number(item.startedAt ?? 0),
    seq,
    address: String(item.address ?? ""),
    adminUrl: String(item.adminUrl ?? ""),
    role: (item.role ?? "starting") as NodeRole,
    drain: Boolean(item.drain),
    load: { connections: Number(item.load?.connections ?? 0), rps: Number(item.load?.rps ?? 0) },
    version: String(item.version ?? ""),
    heartbeatAtMs: Number(item.heartbeatAt ?? 0),
    ...(item.instanceId ? { instanceId: String(item.instanceId) } : {}),
    ...(item.zone ? { zone: String(item.zone) } : {}),
    ...(item.publicIp ? { publicIp: String(item.publicIp) } : {}),
    ...(markHolds(item.failed, seq) ? { failed: item.failed } : {}),
    ...(item.command ? { command: item.command as NodeCommand } : {}),
  };
}

export type Liveness = "alive" | "suspect" | "dead";

/**
 * Whether `a` started after `b`: namesakes (a replacement and the node it
 * replaces) start a boot apart, minutes, so their own clocks' skew cannot
 * reorder them; equal start times are ordered by node id, so that every reader
 * agrees.
 */
export function startedAfter(
  a: Pick<NodeRecord, "nodeId" | "startedAtMs">,
  b: Pick<NodeRecord, "nodeId" | "startedAtMs">,
): boolean {
  return a.startedAtMs !== b.startedAtMs ? a.startedAtMs > b.startedAtMs : a.nodeId > b.nodeId;
}

/**
 * The newest live node of `self`'s name that started after it, if any: its
 * replacement, which holds the name's Elastic IP and weighted record from then
 * on. `live` is the reader's judgement of each heartbeat (not dead by a
 * `HeartbeatMonitor`, as the checker's `planMarks` counts live nodes).
 */
export function newerNamesake(
  self: Pick<NodeRecord, "nodeId" | "name" | "startedAtMs">,
  nodes: readonly NodeRecord[],
  live: (node: NodeRecord) => boolean,
): NodeRecord | undefined {
  let newest: NodeRecord | undefined;
  for (const n of nodes) {
    if (n.nodeId === self.nodeId || n.name !== self.name || !startedAfter(n, self) || !live(n)) continue;
    if (!newest || startedAfter(n, newest)) newest = n;
  }
  return newest;
}

export interface LivenessSettings {
  /** A seq unchanged this long is stale. @default 3 x heartbeat period (3000) */
  readonly staleMs?: number;
  /** Consecutive fresh readings that make a dead node alive. @default 2 */
  readonly rise?: number;
  /** Consecutive stale readings that make a node dead. @default 2 */
  readonly fall?: number;
}

export interface NodeLiveness {
  readonly nodeId: string;
  readonly state: Liveness;
  /** How long this reader has seen the same seq (ms, its own clock). */
  readonly stalledMs: number;
  /** Wall-clock age of the last heartbeat, for display. */
  readonly ageMs: number;
  readonly record: NodeRecord;
}

interface Track {
  seq: number;
  changedAtMs: number;
  state: Liveness;
  freshRun: number;
  staleRun: number;
}

export class HeartbeatMonitor {
  readonly staleMs: number;
  readonly rise: number;
  readonly fall: number;
  private readonly clock: Clock;
  private readonly tracks = new Map<string, Track>();

  constructor(settings: LivenessSettings = {}, clock: Clock = systemClock) {
    this.staleMs = settings.staleMs ?? 3000;
    this.rise = settings.rise ?? 2;
    this.fall = settings.fall ?? 2;
    this.clock = clock;
    if (!(this.staleMs > 0)) throw new SettingsError(`\`staleMs\` must be above 0, got ${this.staleMs}`);
    if (!(this.rise >= 1 && this.fall >= 1)) throw new SettingsError("`rise` and `fall` must be at least 1");
  }

  /** Feeds one reading of every node (e.g. `listNodes`) and returns each node's state. */
  observe(records: readonly NodeRecord[]): NodeLiveness[] {
    const now = this.clock.nowMs();
    const wall = this.clock.wallMs();
    const out: NodeLiveness[] = [];
    const present = new Set<string>();
    for (const record of records) {
      present.add(record.nodeId);
      const ageMs = Math.max(0, wall - record.heartbeatAtMs);
      let t = this.tracks.get(record.nodeId);
      if (!t) {
        // First sight: the wall-clock age is the only hint; judged at once, without damping.
        const stale = ageMs >= this.staleMs;
        t = {
          seq: record.seq,
          changedAtMs: now - Math.min(ageMs, this.staleMs * 10),
          state: stale ? "dead" : "alive",
          freshRun: stale ? 0 : this.rise,
          staleRun: stale ? this.fall : 0,
        };
        this.tracks.set(record.nodeId, t);
      } else if (record.seq !== t.seq) {
        t.seq = record.seq;
        t.changedAtMs = now;
      }
      const stalledMs = now - t.changedAtMs;
      const fresh = stalledMs < this.staleMs;
      if (fresh) {
        t.freshRun++;
        t.staleRun = 0;
        if (t.state === "suspect" || (t.state === "dead" && t.freshRun >= this.rise)) t.state = "alive";
      } else {
        t.staleRun++;
        t.freshRun = 0;
        if (t.staleRun >= this.fall) t.state = "dead";
        else if (t.state === "alive") t.state = "suspect";
      }
      out.push({ nodeId: record.nodeId, state: t.state, stalledMs, ageMs, record });
    }
    for (const id of this.tracks.keys()) if (!present.has(id)) this.tracks.delete(id);
    return out;
  }
}
