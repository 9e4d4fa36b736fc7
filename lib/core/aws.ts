/**
 * AWS SDK client settings shared by every hafleet process. Endpoint, region and
 * credentials come from the usual AWS variables (`AWS_ENDPOINT_URL`,
 * `AWS_REGION`, ...), so the same code talks to AWS, LocalStack or moto.
 */
import { Agent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { NodeHttpHandler } from "@smithy/node-http-handler";

export interface AwsClientOptions {
  /** @default `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `us-east-1` */
  readonly region?: string;
  /** Overrides `AWS_ENDPOINT_URL` for this client only. @default the SDK's own resolution */
  readonly endpoint?: string;
  /** TCP connect timeout of one attempt. @default 1000 */
  readonly connectTimeoutMs?: number;
  /** Time for one attempt's answer. @default 3000 */
  readonly requestTimeoutMs?: number;
  /**
   * Attempts made by the SDK itself. The state store retries on its own (jittered,
   * only retryable errors, within the caller's deadline) and passes 1.
   * @default 3
   */
  readonly maxAttempts?: number;
}

export function resolveRegion(region?: string): string {
  return region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1";
}

export function awsClientConfig(options: AwsClientOptions = {}) {
  const agentOptions = { keepAlive: true, maxSockets: 64 };
  return {
    region: resolveRegion(options.region),
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: options.connectTimeoutMs ?? 1000,
      requestTimeout: options.requestTimeoutMs ?? 3000,
      httpAgent: new Agent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
    }),
  };
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
