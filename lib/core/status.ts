/**
 * A fleet's status as an operator reads it: nodes with their role, heartbeat
 * age, drain and failed marks; the fleet lease's holder and token; each
 * Elastic IP's owner by EC2 and by the holder's `vip#`; and backend health as
 * the nodes' admin endpoints report it; the weights the health checker last
 * recorded for the fleet's weighted DNS set (`dns#`). `renderStatus` prints
 * it as tables.
 */

import { FAILOVER_DEFAULTS, type FleetConfig } from "./config";
import { ConfigStore } from "./config-store";
import { listDnsPlans } from "./dns";
import type { ElasticIps } from "./elastic-ip";
import { listNodes, type NodeRecord, staleAfterMs } from "./heartbeat";
import { DynamoLeaseStore } from "./lease";
import type { StateStore } from "./store";
import { listVips } from "./vip";

export interface FleetStatus {
  readonly fleetId: string;
  /** The config's `failover.mode`; null when the fleet has no config yet. */
  readonly mode: FailoverMode | null;
  readonly lease: { readonly holder: string | null; readonly token: number; readonly leaseMs: number } | null;
  readonly nodes: {
    readonly nodeId: string;
    readonly role: string;
    readonly heartbeatAgeMs: number;
    readonly seq: number;
    readonly address: string;
    readonly instanceId: string | null;
    readonly drain: boolean;
    readonly failed: string | null;
    readonly load: NodeRecord["load"];
    /** What the node's `/readyz` says, or why it could not be asked. */
    readonly ready: boolean | null;
    readonly backends:
      | readonly { readonly pool: string; readonly id: string; readonly healthy: boolean }[]
      | null;
  }[];
  readonly elasticIps: {
    readonly allocationId: string;
    readonly publicIp: string;
    readonly instanceId: string | null;
    /** The node on that instance. */
    readonly node: string | null;
    /** The owner the lease holder recorded, and its token. */
    readonly desiredOwner: string | null;
    readonly desiredToken: number | null;
  }[];
  /** The weighted sets as the checker last recorded them (`dns#`), with its token. */
  readonly dns: {
    readonly name: string;
    readonly mode: string;
    readonly token: number;
    readonly weights: { readonly id: string; readonly address: string; readonly weight: number }[];
  }[];
}

export async function fleetStatus(
  store: StateStore,
  elasticIps: ElasticIps,
  fleetId: string,
  options: { probeTimeoutMs?: number } = {},
): Promise<FleetStatus> {
  const [config, nodes, lease, vips, addresses, sets] = await Promise.all([
    new ConfigStore(store, fleetId).get(),
    listNodes(store, fleetId),
    new DynamoLeaseStore(store, fleetId).get("fleet"),
    listVips(store, fleetId),
    elasticIps.listByFleet(fleetId),
    listDnsPlans(store, fleetId),
  ]);
  const now = store.clock.wallMs();
  const readiness = await Promise.all(nodes.map((n) => readyz(n.adminUrl, options.probeTimeoutMs ?? 500)));
  return {
    fleetId,
    mode: config?.config.failover.mode ?? null,
    lease: lease ? { holder: lease.holder ?? null, token: lease.token, leaseMs: lease.leaseMs } : null,
    nodes: nodes.map((n, i) => ({
      nodeId: n.nodeId,
      role: n.role,
      heartbeatAgeMs: Math.max(0, now - n.heartbeatAtMs),
      seq: n.seq,
      address: n.address,
      instanceId: n.instanceId ?? null,
      drain: n.drain,
      failed: n.failed ? n.failed.reason : null,
      load: n.load,
      ready: readiness[i]!.ready,
      backends: readiness[i]!.backends,
    })),
    elasticIps: addresses.map((a) => {
      const vip = vips.find((v) => v.allocationId === a.allocationId);
      return {
        allocationId: a.allocationId,
        publicIp: a.publicIp,
        instanceId: a.instanceId || null,
        node: nodes.find((n) => n.instanceId && n.instanceId === a.instanceId)?.nodeId ?? null,
        desiredOwner: vip ? vip.owner : null,
        desiredToken: vip ? vip.token : null,
      };
    }),
    dns: sets.map((d) => ({
      name: d.name,
      mode: d.mode,
      token: d.token,
      weights: Object.entries(d.weights).map(([id, w]) => ({ id, ...w })),
    })),
  };
}

