/**
 * A fault-injecting HTTP proxy between the AWS SDK and the emulator. Tests make
 * AWS faults with it instead of mocking the SDK: added latency, a response
 * dropped after the request was forwarded (the write lands, the answer never
 * arrives), a reset connection (nothing forwarded), no answer at all, an
 * answer that stalls in its body, or an error answer (500, throttling) in the
 * service's own wire format.
 *
 * Rules are tried in order; the first that matches and has uses left applies.
 *
 * With a `RealisticMode`, every request no rule takes meets AWS as it is
 * rather than as the emulator is (docs/architecture.md §9): eventually
 * consistent Elastic IPs, Route 53 changes that stay PENDING, Route 53's
 * request rate, DynamoDB's latency. Its randomness comes from a seeded
 * generator (one stream per behaviour), so a failing run can be replayed
 * with its seed; requests that race each other may still draw in another
 * order.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { Agent, createServer, type IncomingHttpHeaders, request, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface FaultRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export type FaultAction =
  | { readonly kind: "latency"; readonly ms: number }
  /** Forwards at once and hands the emulator's answer on `ms` later: the call took effect before its caller hears of it. */
  | { readonly kind: "slow-answer"; readonly ms: number }
  | { readonly kind: "drop-response" }
  | { readonly kind: "reset" }
  | { readonly kind: "hang" }
  /** Sends an answer's head and a byte of its body, then nothing: only a bound on the whole attempt ends it. */
  | { readonly kind: "stall-body" }
  | { readonly kind: "error"; readonly status: number; readonly awsType: string };

export interface FaultRule {
  readonly match?: (req: FaultRequest) => boolean;
  readonly action: FaultAction;
  /** How many requests it applies to. @default unlimited */
  readonly times?: number;
}

/** Matches DynamoDB JSON-protocol calls of one operation, e.g. `UpdateItem`. */
export function dynamoOp(op: string, bodyIncludes?: string): (req: FaultRequest) => boolean {
  return (req) =>
    String(req.headers["x-amz-target"] ?? "").endsWith(`.${op}`) &&
    (bodyIncludes === undefined || req.body.includes(bodyIncludes));
}

/** Matches one operation as `operationOf` names it, e.g. `EC2.DescribeAddresses`, `Route53.GetChange`. */
export function awsOp(name: string): (req: FaultRequest) => boolean {
  return (req) => operationOf(req.headers, Buffer.from(req.body), req.method, req.url) === name;
}

export const THROTTLING: FaultAction = { kind: "error", status: 400, awsType: "ThrottlingException" };
export const INTERNAL_ERROR: FaultAction = { kind: "error", status: 500, awsType: "InternalServerError" };

/** Milliseconds `[min, max]`, drawn uniformly. */
export type MsRange = readonly [number, number];

/** How far from the emulator's kindness the realistic mode goes; each field is one AWS behaviour. */
export interface RealisticMode {
  /**
   * After an AssociateAddress or DisassociateAddress is applied, DescribeAddresses
   * shows the address as it was before for this long (EC2 is eventually consistent).
   */
  readonly describeStaleMs: MsRange;
  /** AssociateAddress is answered at once and applied this long after (accepted, applied later). */
  readonly associateApplyMs: MsRange;
  /** GetChange answers PENDING until this long after the ChangeResourceRecordSets. */
  readonly route53PendingMs: MsRange;
  /** Route 53 API calls a second (a token bucket a second deep); above it, `Throttling`. */
  readonly route53CallsPerS: number;
  /** Latency added to each DynamoDB call. */
  readonly dynamoLatencyMs: MsRange;
}

/**
 * AWS's own figures, Route 53's propagation scaled from 20-60 s to 1-5 s so
 * that tests stay short. The rate is Route 53's documented 5 a second per
 * account.
 */
export const AWS_LIKE: RealisticMode = {
  describeStaleMs: [0, 2000],
  associateApplyMs: [0, 1000],
  route53PendingMs: [1000, 5000],
  route53CallsPerS: 5,
  dynamoLatencyMs: [0, 30],
};

