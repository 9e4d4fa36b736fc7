import { backoffMs, DEFAULT_RETRY_POLICY, withRetry } from "../../../lib/core/retry";
import { translateAwsError } from "../../../lib/core/store";
import { ManualClock } from "../../harness/manual-clock";

function awsError(name: string, status?: number, extra: Record<string, unknown> = {}) {
  return Object.assign(new Error(`${name} happened`), {
    name,
    $metadata: { httpStatusCode: status },
    ...extra,
  });
}

describe("AWS errors become store errors with stable codes", () => {
  test.each([
    [awsError("ProvisionedThroughputExceededException", 400), "HAFLEET_STORE_THROTTLED", true],
    [awsError("ThrottlingException", 400), "HAFLEET_STORE_THROTTLED", true],
    [awsError("InternalServerError", 500), "HAFLEET_STORE_UNAVAILABLE", true],
    [awsError("ServiceUnavailable", 503), "HAFLEET_STORE_UNAVAILABLE", true],
    [awsError("TimeoutError"), "HAFLEET_STORE_UNAVAILABLE", true],
    [
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }),
      "HAFLEET_STORE_UNAVAILABLE",
      true,
    ],
    [awsError("ResourceNotFoundException", 400), "HAFLEET_STORE_TABLE_MISSING", false],
    [awsError("AccessDeniedException", 400), "HAFLEET_STORE_ACCESS_DENIED", false],
    [awsError("ValidationException", 400), "HAFLEET_STORE_REQUEST_INVALID", false],
    [awsError("SomethingNew", 400), "HAFLEET_STORE", false],
  ])("%s -> %s (retryable %s)", (err, code, retryable) => {
    const e = translateAwsError(err, "PutItem", "hafleet-state");
    expect(e.code).toBe(code);
    expect(e.retryable).toBe(retryable);
    expect(e.cause).toBe(err);
    expect(e.message.startsWith("PutItem: ")).toBe(true);
  });

  test("a missing table is named in the message", () => {
    expect(translateAwsError(awsError("ResourceNotFoundException", 400), "GetItem", "my-table").message).toBe(
      "GetItem: table my-table does not exist (ResourceNotFoundException: ResourceNotFoundException happened)",
    );
  });
});

describe("retries", () => {
  test("full jitter stays within [0, min(cap, base x 2^(n-1))]", () => {
    expect(backoffMs(DEFAULT_RETRY_POLICY, 1, () => 0.999)).toBeLessThan(25);
    expect(backoffMs(DEFAULT_RETRY_POLICY, 3, () => 0.999)).toBeLessThan(100);
    expect(backoffMs(DEFAULT_RETRY_POLICY, 20, () => 0.999)).toBeLessThan(1000);
    expect(backoffMs(DEFAULT_RETRY_POLICY, 20, () => 0)).toBe(0);
  });

  test("retryable errors are retried up to maxAttempts; others are thrown at once", async () => {
    const clock = new ManualClock();
    let calls = 0;
    const retryable = Object.assign(new Error("busy"), { retryable: true });
    await expect(
      withRetry(
        async () => {
          calls++;
          throw retryable;
        },
        {
          policy: DEFAULT_RETRY_POLICY,
          clock,
          isRetryable: (e) => (e as { retryable?: boolean }).retryable === true,
        },
      ),
    ).rejects.toBe(retryable);
    expect(calls).toBe(4);
    calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          throw new Error("bad request");
        },
        { policy: DEFAULT_RETRY_POLICY, clock, isRetryable: () => false },
      ),
    ).rejects.toThrow("bad request");
    expect(calls).toBe(1);
  });

  test("no retry starts after the deadline", async () => {
    const clock = new ManualClock();
    let calls = 0;
    await expect(
      withRetry(
        async () => {
          calls++;
          clock.advance(600);
          throw new Error("slow");
        },
        { policy: DEFAULT_RETRY_POLICY, clock, isRetryable: () => true, deadlineAtMs: clock.nowMs() + 1000 },
      ),
    ).rejects.toThrow("slow");
    expect(calls).toBe(2);
  });
});
