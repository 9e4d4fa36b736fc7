/**
 * A fault-injecting HTTP proxy between the AWS SDK and the emulator. Tests make
 * AWS faults with it instead of mocking the SDK: added latency, a response
 * dropped after the request was forwarded (the write lands, the answer never
 * arrives), a reset connection (nothing forwarded), or an error answer
 * (500, throttling) in the service's own wire format.
 *
 * Rules are tried in order; the first that matches and has uses left applies.
 */
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

interface ActiveRule {
  rule: FaultRule;
  left: number;
  hits: number;
}

export class FaultProxy {
  private server: Server | undefined;
  private readonly rules: ActiveRule[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256 });
  private readonly timers = new Set<NodeJS.Timeout>();
  private target: URL;
  endpoint = "";
  requests = 0;
  /** Requests seen, by operation (`DynamoDB.GetItem`, `EC2.DescribeAddresses`, ...). */
  readonly byOperation = new Map<string, number>();

  constructor(targetEndpoint: string) {
    this.target = new URL(targetEndpoint);
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
        const forward = (onDone: (status: number, headers: IncomingHttpHeaders, data: Buffer) => void) => {
          const up = request(
            {
              host: this.target.hostname,
              port: this.target.port,
              method: fr.method,
              path: fr.url,
              headers: req.headers,
              agent: this.agent,
            },
            (upRes) => {
              const parts: Buffer[] = [];
              upRes.on("data", (c: Buffer) => parts.push(c));
              upRes.on("end", () => onDone(upRes.statusCode ?? 502, upRes.headers, Buffer.concat(parts)));
            },
          );
          up.on("error", () => req.socket.destroy());
          up.end(body);
        };
        const reply = (status: number, headers: IncomingHttpHeaders, data: Buffer) => {
          if (res.destroyed) return;
          res.writeHead(status, headers);
          res.end(data);
        };
        if (!action) return forward(reply);
        switch (action.kind) {
          case "latency": {
            const t = setTimeout(() => {
              this.timers.delete(t);
              forward(reply);
            }, action.ms);
            this.timers.add(t);
            return;
          }
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
    this.clear();
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    this.agent.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
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