/**
 * The realistic mode the environment asks for: on (AWS_LIKE) unless
 * `HAFLEET_REALISTIC=0`; `HAFLEET_REALISTIC_SEED` replays a run (else a fresh
 * seed).
 */
export function realisticFromEnv(
  env: NodeJS.ProcessEnv,
): { readonly mode: RealisticMode; readonly seed: number } | undefined {
  const on = env.HAFLEET_REALISTIC ?? "";
  if (on === "0") return undefined;
  if (on !== "" && on !== "1")
    throw new Error(`HAFLEET_REALISTIC must be 1 (on, the default) or 0 (off), got '${on}'`);
  const given = env.HAFLEET_REALISTIC_SEED;
  return { mode: AWS_LIKE, seed: realisticSeed(given, "HAFLEET_REALISTIC_SEED") };
}

/** `given` as a seed (a fresh one when undefined or empty); throws naming `what` when it is not one. */
export function realisticSeed(given: string | undefined, what: string): number {
  if (given === undefined || given === "") return randomBytes(4).readUInt32BE(0);
  const seed = Number(given);
  if (!/^\d+$/.test(given) || !Number.isSafeInteger(seed) || seed >= 2 ** 32)
    throw new Error(`${what} must be a whole number from 0 to 4294967295, got '${given}'`);
  return seed;
}

/** Throws naming the field of `mode` that is not a valid range or rate. */
export function checkRealisticMode(mode: RealisticMode): RealisticMode {
  for (const key of ["describeStaleMs", "associateApplyMs", "route53PendingMs", "dynamoLatencyMs"] as const) {
    const [lo, hi] = mode[key];
    if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo >= 0 && hi >= lo))
      throw new Error(`realistic mode: ${key} must be [min, max] with 0 <= min <= max, got [${lo}, ${hi}]`);
  }
  if (!(mode.route53CallsPerS > 0))
    throw new Error(`realistic mode: route53CallsPerS must be above 0, got ${mode.route53CallsPerS}`);
  return mode;
}

/** A seeded generator of floats in [0, 1) (xorshift32, scrambled by a multiply). */
export function seededRandom(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return (Math.imul(x, 0x2545f491) >>> 0) / 2 ** 32;
  };
}

/**
 * The realistic mode's stream for one behaviour (`stale`, `apply`, `pending`,
 * `dynamo`): independent, so that DynamoDB's traffic does not shift EC2's draws.
 */
export function stream(seed: number, name: string): () => number {
  let h = seed >>> 0;
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return seededRandom(h);
}

/** What the realistic mode did, for tests and for the run's summary. */
export interface RealismStats {
  delayedAssociations: number;
  staleAnswers: number;
  pendingAnswers: number;
  throttled: number;
  /** Accepted AssociateAddress calls that the emulator refused when they were applied. */
  readonly lateFailures: string[];
}

interface ActiveRule {
  rule: FaultRule;
  left: number;
  hits: number;
}

type Reply = (status: number, headers: IncomingHttpHeaders, data: Buffer) => void;

interface Realism {
  readonly mode: RealisticMode;
  readonly seed: number;
  readonly random: Record<"stale" | "apply" | "pending" | "dynamo", () => number>;
  /** The last item the emulator gave for each address in a DescribeAddresses answer, by allocation id. */
  readonly seen: Map<string, string>;
  /** Addresses whose answers show an earlier item until a time (performance.now()). */
  readonly stale: Map<string, { untilMs: number; item: string }>;
  /** The last delayed AssociateAddress of each address: they are applied in the order they came. */
  readonly applying: Map<string, Promise<void>>;
  /** Route 53 changes this proxy named, and when each turns INSYNC. */
  readonly changes: Map<string, { insyncAtMs: number; submittedAt: string }>;
  readonly bucket: { tokens: number; atMs: number };
}

export interface FaultProxyOptions {
  /** Meet AWS as it is for every request no rule takes. @default off */
  readonly realistic?: { readonly mode: RealisticMode; readonly seed: number };
}

