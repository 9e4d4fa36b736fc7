/**
 * The fleet configuration document: its schema, its validation, and loading it
 * from an operator's YAML or JSON file.
 *
 * Every object is strict: an unknown key (a typo such as `listners`) is an
 * error, not silently ignored. Every default is written here, once, with its
 * unit in the field name. Validation reports every bad field with its path
 * (`listeners[0].port`) and reason, and nothing is ever written for an invalid
 * document (see `config-store.ts`).
 */
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { parseCidr } from "./cidr";
import { ConfigInvalidError, type FieldIssue } from "./errors";

/** Fleet, listener and pool names: also DNS labels and DynamoDB key parts. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const NAME_RULE = "must be 1-63 lowercase letters, digits or '-'";
const name = z.string().regex(NAME_PATTERN, NAME_RULE);
const port = z.int().min(1).max(65535);
const ms = (min: number, max: number) => z.int().min(min).max(max);

export const BackendSchema = z.strictObject({
  /** Stable id used by sticky sessions and consistent hashing; defaults to `host:port`. */
  id: z.string().min(1).max(128).optional(),
  host: z.string().min(1).max(253),
  port,
  /** Relative share of traffic; 0 keeps the backend configured but sends it nothing new. */
  weight: z.int().min(0).max(1000).default(1),
  /** Availability zone, for zone-aware reporting. */
  zone: z.string().max(64).optional(),
});

export const HealthCheckSchema = z.strictObject({
  /** `http` sends GET `path` and expects `expectStatus`; `tcp` only connects. */
  type: z.enum(["http", "tcp"]).default("http"),
  path: z.string().startsWith("/").max(1024).default("/"),
  /** Inclusive range of statuses that count as healthy. */
  expectStatus: z.tuple([z.int().min(100).max(599), z.int().min(100).max(599)]).default([200, 399]),
  intervalMs: ms(100, 300_000).default(2000),
  /** Must be below `intervalMs`, so that checks never pile up. */
  timeoutMs: ms(10, 60_000).default(1000),
  /** Consecutive successes that make an unhealthy backend healthy (HAProxy's default is 2). */
  rise: z.int().min(1).max(100).default(2),
  /** Consecutive failures that make a healthy backend unhealthy (HAProxy's default is 3). */
  fall: z.int().min(1).max(100).default(3),
});

export const OutlierSchema = z.strictObject({
  /** Consecutive 5xx answers or connect failures that eject a backend (Envoy's default is 5). */
  consecutiveFailures: z.int().min(1).max(1000).default(5),
  /** First ejection lasts this long; each further ejection of the same backend one more period. */
  baseEjectionMs: ms(100, 3_600_000).default(30_000),
  /** Never eject more than this share of a pool (Envoy's default is 10; ELB's panic is 50). */
  maxEjectionPercent: z.int().min(0).max(100).default(50),
});

export const HashKeySchema = z.strictObject({
  source: z.enum(["client-ip", "header", "cookie"]),
  /** Header or cookie name; required unless `source` is `client-ip`. */
  name: z.string().min(1).max(256).optional(),
});

export const PoolSchema = z.strictObject({
  algorithm: z
    .enum(["round-robin", "weighted-round-robin", "least-outstanding", "consistent-hash"])
    .default("round-robin"),
  /** Required by `consistent-hash`; also the fallback key of sticky sessions. */
  hashKey: HashKeySchema.optional(),
  backends: z.array(BackendSchema).min(1).max(1000),
  healthCheck: HealthCheckSchema.prefault({}),
  outlier: OutlierSchema.prefault({}),
  /** Below this share of healthy backends, send to all of them (panic mode, as Envoy and ELB). */
  panicThresholdPercent: z.int().min(0).max(100).default(50),
  /** A recovered backend's weight ramps from 10% to 100% over this long; 0 turns it off. */
  slowStartMs: ms(0, 3_600_000).default(0),
});

export const StickinessSchema = z.strictObject({
  /** Cookie that carries the session key (http listeners only). */
  cookieName: z
    .string()
    .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/, "must be a valid cookie name token")
    .default("HAFLEET"),
  /** How long an idle session keeps its backend. */
  ttlS: z
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .default(3600),
});

export const ListenerSchema = z.strictObject({
  name,
  protocol: z.enum(["http", "tcp"]),
  port,
  /** Address to bind; `0.0.0.0` on EC2, a loopback address in local mode. */
  bind: z.string().min(1).max(64).default("0.0.0.0"),
  /** Name of the pool in `pools` that serves this listener. */
  pool: name,
  /** Sticky sessions; on tcp listeners the key is the client address. */
  stickiness: StickinessSchema.optional(),
  /**
   * Peers (CIDR blocks) whose forwarded headers are believed: from them the
   * client's X-Forwarded-For is appended to and X-Forwarded-Proto/-Host kept;
   * from anyone else they are replaced (README, "Forwarded headers and trust").
   */
  trustedProxies: z
    .array(
      z.string().superRefine((text, ctx) => {
        const c = parseCidr(text);
        if (typeof c === "string") ctx.addIssue({ code: "custom", message: c });
      }),
    )
    .max(1000)
    .default([]),
});

