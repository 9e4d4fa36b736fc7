/**
 * Errors of hafleet's runtime. Callers branch on `code` (stable, documented
 * here) or on the class, never on message text. `cause` keeps the AWS error or
 * the lower-level failure that led to this one.
 */

export type HafleetErrorCode =
  | "HAFLEET_CONFIG_INVALID"
  | "HAFLEET_CONFIG_CONFLICT"
  | "HAFLEET_CONFIG_MISSING"
  | "HAFLEET_SETTINGS_INVALID"
  | "HAFLEET_FENCED"
  | "HAFLEET_LEASE_LOST"
  | "HAFLEET_LEASE_HELD"
  | "HAFLEET_STORE_UNAVAILABLE"
  | "HAFLEET_STORE_THROTTLED"
  | "HAFLEET_STORE_TABLE_MISSING"
  | "HAFLEET_STORE_REQUEST_INVALID"
  | "HAFLEET_STORE_ACCESS_DENIED"
  | "HAFLEET_STORE"
  | "HAFLEET_EC2"
  | "HAFLEET_EC2_NOT_FOUND"
  | "HAFLEET_EC2_UNVERIFIED"
  | "HAFLEET_EVENT_INVALID"
  | "HAFLEET_NODE_UNKNOWN"
  | "HAFLEET_ROUTE53"
  | "HAFLEET_ROUTE53_CONFLICT"
  | "HAFLEET_PROXY_LISTEN"
  | "HAFLEET_PROXY_USAGE";

export class HafleetError extends Error {
  override readonly name: string = "HafleetError";
  readonly code: HafleetErrorCode;

  constructor(code: HafleetErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** One bad field of a document: where (`listeners[0].port`) and why. */
export interface FieldIssue {
  readonly path: string;
  readonly message: string;
  /** The line of the file the field is on (YAML files), 1-based. */
  readonly line?: number;
}

/** A config or settings document failed validation; nothing was written. */
export class ConfigInvalidError extends HafleetError {
  override readonly name = "ConfigInvalidError";
  readonly issues: readonly FieldIssue[];

  constructor(issues: readonly FieldIssue[], source?: string) {
    const where = source ? ` in ${source}` : "";
    const list = issues
      .map((i) => `${i.path || "(root)"}${i.line === undefined ? "" : ` (line ${i.line})`}: ${i.message}`)
      .join("; ");
    super("HAFLEET_CONFIG_INVALID", `invalid fleet config${where}: ${list}`);
    this.issues = issues;
  }
}

/** An optimistic-concurrency write lost: the stored version moved on. */
export class ConfigConflictError extends HafleetError {
  override readonly name = "ConfigConflictError";
  readonly expectedVersion: number;
  readonly actualVersion: number | undefined;

  constructor(fleetId: string, expectedVersion: number, actualVersion: number | undefined) {
    super(
      "HAFLEET_CONFIG_CONFLICT",
      `config of fleet '${fleetId}' changed concurrently: expected version ${expectedVersion}, ` +
        `found ${actualVersion ?? "none"}; re-read and apply the change again`,
    );
    this.expectedVersion = expectedVersion;
    this.actualVersion = actualVersion;
  }
}

/** Timing or sizing settings of an object are inconsistent; names the fields. */
export class SettingsError extends HafleetError {
  override readonly name = "SettingsError";
  constructor(message: string) {
    super("HAFLEET_SETTINGS_INVALID", message);
  }
}

/** A leader's write carried a token lower than the one recorded: refused, nothing changed. */
export class FencedError extends HafleetError {
  override readonly name = "FencedError";
  readonly token: number;

  constructor(what: string, token: number, detail?: string) {
    super(
      "HAFLEET_FENCED",
      `write to ${what} with fencing token ${token} refused${detail ? `: ${detail}` : ""}`,
    );
    this.token = token;
  }
}

/** The caller is no longer (or cannot confirm it is) the holder of a lease. */
export class LeaseLostError extends HafleetError {
  override readonly name = "LeaseLostError";
  constructor(name: string, reason: string) {
    super("HAFLEET_LEASE_LOST", `lease '${name}' lost: ${reason}`);
  }
}

/** An AWS call failed; translated from the SDK's error, which is kept as `cause`. */
export class AwsCallError extends HafleetError {
  override readonly name: string = "AwsCallError";
  /** True when the same request may succeed if sent again (throttling, 5xx, timeouts). */
  readonly retryable: boolean;
  /** The API operation that failed, e.g. `UpdateItem` or `AssociateAddress`. */
  readonly operation: string;

  constructor(
    code: HafleetErrorCode,
    operation: string,
    message: string,
    retryable: boolean,
    cause?: unknown,
  ) {
    super(code, `${operation}: ${message}`, { cause });
    this.retryable = retryable;
    this.operation = operation;
  }
}

/** Errors from the state store (DynamoDB). */
export class StoreError extends AwsCallError {
  override readonly name: string = "StoreError";
}

/** Errors from Route 53 (weighted records). */
export class Route53Error extends AwsCallError {
  override readonly name: string = "Route53Error";
}

/** Errors from EC2 (Elastic IPs). */
export class Ec2Error extends AwsCallError {
  override readonly name: string = "Ec2Error";
}

export function isHafleetError(err: unknown, code?: HafleetErrorCode): err is HafleetError {
  return err instanceof HafleetError && (code === undefined || err.code === code);
}