export class FaultProxy {
  private server: Server | undefined;
  private readonly rules: ActiveRule[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256 });
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly realism: Realism | undefined;
  private closed = false;
  private target: URL;
  endpoint = "";
  requests = 0;
  /** Requests seen, by operation (`DynamoDB.GetItem`, `EC2.DescribeAddresses`, ...). */
  readonly byOperation = new Map<string, number>();
  readonly realismStats: RealismStats = {
    delayedAssociations: 0,
    staleAnswers: 0,
    pendingAnswers: 0,
    throttled: 0,
    lateFailures: [],
  };

  constructor(targetEndpoint: string, options: FaultProxyOptions = {}) {
    this.target = new URL(targetEndpoint);
    const r = options.realistic;
    if (r) {
      const mode = checkRealisticMode(r.mode);
      this.realism = {
        mode,
        seed: r.seed,
        random: {
          stale: stream(r.seed, "stale"),
          apply: stream(r.seed, "apply"),
          pending: stream(r.seed, "pending"),
          dynamo: stream(r.seed, "dynamo"),
        },
        seen: new Map(),
        stale: new Map(),
        applying: new Map(),
        changes: new Map(),
        bucket: { tokens: bucketDepth(mode), atMs: performance.now() },
      };
    }
  }

  /** The realistic mode's seed (undefined without one). */
  get seed(): number | undefined {
    return this.realism?.seed;
  }

  /** Resolves once every AssociateAddress accepted so far has been applied (or refused). */
  async settled(): Promise<void> {
    const applying = this.realism?.applying;
    if (!applying) return;
    for (;;) {
      const now = [...applying.values()];
      await Promise.all(now);
      if ([...applying.values()].every((p) => now.includes(p))) return;
    }
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.requests++;
        const body = Buffer.concat(chunks);
        const op = operationOf(req.headers, body, req.method, req.url);
        this.byOperation.set(op, (this.byOperation.get(op) ?? 0) + 1);
        const fr: FaultRequest = {
          method: req.method ?? "GET",
          url: req.url ?? "/",
          headers: req.headers,
          body: body.toString(),
        };
        const active = this.rules.find((r) => r.left > 0 && (!r.rule.match || r.rule.match(fr)));
        if (active) {
          active.left--;
          active.hits++;
        }
        const action = active?.rule.action;
        const forward = (onDone: Reply) => this.forward(fr, body, onDone, () => req.socket.destroy());
        const reply: Reply = (status, headers, data) => {
          if (res.destroyed) return;
          res.writeHead(status, headers);
          res.end(data);
        };
        if (!action) return this.realism ? this.realistic(op, fr, body, reply) : forward(reply);
        switch (action.kind) {
          case "latency":
            return this.later(action.ms, () => forward(reply));
          case "slow-answer":
            return forward((status, headers, data) =>
              this.later(action.ms, () => reply(status, headers, data)),
            );
          case "drop-response":
            return forward(() => req.socket.destroy());
          case "reset":
            return req.socket.destroy();
          case "hang":
            return; // never answers; the caller's timeout must fire
          case "stall-body":
            // At once, not after the emulator's answer: its head must arrive within any bound.
            res.writeHead(200, { "content-type": "text/xml", "content-length": "4096" });
            res.write("<");
            return;
          case "error": {
            const payload = JSON.stringify({
              __type: `com.amazonaws.dynamodb.v20120810#${action.awsType}`,
              message: `injected ${action.awsType}`,
            });
            res.writeHead(action.status, {
              "content-type": "application/x-amz-json-1.0",
              "x-amzn-errortype": action.awsType,
              "content-length": Buffer.byteLength(payload),
            });
            res.end(payload);
          }
        }
      });
    });
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Adds a rule; the returned function removes it and tells how often it applied. */
  add(rule: FaultRule): { remove: () => void; hits: () => number } {
    const active: ActiveRule = { rule, left: rule.times ?? Number.POSITIVE_INFINITY, hits: 0 };
    this.rules.push(active);
    return {
      remove: () => {
        const i = this.rules.indexOf(active);
        if (i >= 0) this.rules.splice(i, 1);
      },
      hits: () => active.hits,
    };
  }

  clear(): void {
    this.rules.length = 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.clear();
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    this.agent.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private forward(fr: FaultRequest, body: Buffer, onDone: Reply, onError: (err: Error) => void): void {
    const up = request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: fr.method,
        path: fr.url,
        headers: fr.headers,
        agent: this.agent,
      },
      (upRes) => {
        const parts: Buffer[] = [];
        upRes.on("data", (c: Buffer) => parts.push(c));
        upRes.on("end", () => onDone(upRes.statusCode ?? 502, upRes.headers, Buffer.concat(parts)));
      },
    );
    up.on("error", onError);
    up.end(body);
  }

  /** Runs `fn` after `ms`, unless the proxy closed meanwhile. */
  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  // ---- the realistic mode ----------------------------------------------------

  private realistic(op: string, fr: FaultRequest, body: Buffer, reply: Reply) {
    const r = this.realism!;
    const forward = (onDone: Reply) => this.forward(fr, body, onDone, () => reply(502, {}, Buffer.alloc(0)));
    if (op === "EC2.AssociateAddress") return this.associateLater(fr, body, reply);
    if (op === "EC2.DisassociateAddress") {
      const associationId = new URLSearchParams(fr.body).get("AssociationId");
      const changing = [...r.seen]
        .filter(([, item]) => associationId && tagValue(item, "associationId") === associationId)
        .map(([allocationId]) => this.changing(allocationId));
      return forward((status, headers, data) => {
        for (const done of changing) done(status === 200);
        reply(status, headers, data);
      });
    }
    if (op === "EC2.DescribeAddresses") {
      return forward((status, headers, data) =>
        status === 200 ? reply(status, ...this.staleView(headers, data)) : reply(status, headers, data),
      );
    }
    if (op.startsWith("Route53.")) {
      if (!this.takeRoute53Token()) return reply(...route53Throttling());
      if (op === "Route53.ChangeResourceRecordSets") {
        return forward((status, headers, data) =>
          status === 200 ? reply(status, ...this.pendingChange(headers, data)) : reply(status, headers, data),
        );
      }
      const change = op === "Route53.GetChange" ? r.changes.get(lastSegment(fr.url)) : undefined;
      if (change) return reply(200, ...this.changeStatus(lastSegment(fr.url), change));
      return forward(reply);
    }
    if (op.startsWith("DynamoDB.")) {
      return this.later(draw(r.random.dynamo, r.mode.dynamoLatencyMs), () => forward(reply));
    }
    forward(reply);
  }

  /** Answers an AssociateAddress at once and applies it later, in order with the address's others. */
  private associateLater(fr: FaultRequest, body: Buffer, reply: Reply) {
    const r = this.realism!;
    const params = new URLSearchParams(fr.body);
    const allocationId = params.get("AllocationId");
    if (!allocationId) return this.forward(fr, body, reply, () => reply(502, {}, Buffer.alloc(0)));
    this.realismStats.delayedAssociations++;
    const applyAtMs = performance.now() + draw(r.random.apply, r.mode.associateApplyMs);
    const what = `AssociateAddress ${allocationId} -> ${params.get("InstanceId") ?? "?"}`;
    const previous = r.applying.get(allocationId) ?? Promise.resolve();
    const applied = previous
      .then(
        () => new Promise<void>((resolve) => this.later(Math.max(0, applyAtMs - performance.now()), resolve)),
      )
      .then(
        () =>
          new Promise<void>((resolve) => {
            const changing = this.changing(allocationId);
            this.forward(
              fr,
              body,
              (status, _headers, data) => {
                changing(status === 200);
                if (status !== 200)
                  this.realismStats.lateFailures.push(`${what}: HTTP ${status} ${errorCode(data)}`);
                resolve();
              },
              (err) => {
                changing(false);
                this.realismStats.lateFailures.push(`${what}: ${err.message}`);
                resolve();
              },
            );
          }),
      );
    r.applying.set(allocationId, applied);
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<AssociateAddressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">' +
      `<requestId>${randomUUID()}</requestId><return>true</return>` +
      `<associationId>eipassoc-${randomBytes(8).toString("hex").slice(0, 17)}</associationId>` +
      "</AssociateAddressResponse>";
    reply(200, xmlHeaders("text/xml;charset=UTF-8", xml), Buffer.from(xml));
  }

  /**
   * A change of the address's association is sent to the emulator: from now on its DescribeAddresses
   * answers show the item as it was, while the emulator applies it (an answer racing the change may
   * already show it) and, once applied, for the stale window. The returned function tells whether it
   * applied; one that did not leaves the answers as they were.
   */
  private changing(allocationId: string): (applied: boolean) => void {
    const r = this.realism!;
    const before = r.seen.get(allocationId);
    if (before === undefined) return () => {}; // never described: no earlier answer to give
    // Still in an earlier change's window, answers go on showing what they showed.
    const open = r.stale.get(allocationId);
    const earlier = open && open.untilMs > performance.now() ? open : undefined;
    const window = { untilMs: Number.POSITIVE_INFINITY, item: earlier?.item ?? before };
    r.stale.set(allocationId, window);
    return (applied) => {
      if (r.stale.get(allocationId) !== window) return; // a later change took over the window
      if (applied) window.untilMs = performance.now() + draw(r.random.stale, r.mode.describeStaleMs);
      else if (earlier) r.stale.set(allocationId, earlier);
      else r.stale.delete(allocationId);
    };
  }

  /** The emulator's DescribeAddresses answer, with each address in a stale window as it was. */
  private staleView(headers: IncomingHttpHeaders, data: Buffer): [IncomingHttpHeaders, Buffer] {
    const r = this.realism!;
    const xml = data.toString("utf8");
    const now = performance.now();
    let out = "";
    let at = 0;
    let rewritten = false;
    for (const [start, end] of topLevelItems(xml, "addressesSet")) {
      const item = xml.slice(start, end);
      const allocationId = tagValue(item, "allocationId");
      if (!allocationId) continue;
      r.seen.set(allocationId, item);
      const stale = r.stale.get(allocationId);
      if (!stale) continue;
      if (stale.untilMs <= now) {
        r.stale.delete(allocationId);
        continue;
      }
      if (stale.item === item) continue;
      out += xml.slice(at, start) + stale.item;
      at = end;
      rewritten = true;
      this.realismStats.staleAnswers++;
    }
    if (!rewritten) return [headers, data];
    out += xml.slice(at);
    return [withLength(headers, out), Buffer.from(out)];
  }

  /** Names the change uniquely (the emulator reuses one id) and reports it PENDING. */
  private pendingChange(headers: IncomingHttpHeaders, data: Buffer): [IncomingHttpHeaders, Buffer] {
    const r = this.realism!;
    const id = `C${randomBytes(7).toString("hex").toUpperCase()}`;
    const submittedAt = new Date().toISOString();
    r.changes.set(id, {
      insyncAtMs: performance.now() + draw(r.random.pending, r.mode.route53PendingMs),
      submittedAt,
    });
    this.realismStats.pendingAnswers++;
    const xml = data
      .toString("utf8")
      .replace(/<Id>[^<]*<\/Id>/, `<Id>/change/${id}</Id>`)
      .replace(/<Status>[^<]*<\/Status>/, "<Status>PENDING</Status>");
    return [withLength(headers, xml), Buffer.from(xml)];
  }

  private changeStatus(
    id: string,
    change: { insyncAtMs: number; submittedAt: string },
  ): [IncomingHttpHeaders, Buffer] {
    const pending = performance.now() < change.insyncAtMs;
    if (pending) this.realismStats.pendingAnswers++;
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<GetChangeResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeInfo>' +
      `<Id>/change/${id}</Id><Status>${pending ? "PENDING" : "INSYNC"}</Status>` +
      `<SubmittedAt>${change.submittedAt}</SubmittedAt></ChangeInfo></GetChangeResponse>`;
    return [xmlHeaders("text/xml", xml), Buffer.from(xml)];
  }

  /** Route 53's rate as a token bucket; false when the call is over it. */
  private takeRoute53Token(): boolean {
    const r = this.realism!;
    const now = performance.now();
    const rate = r.mode.route53CallsPerS;
    r.bucket.tokens = Math.min(bucketDepth(r.mode), r.bucket.tokens + ((now - r.bucket.atMs) * rate) / 1000);
    r.bucket.atMs = now;
    if (r.bucket.tokens < 1) {
      this.realismStats.throttled++;
      return false;
    }
    r.bucket.tokens -= 1;
    return true;
  }
}