export const TimeoutsSchema = z.strictObject({
  /** TCP connect to a backend. */
  connectMs: ms(1, 600_000).default(2000),
  /** A client must send the whole request head within this (slowloris defence). */
  headMs: ms(1, 600_000).default(10_000),
  /** An idle connection (client or keep-alive upstream, an idle TCP stream) is closed after this. */
  idleMs: ms(1, 3_600_000).default(60_000),
  /**
   * During an exchange, the longest the proxy waits on the client: for more
   * of the request body (then 408), or for it to take answer bytes (HAProxy's
   * `timeout client`). Inactivity, not a total.
   */
  clientMs: ms(1, 3_600_000).default(60_000),
  /**
   * During an exchange, the longest the proxy waits on the backend: for its
   * answer or its next answer bytes (504 when nothing was answered yet), or
   * for it to take request bytes (HAProxy's `timeout server`, nginx's
   * `proxy_read_timeout`). A download that keeps moving is never cut.
   */
  serverMs: ms(1, 3_600_000).default(60_000),
  /** An upgraded connection (WebSocket) with no byte either way for this long is closed (HAProxy's `timeout tunnel`). */
  tunnelMs: ms(1, 86_400_000).default(3_600_000),
  /** Optional total for one exchange, first byte of the request to the last of the answer, however active. */
  requestMs: ms(1, 86_400_000).optional(),
  /** On drain or shutdown, in-flight requests get this long to finish. */
  drainMs: ms(0, 3_600_000).default(30_000),
  /**
   * A connection the proxy closes is destroyed this long after its last
   * answer was written, whatever the peer does (it may keep sending, or never
   * read): the lingering close of docs/architecture.md section 8.
   */
  lingerMs: ms(1, 60_000).default(2000),
});

export const LimitsSchema = z.strictObject({
  maxHeaderBytes: z
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(16 * 1024),
  maxBodyBytes: z
    .int()
    .min(0)
    .max(1024 * 1024 * 1024)
    .default(10 * 1024 * 1024),
  maxConnections: z.int().min(1).max(1_000_000).default(10_000),
});

export const RetriesSchema = z.strictObject({
  /** Extra attempts of an idempotent request on another backend after a connect failure. */
  attempts: z.int().min(0).max(5).default(1),
  /** Retries may add at most this share on top of the requests in flight (Envoy's retry budget). */
  budgetPercent: z.int().min(0).max(100).default(20),
});

export const FailoverSchema = z.strictObject({
  mode: z.enum(["active-passive", "active-active"]).default("active-passive"),
  /** How long a fleet lease lives after a renewal; see `lease.ts` for why 2000. */
  leaseMs: ms(300, 60_000).default(2000),
  /** How often each node writes its heartbeat. */
  heartbeatMs: ms(100, 60_000).default(1000),
  /**
   * How long the health checker's failed mark on a node holds unless the checker renews it,
   * counted in the node's own heartbeats (this over `heartbeatMs` of them), so that a mark left
   * by a checker that stopped running lapses by itself (docs/architecture.md §4).
   */
  markTtlMs: ms(1000, 3_600_000).default(30_000),
});

/** The failover settings a config gets when it names none: the one home of these defaults. */
export const FAILOVER_DEFAULTS: z.output<typeof FailoverSchema> = FailoverSchema.parse({});

/**
 * Route 53 weights in active-active (the zone and record name are deployment
 * facts, given to the health checker by the stack or the local fleet).
 */
export const DnsSchema = z.strictObject({
  /** TTL of the records: how long a client keeps an answer, so how long a weight change takes to reach it. */
  ttlS: z.int().min(1).max(86_400).default(10),
  /** A healthy node's weight (its capacity share), 0-255 as in Route 53. */
  weight: z.int().min(0).max(255).default(100),
  /** Per-node weights by node name (`node-0`; the node id of a node without one), for nodes of other sizes. */
  nodeWeights: z.record(z.string().min(1).max(256), z.int().min(0).max(255)).default({}),
  /** A recovered node's weight ramps back over this many checker runs (slow start in DNS). */
  rampRuns: z.int().min(1).max(100).default(4),
});

