/**
 * AWS SDK client settings shared by every hafleet process. Endpoint, region and
 * credentials come from the usual AWS variables (`AWS_ENDPOINT_URL`,
 * `AWS_REGION`, ...), so the same code talks to AWS, LocalStack or moto.
 *
 * Every client built from `awsClientConfig` is bounded: no attempt outlives
 * `requestTimeoutMs`, so no call outlives `maxAttempts` of them and the SDK's
 * backoff between. A hung promotion or checker run would otherwise hold the
 * lease it acts under (docs/architecture.md §3) for as long as the server
 * keeps the socket open.
 */
import { Agent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { Readable } from "node:stream";
import { NodeHttpHandler } from "@smithy/node-http-handler";

export interface AwsClientOptions {
  /** @default `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `us-east-1` */
  readonly region?: string;
  /** Overrides `AWS_ENDPOINT_URL` for this client only. @default the SDK's own resolution */
  readonly endpoint?: string;
  /** TCP connect timeout of one attempt. @default 1000 */
  readonly connectTimeoutMs?: number;
  /**
   * Time for one attempt's whole answer, head and body; past it the attempt
   * fails with a `TimeoutError` (retried by the SDK, a `timeout` to
   * `describeAwsFailure`). @default 3000
   */
  readonly requestTimeoutMs?: number;
  /**
   * Attempts made by the SDK itself, each bounded by `requestTimeoutMs`. The
   * state store retries on its own (jittered, only retryable errors, within
   * the caller's deadline) and passes 1.
   * @default 3
   */
  readonly maxAttempts?: number;
}

export function resolveRegion(region?: string): string {
  return region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1";
}

export function awsClientConfig(options: AwsClientOptions = {}) {
  const agentOptions = { keepAlive: true, maxSockets: 64 };
  const attemptMs = options.requestTimeoutMs ?? 3000;
  return {
    region: resolveRegion(options.region),
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: new BoundedHttpHandler(attemptMs, {
      connectionTimeout: options.connectTimeoutMs ?? 1000,
      // Without `throwOnRequestTimeout` the handler only logs a warning when
      // `requestTimeout` passes, and the attempt waits on (@smithy/node-http-handler 4).
      requestTimeout: attemptMs,
      throwOnRequestTimeout: true,
      httpAgent: new Agent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
    }),
  };
}

type HandleArgs = Parameters<NodeHttpHandler["handle"]>;
type HandleResult = Awaited<ReturnType<NodeHttpHandler["handle"]>>;

/** The error of an attempt that ran out of time: a `TimeoutError`, as the SDK's own. */
function attemptTimedOut(ms: number): Error {
  return Object.assign(new Error(`no complete answer within ${ms} ms`), {
    name: "TimeoutError",
    code: "ETIMEDOUT",
  });
}

/**
 * The SDK's handler, with each attempt bounded as a whole. The handler's own
 * `requestTimeout` ends only the wait for the answer's head: a server that
 * sends a head and then stalls in the body holds the call forever. So every
 * attempt also gets an abort signal of its own (merged with the caller's)
 * and, once the head is in, the body is ended when the same bound passes.
 */
class BoundedHttpHandler extends NodeHttpHandler {
  constructor(
    private readonly attemptMs: number,
    options: ConstructorParameters<typeof NodeHttpHandler>[0],
  ) {
    super(options);
  }

  override async handle(request: HandleArgs[0], options: HandleArgs[1] = {}): Promise<HandleResult> {
    const bound = new AbortController();
    const timeout = attemptTimedOut(this.attemptMs);
    let body: Readable | undefined;
    const timer = setTimeout(() => {
      if (body) body.destroy(timeout);
      else bound.abort(timeout);
    }, this.attemptMs);
    const caller = options.abortSignal as AbortSignal | undefined;
    const onCallerAbort = () => bound.abort(caller?.reason);
    if (caller?.aborted) onCallerAbort();
    else caller?.addEventListener("abort", onCallerAbort);
    const done = () => {
      clearTimeout(timer);
      caller?.removeEventListener("abort", onCallerAbort);
    };
    let out: HandleResult;
    try {
      out = await super.handle(request, { ...options, abortSignal: bound.signal });
    } catch (err) {
      done();
      // The handler reports an abort as an AbortError, which the SDK does not retry:
      // an attempt that ran out of time is a timeout, as one without a head is.
      throw bound.signal.reason === timeout ? timeout : err;
    }
    const stream = out.response.body as Readable | undefined;
    if (stream && typeof stream.once === "function" && !stream.destroyed) {
      body = stream;
      // Whoever reads the body sees the timeout; this keeps an unread one from crashing the process.
      stream.once("error", () => {});
      stream.once("close", done);
    } else done();
    return out;
  }
}

/** What kind of failure an AWS call met; each service's client names it in its own codes. */
export type AwsFailureKind =
  | "timeout"
  | "throttled"
  | "not-found"
  | "denied"
  | "invalid"
  | "server"
  | "network"
  | "other";

/** What an AWS SDK (or network) error says, in the terms callers decide on. */
export interface AwsFailure {
  readonly name: string;
  readonly status: number | undefined;
  readonly kind: AwsFailureKind;
  /** `Name: message`, for error messages. */
  readonly detail: string;
  /** Throttling, 5xx, timeouts and connection failures: the same call may succeed later. */
  readonly retryable: boolean;
}

const THROTTLING = new Set([
  "Throttling",
  "ThrottlingException",
  "RequestLimitExceeded",
  "TooManyRequestsException",
  "PriorRequestNotComplete",
  "ProvisionedThroughputExceededException",
  "TransactionConflictException",
  "TransactionInProgressException",
  // Reaches here only when it is not a condition failure (the store tells those apart first).
  "TransactionCanceledException",
]);
const NETWORK = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

export function describeAwsFailure(err: unknown): AwsFailure {
  const e = err as Error & {
    $metadata?: { httpStatusCode?: number };
    $fault?: string;
    code?: string;
    cause?: { code?: string };
  };
  const name = e?.name ?? "Error";
  const status = e?.$metadata?.httpStatusCode;
  const message = e?.message ?? String(err);
  const kind = failureKind(name, status, e?.$fault, e?.code ?? e?.cause?.code, message);
  const retryable = kind === "timeout" || kind === "throttled" || kind === "server" || kind === "network";
  return { name, status, kind, detail: `${name}: ${message}`, retryable };
}

function failureKind(
  name: string,
  status: number | undefined,
  fault: string | undefined,
  sysCode: string | undefined,
  message: string,
): AwsFailureKind {
  if (name === "AbortError" || name === "TimeoutError" || name === "RequestTimeout") return "timeout";
  if (THROTTLING.has(name) || status === 429) return "throttled";
  if (name === "ResourceNotFoundException") return "not-found";
  if (name === "AccessDeniedException" || name === "UnrecognizedClientException" || status === 403)
    return "denied";
  if (name === "ValidationException" || name === "SerializationException") return "invalid";
  if (
    (status !== undefined && status >= 500) ||
    fault === "server" ||
    /InternalServerError|ServiceUnavailable/.test(name)
  )
    return "server";
  if (
    status === undefined &&
    (NETWORK.has(sysCode ?? "") || /socket hang up|ECONN|EPIPE|ETIMEDOUT|network/i.test(message))
  )
    return "network";
  return "other";
}