/** A second's worth of calls, and at least one. */
function bucketDepth(mode: RealisticMode): number {
  return Math.max(1, mode.route53CallsPerS);
}

function draw(random: () => number, [lo, hi]: MsRange): number {
  return lo + random() * (hi - lo);
}

/** Route 53's answer above its rate: HTTP 400, its XML error format, code `Throttling`. */
function route53Throttling(): [number, IncomingHttpHeaders, Buffer] {
  const requestId = randomUUID();
  const xml =
    '<?xml version="1.0"?>\n' +
    '<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type>' +
    "<Code>Throttling</Code><Message>Rate exceeded</Message></Error>" +
    `<RequestId>${requestId}</RequestId></ErrorResponse>`;
  return [400, { ...xmlHeaders("text/xml", xml), "x-amzn-requestid": requestId }, Buffer.from(xml)];
}

function xmlHeaders(contentType: string, body: string): IncomingHttpHeaders {
  return { "content-type": contentType, "content-length": String(Buffer.byteLength(body)) };
}

function withLength(headers: IncomingHttpHeaders, body: string): IncomingHttpHeaders {
  const { "transfer-encoding": _chunked, ...rest } = headers;
  return { ...rest, "content-length": String(Buffer.byteLength(body)) };
}

function lastSegment(url: string): string {
  return (url.split("?")[0] ?? "").split("/").pop() ?? "";
}