export const FleetConfigSchema = z
  .strictObject({
    listeners: z.array(ListenerSchema).min(1).max(64),
    pools: z.record(name, PoolSchema),
    timeouts: TimeoutsSchema.prefault({}),
    limits: LimitsSchema.prefault({}),
    retries: RetriesSchema.prefault({}),
    failover: FailoverSchema.prefault({}),
    dns: DnsSchema.prefault({}),
  })
  .superRefine((doc, ctx) => {
    // Cross-field rules, each reported at the path of the field to change.
    const seen = new Map<string, number>();
    doc.listeners.forEach((l, i) => {
      if (!(l.pool in doc.pools)) {
        ctx.addIssue({
          code: "custom",
          path: ["listeners", i, "pool"],
          message: `names pool '${l.pool}', which is not in pools (${Object.keys(doc.pools).join(", ") || "none"})`,
        });
      }
      const at = `${l.bind}:${l.port}`;
      const other = seen.get(at);
      if (other !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["listeners", i, "port"],
          message: `${at} is already used by listeners[${other}]`,
        });
      }
      seen.set(at, i);
      if (l.protocol === "tcp" && l.trustedProxies.length > 0) {
        ctx.addIssue({
          code: "custom",
          path: ["listeners", i, "trustedProxies"],
          message: "applies to http listeners only (a tcp listener sets no forwarded headers)",
        });
      }
      const names = doc.listeners.findIndex((o) => o.name === l.name);
      if (names !== i) {
        ctx.addIssue({
          code: "custom",
          path: ["listeners", i, "name"],
          message: `'${l.name}' is already the name of listeners[${names}]`,
        });
      }
    });
    for (const [poolName, pool] of Object.entries(doc.pools)) {
      if (pool.algorithm === "consistent-hash" && !pool.hashKey) {
        ctx.addIssue({
          code: "custom",
          path: ["pools", poolName, "hashKey"],
          message: "is required when algorithm is 'consistent-hash'",
        });
      }
      if (pool.hashKey && pool.hashKey.source !== "client-ip" && !pool.hashKey.name) {
        ctx.addIssue({
          code: "custom",
          path: ["pools", poolName, "hashKey", "name"],
          message: `is required when source is '${pool.hashKey.source}'`,
        });
      }
      const hc = pool.healthCheck;
      if (hc.timeoutMs >= hc.intervalMs) {
        ctx.addIssue({
          code: "custom",
          path: ["pools", poolName, "healthCheck", "timeoutMs"],
          message: `must be below intervalMs (${hc.intervalMs})`,
        });
      }
      if (hc.expectStatus[0] > hc.expectStatus[1]) {
        ctx.addIssue({
          code: "custom",
          path: ["pools", poolName, "healthCheck", "expectStatus"],
          message: "must be [lowest, highest]",
        });
      }
      const ids = new Map<string, number>();
      pool.backends.forEach((b, i) => {
        const id = backendId(b);
        const other = ids.get(id);
        if (other !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: ["pools", poolName, "backends", i],
            message: `backend id '${id}' is already used by backends[${other}]`,
          });
        }
        ids.set(id, i);
      });
      if (pool.backends.every((b) => b.weight === 0)) {
        ctx.addIssue({
          code: "custom",
          path: ["pools", poolName, "backends"],
          message: "at least one backend needs a weight above 0",
        });
      }
    }
    if (doc.failover.heartbeatMs >= doc.failover.leaseMs) {
      ctx.addIssue({
        code: "custom",
        path: ["failover", "heartbeatMs"],
        message: `must be below leaseMs (${doc.failover.leaseMs})`,
      });
    }
  });

/** A fleet configuration as written by an operator (defaults may be left out). */
export type FleetConfigInput = z.input<typeof FleetConfigSchema>;
/** A validated fleet configuration with every default filled in. */
export type FleetConfig = z.output<typeof FleetConfigSchema>;
export type PoolConfig = FleetConfig["pools"][string];
export type BackendConfig = PoolConfig["backends"][number];
export type ListenerConfig = FleetConfig["listeners"][number];
export type DnsConfig = FleetConfig["dns"];

/** The id of a backend: its `id`, or `host:port`. */
export function backendId(b: { id?: string | undefined; host: string; port: number }): string {
  return b.id ?? `${b.host}:${b.port}`;
}

/** Turns a zod path into the form operators read: `pools.web.backends[2].port`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}

/**
 * Validates a document and fills in defaults. Throws `ConfigInvalidError`
 * listing every bad field; `source` (a file name) is named in the message.
 */
export function parseFleetConfig(input: unknown, source?: string): FleetConfig {
  const result = FleetConfigSchema.safeParse(input);
  if (result.success) return result.data;
  const issues: FieldIssue[] = result.error.issues.map((i) => ({
    path: formatPath(i.path),
    message: i.message,
  }));
  throw new ConfigInvalidError(issues, source);
}

/** Reads a `.yaml`, `.yml` or `.json` file and validates it. */
export async function loadFleetConfigFile(file: string): Promise<FleetConfig> {
  const text = await readFile(file, "utf8");
  return parseFleetConfig(parseConfigText(text, file), file);
}

/** Parses YAML or JSON text (by the file's extension; YAML otherwise) without validating. */
export function parseConfigText(text: string, file = "config.yaml"): unknown {
  const ext = extname(file).toLowerCase();
  try {
    if (ext === ".json") return JSON.parse(text);
    return parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new ConfigInvalidError(
      [{ path: "", message: `not valid ${ext === ".json" ? "JSON" : "YAML"}: ${message}` }],
      file,
    );
  }
}
