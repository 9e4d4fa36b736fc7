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
import { createTwoFilesPatch } from "diff";
import { isNode, LineCounter, parseDocument, parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { z } from "zod";
import { parseCidr } from "./cidr";
import { ConfigInvalidError, type FieldIssue } from "./errors";
import { DEFAULT_LEASE_MS } from "./lease";

/** Fleet, listener and pool names: also DNS labels and DynamoDB key parts. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const NAME_RULE = "must be 1-63 lowercase letters, digits or '-'";
const name = z.string().regex(NAME_PATTERN, NAME_RULE);
const port = z.int().min(1).max(65535);
const ms = (min: number, max: number) => z.int().min(min).max(max);

export const BackendSchema = z.strictObject({
  id: z
    .string()
    .min(1)
    .max(128)
    .optional()
    .describe("Stable id used by sticky sessions and consistent hashing; defaults to `host:port`."),
  host: z.string().min(1).max(253).describe("The backend's address or DNS name."),
  port: port.describe("The backend's port."),
  weight: z
    .int()
    .min(0)
    .max(1000)
    .default(1)
    .describe("Relative share of traffic; 0 keeps the backend configured but sends it nothing new."),
  zone: z.string().max(64).optional().describe("Availability zone, for zone-aware reporting."),
});

export const HealthCheckSchema = z.strictObject({
  type: z
    .enum(["http", "tcp"])
    .default("http")
    .describe("`http` sends GET `path` and expects `expectStatus`; `tcp` only connects."),
  path: z.string().startsWith("/").max(1024).default("/").describe("The path an `http` check asks for."),
  expectStatus: z
    .tuple([z.int().min(100).max(599), z.int().min(100).max(599)])
    .default([200, 399])
    .describe("Inclusive range of statuses that count as healthy."),
  intervalMs: ms(100, 300_000).default(2000).describe("How often each node checks each backend."),
  timeoutMs: ms(10, 60_000)
    .default(1000)
    .describe("Must be below `intervalMs`, so that checks never pile up."),
  rise: z
    .int()
    .min(1)
    .max(100)
    .default(2)
    .describe("Consecutive successes that make an unhealthy backend healthy (HAProxy's default is 2)."),
  fall: z
    .int()
    .min(1)
    .max(100)
    .default(3)
    .describe("Consecutive failures that make a healthy backend unhealthy (HAProxy's default is 3)."),
});

export const OutlierSchema = z.strictObject({
  consecutiveFailures: z
    .int()
    .min(1)
    .max(1000)
    .default(5)
    .describe("Consecutive 5xx answers or connect failures that eject a backend (Envoy's default is 5)."),
  baseEjectionMs: ms(100, 3_600_000)
    .default(30_000)
    .describe("First ejection lasts this long; each further ejection of the same backend one more period."),
  maxEjectionPercent: z
    .int()
    .min(0)
    .max(100)
    .default(50)
    .describe("Never eject more than this share of a pool (Envoy's default is 10; ELB's panic is 50)."),
});

export const HashKeySchema = z.strictObject({
  source: z
    .enum(["client-ip", "header", "cookie"])
    .describe("What the key is: the client's address, a request header, or a cookie."),
  name: z
    .string()
    .min(1)
    .max(256)
    .optional()
    .describe("Header or cookie name; required unless `source` is `client-ip`."),
});

export const PoolSchema = z.strictObject({
  algorithm: z
    .enum(["round-robin", "weighted-round-robin", "least-outstanding", "consistent-hash"])
    .default("round-robin")
    .describe(
      "How a backend is picked: in turn, in turn by weight, the one with the fewest requests in flight, or by a key (`hashKey`) on a hash ring.",
    ),
  hashKey: HashKeySchema.optional().describe(
    "Required by `consistent-hash`; also the fallback key of sticky sessions.",
  ),
  backends: z.array(BackendSchema).min(1).max(1000).describe("The servers of this pool, 1 to 1000."),
  healthCheck: HealthCheckSchema.prefault({}).describe("Active health checks, run by every node."),
  outlier: OutlierSchema.prefault({}).describe(
    "Passive checks: a backend that keeps failing real requests is ejected for a while.",
  ),
  panicThresholdPercent: z
    .int()
    .min(0)
    .max(100)
    .default(50)
    .describe("Below this share of healthy backends, send to all of them (panic mode, as Envoy and ELB)."),
  slowStartMs: ms(0, 3_600_000)
    .default(0)
    .describe("A recovered backend's weight ramps from 10% to 100% over this long; 0 turns it off."),
});

export const StickinessSchema = z.strictObject({
  cookieName: z
    .string()
    .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/, "must be a valid cookie name token")
    .default("HAFLEET")
    .describe(
      "Cookie that carries the session key and its backend's hint (http listeners only; docs/architecture.md §7).",
    ),
  ttlS: z
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .default(3600)
    .describe("How long an idle session keeps its backend."),
});

export const ListenerSchema = z.strictObject({
  name: name.describe("The listener's name, unique in the fleet; a metric label."),
  protocol: z
    .enum(["http", "tcp"])
    .describe("`http`: an HTTP/1.1 reverse proxy; `tcp`: bytes both ways, one backend per connection."),
  port: port.describe("The port clients connect to."),
  bind: z
    .string()
    .min(1)
    .max(64)
    .default("0.0.0.0")
    .describe("Address to bind; `0.0.0.0` on EC2, a loopback address in local mode."),
  pool: name.describe("Name of the pool in `pools` that serves this listener."),
  stickiness: StickinessSchema.optional().describe(
    "Sticky sessions; on tcp listeners the key is the client address.",
  ),
  trustedProxies: z
    .array(
      z.string().superRefine((text, ctx) => {
        const c = parseCidr(text);
        if (typeof c === "string") ctx.addIssue({ code: "custom", message: c });
      }),
    )
    .max(1000)
    .default([])
    .describe(
      'Peers (CIDR blocks) whose forwarded headers are believed: from them the client\'s X-Forwarded-For is appended to and X-Forwarded-Proto/-Host kept; from anyone else they are replaced (README, "Forwarded headers and trust").',
    ),
});

export const TimeoutsSchema = z.strictObject({
  connectMs: ms(1, 600_000).default(2000).describe("TCP connect to a backend."),
  headMs: ms(1, 600_000)
    .default(10_000)
    .describe("A client must send the whole request head within this (slowloris defence)."),
  idleMs: ms(1, 3_600_000)
    .default(60_000)
    .describe("An idle connection (client or keep-alive upstream, an idle TCP stream) is closed after this."),
  clientMs: ms(1, 3_600_000)
    .default(60_000)
    .describe(
      "During an exchange, the longest the proxy waits on the client: for more of the request body (then 408), or for it to take answer bytes (HAProxy's `timeout client`). Inactivity, not a total.",
    ),
  serverMs: ms(1, 3_600_000)
    .default(60_000)
    .describe(
      "During an exchange, the longest the proxy waits on the backend: for its answer or its next answer bytes (504 when nothing was answered yet), or for it to take request bytes (HAProxy's `timeout server`, nginx's `proxy_read_timeout`). A download that keeps moving is never cut.",
    ),
  tunnelMs: ms(1, 86_400_000)
    .default(3_600_000)
    .describe(
      "An upgraded connection (WebSocket) with no byte either way for this long is closed (HAProxy's `timeout tunnel`).",
    ),
  requestMs: ms(1, 86_400_000)
    .optional()
    .describe(
      "Optional total for one exchange, first byte of the request to the last of the answer, however active.",
    ),
  drainMs: ms(0, 3_600_000)
    .default(30_000)
    .describe("On drain or shutdown, in-flight requests get this long to finish."),
  lingerMs: ms(1, 60_000)
    .default(2000)
    .describe(
      "A connection the proxy closes is destroyed this long after its last answer was written, whatever the peer does (it may keep sending, or never read): the lingering close of docs/architecture.md section 8.",
    ),
});

export const LimitsSchema = z.strictObject({
  maxHeaderBytes: z
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(16 * 1024)
    .describe("The longest request head (request line and headers) accepted; above it, 431."),
  maxBodyBytes: z
    .int()
    .min(0)
    .max(1024 * 1024 * 1024)
    .default(10 * 1024 * 1024)
    .describe("The largest request body accepted; above it, 413."),
  maxConnections: z
    .int()
    .min(1)
    .max(1_000_000)
    .default(10_000)
    .describe("Open client connections per worker process, all listeners together; above it, 503."),
});

export const RetriesSchema = z.strictObject({
  attempts: z
    .int()
    .min(0)
    .max(5)
    .default(1)
    .describe("Extra attempts of an idempotent request on another backend after a connect failure."),
  budgetPercent: z
    .int()
    .min(0)
    .max(100)
    .default(20)
    .describe("Retries may add at most this share on top of the requests in flight (Envoy's retry budget)."),
});

export const FailoverSchema = z.strictObject({
  mode: z
    .enum(["active-passive", "active-active"])
    .default("active-passive")
    .describe(
      "`active-passive`: the lease holder serves on the shared Elastic IP; `active-active`: every node serves, weighted in Route 53.",
    ),
  leaseMs: ms(300, 60_000)
    .default(DEFAULT_LEASE_MS)
    .describe(
      "How long a fleet lease lives after a renewal: the takeover time after a node dies, against how long a stall the holder survives; see `DEFAULT_LEASE_MS` in `lease.ts`.",
    ),
  heartbeatMs: ms(100, 60_000).default(1000).describe("How often each node writes its heartbeat."),
  markTtlMs: ms(1000, 3_600_000)
    .default(30_000)
    .describe(
      "How long the health checker's failed mark on a node holds unless the checker renews it, counted in the node's own heartbeats (this over `heartbeatMs` of them), so that a mark left by a checker that stopped running lapses by itself (docs/architecture.md §4).",
    ),
});

/** The failover settings a config gets when it names none: the one home of these defaults. */
export const FAILOVER_DEFAULTS: z.output<typeof FailoverSchema> = FailoverSchema.parse({});

/**
 * Route 53 weights in active-active (the zone and record name are deployment
 * facts, given to the health checker by the stack or the local fleet).
 */
export const DnsSchema = z.strictObject({
  ttlS: z
    .int()
    .min(1)
    .max(86_400)
    .default(10)
    .describe(
      "TTL of the records: how long a client keeps an answer, so how long a weight change takes to reach it.",
    ),
  weight: z
    .int()
    .min(0)
    .max(255)
    .default(100)
    .describe("A healthy node's weight (its capacity share), 0-255 as in Route 53."),
  nodeWeights: z
    .record(z.string().min(1).max(256), z.int().min(0).max(255))
    .default({})
    .describe(
      "Per-node weights by node name (`node-0`; the node id of a node without one), for nodes of other sizes.",
    ),
  rampRuns: z
    .int()
    .min(1)
    .max(100)
    .default(4)
    .describe("A recovered node's weight ramps back over this many checker runs (slow start in DNS)."),
});

export const FleetConfigSchema = z
  .strictObject({
    listeners: z.array(ListenerSchema).min(1).max(64).describe("The ports the fleet serves, 1 to 64."),
    pools: z.record(name, PoolSchema).describe("Groups of backends by name; each listener names one."),
    timeouts: TimeoutsSchema.prefault({}).describe(
      'Timeouts of the data plane (README, "Limits and timeouts").',
    ),
    limits: LimitsSchema.prefault({}).describe("Sizes and counts the proxy refuses above."),
    retries: RetriesSchema.prefault({}).describe("Retries of failed connects."),
    failover: FailoverSchema.prefault({}).describe("The lease, heartbeats and the checker's marks."),
    dns: DnsSchema.prefault({}).describe("Route 53 weights in active-active."),
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
export function parseFleetConfig(input: unknown, source?: string, locate?: LineLocator): FleetConfig {
  const result = FleetConfigSchema.safeParse(input);
  if (result.success) return result.data;
  const issues: FieldIssue[] = result.error.issues.map((i) => {
    // An unknown key is reported at its object: point at the key itself.
    const at = i.code === "unrecognized_keys" && i.keys.length > 0 ? [...i.path, i.keys[0]!] : i.path;
    const line = locate?.(at);
    return { path: formatPath(i.path), message: i.message, ...(line === undefined ? {} : { line }) };
  });
  throw new ConfigInvalidError(issues, source);
}

/** Reads a `.yaml`, `.yml` or `.json` file and validates it; a YAML file's errors name their lines. */
export async function loadFleetConfigFile(file: string): Promise<FleetConfig> {
  const text = await readFile(file, "utf8");
  return parseFleetConfig(parseConfigText(text, file), file, lineLocator(text, file));
}

/** The line (1-based) a field of a document is on, or undefined. */
export type LineLocator = (path: readonly PropertyKey[]) => number | undefined;

/**
 * Where the fields of a YAML text are: the line of the field at a path, or of
 * its nearest parent that is in the text (a missing field is reported at the
 * object that lacks it). Undefined for JSON, whose parser gives no positions.
 */
export function lineLocator(text: string, file = "config.yaml"): LineLocator | undefined {
  if (extname(file).toLowerCase() === ".json") return undefined;
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, uniqueKeys: true });
  if (doc.errors.length > 0) return undefined;
  return (path) => {
    for (let n = path.length; n > 0; n--) {
      const node = doc.getIn(path.slice(0, n) as unknown[], true);
      if (isNode(node) && node.range) return counter.linePos(node.range[0]).line;
    }
    return undefined;
  };
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

/**
 * A config as YAML that `loadFleetConfigFile` reads back to the same config:
 * what `hafleet config get` prints, and what `config diff` compares.
 */
export function configYaml(config: FleetConfig): string {
  return stringifyYaml(config, { lineWidth: 0 });
}

/**
 * The difference between two configs as a unified diff of their YAML, every
 * default filled in on both sides (so a file that leaves a default out does
 * not differ from a stored config that has it); "" when they are the same.
 */
export function configDiff(
  from: FleetConfig | undefined,
  to: FleetConfig,
  labels: { readonly from: string; readonly to: string },
): string {
  const a = from === undefined ? "" : configYaml(from);
  const b = configYaml(to);
  if (a === b) return "";
  return createTwoFilesPatch(labels.from, labels.to, a, b, undefined, undefined, { context: 3 })
    .split("\n")
    .filter((l) => !l.startsWith("====="))
    .join("\n");
}