/** The text of the first `<tag>` in `xml` (undefined when absent or empty). */
function tagValue(xml: string, tag: string): string | undefined {
  return new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(xml)?.[1] || undefined;
}

function errorCode(data: Buffer): string {
  return tagValue(data.toString("utf8"), "Code") ?? "";
}

/** Start and end offsets of each `<item>` directly inside `<set>` (items nest: tag sets are items too). */
function topLevelItems(xml: string, set: string): [number, number][] {
  const open = xml.indexOf(`<${set}>`);
  if (open < 0) return [];
  const close = xml.indexOf(`</${set}>`, open);
  const out: [number, number][] = [];
  const re = /<(\/?)item>/g;
  re.lastIndex = open;
  let depth = 0;
  let start = -1;
  for (let m = re.exec(xml); m && (close < 0 || m.index < close); m = re.exec(xml)) {
    if (!m[1]) {
      if (depth++ === 0) start = m.index;
    } else if (--depth === 0) out.push([start, m.index + m[0].length]);
  }
  return out;
}

/** `DynamoDB.GetItem` from the JSON protocol's target header; `EC2.DescribeAddresses` from a query body. */
export function operationOf(headers: IncomingHttpHeaders, body: Buffer, method = "GET", url = "/"): string {
  const target = String(headers["x-amz-target"] ?? "");
  if (target)
    return `${target.startsWith("DynamoDB") ? "DynamoDB" : target.split("_")[0]}.${target.split(".").pop()}`;
  const action = /(?:^|&)Action=([A-Za-z]+)/.exec(body.toString("latin1"));
  if (action) return `${/Version=2016-11-15/.test(body.toString("latin1")) ? "EC2" : "Query"}.${action[1]}`;
  const route53 = route53Operation(method, url.split("?")[0] ?? "");
  return route53 ? `Route53.${route53}` : "other";
}

/** Route 53's REST API, by method and path (the calls hafleet makes). */
function route53Operation(method: string, path: string): string | undefined {
  const m = /^\/2013-04-01\/(hostedzone|change|healthcheck)(?:\/([^/]+))?(?:\/(rrset))?\/?$/.exec(path);
  if (!m) return undefined;
  const [, kind, id, rrset] = m;
  if (kind === "change") return "GetChange";
  if (kind === "healthcheck")
    return method === "POST" ? "CreateHealthCheck" : id ? "GetHealthCheck" : "ListHealthChecks";
  if (rrset) return method === "POST" ? "ChangeResourceRecordSets" : "ListResourceRecordSets";
  return method === "POST" ? "CreateHostedZone" : id ? "GetHostedZone" : "ListHostedZones";
}