type FailoverMode = FleetConfig["failover"]["mode"];
type BackendLine = { pool: string; id: string; healthy: boolean };

/**
 * The role as a person reads it. In active-active every live node serves
 * (weighted in DNS), whatever it reports of the shared Elastic IP's lease,
 * which the lease line names.
 */
function shownRole(role: string, mode: FailoverMode | null): string {
  return mode === "active-active" && (role === "active" || role === "standby") ? "serving" : role;
}

async function readyz(
  adminUrl: string,
  timeoutMs: number,
): Promise<{ ready: boolean | null; backends: BackendLine[] | null }> {
  if (!adminUrl) return { ready: null, backends: null };
  try {
    const res = await fetch(`${adminUrl}/readyz`, { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json().catch(() => ({}))) as { backends?: BackendLine[] };
    return { ready: res.status === 200, backends: Array.isArray(body.backends) ? body.backends : null };
  } catch {
    return { ready: false, backends: null };
  }
}

/**
 * Plain-text tables, for a person. A node whose heartbeat is older than
 * `staleMs` is dead: its row says so, with the role it last had, when it was
 * last seen, and nothing of what it last reported as if it were current
 * (its connections are unknown, a mark it got while alive is not shown).
 */
export function renderStatus(s: FleetStatus, staleMs = staleAfterMs(FAILOVER_DEFAULTS.heartbeatMs)): string {
  const lines: string[] = [];
  lines.push(`fleet ${s.fleetId}`);
  lines.push(
    s.lease
      ? `lease: holder ${s.lease.holder ?? "(released)"}, token ${s.lease.token}, leaseMs ${s.lease.leaseMs}`
      : "lease: never held",
  );
  lines.push("");
  lines.push(
    table(
      ["NODE", "ROLE", "HEARTBEAT", "READY", "ADDRESS", "INSTANCE", "CONNS", "FLAGS"],
      s.nodes.map((n) => {
        const dead = n.heartbeatAgeMs > staleMs;
        const flags = [n.drain ? "draining" : "", n.failed && !dead ? `failed: ${n.failed}` : ""];
        return [
          n.nodeId,
          dead ? `dead (was ${shownRole(n.role, s.mode)})` : shownRole(n.role, s.mode),
          dead ? `last seen ${age(n.heartbeatAgeMs)} ago` : `${(n.heartbeatAgeMs / 1000).toFixed(1)}s ago`,
          dead || n.ready === null ? "-" : n.ready ? "yes" : "no",
          n.address,
          n.instanceId ?? "-",
          dead ? "?" : String(n.load.connections),
          flags.filter(Boolean).join(", ") || "-",
        ];
      }),
    ),
  );
  lines.push("");
  lines.push(
    table(
      ["ELASTIC IP", "ALLOCATION", "ON NODE", "DESIRED (TOKEN)"],
      s.elasticIps.map((e) => [
        e.publicIp,
        e.allocationId,
        e.node ?? e.instanceId ?? "(none)",
        e.desiredOwner ? `${e.desiredOwner} (${e.desiredToken})` : "-",
      ]),
    ),
  );
  for (const d of s.dns) {
    lines.push("");
    lines.push(`dns ${d.name} (${d.mode}), weights recorded by the checker with token ${d.token}:`);
    lines.push(
      table(
        ["RECORD", "ADDRESS", "WEIGHT"],
        d.weights.map((w) => [w.id, w.address, String(w.weight)]),
      ),
    );
  }
  const reporter = s.nodes.find((n) => n.backends && n.backends.length > 0);
  if (reporter?.backends) {
    lines.push("");
    lines.push(
      table(
        ["POOL", "BACKEND", `HEALTH (as ${reporter.nodeId} sees it)`],
        reporter.backends.map((b) => [b.pool, b.id, b.healthy ? "up" : "down"]),
      ),
    );
  }
  return lines.join("\n");
}

/** A long age as people say it: `45s`, `12m 5s`, `3h 2m`, `2d 4h`. */
function age(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`;
  if (sec < 86_400) return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`;
  return `${Math.floor(sec / 86_400)}d ${Math.floor((sec % 86_400) / 3600)}h`;
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [fmt(head), ...rows.map(fmt)].join("\n");
}
