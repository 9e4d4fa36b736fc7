/**
 * Retries with capped exponential backoff and full jitter (the AWS
 * Architecture Blog's "Exponential Backoff And Jitter": full jitter spreads
 * retrying clients best). Only errors the caller marks retryable are retried,
 * and never past the caller's deadline.
 */
import type { Clock } from "./clock";
import { SettingsError } from "./errors";

export interface RetryPolicy {
  /** Attempts in all, the first included. @default 4 */
  readonly maxAttempts: number;
  /** Backoff before the second attempt is drawn from [0, baseMs]. @default 25 */
  readonly baseMs: number;
  /** No backoff is drawn above this. @default 1000 */
  readonly capMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 4, baseMs: 25, capMs: 1000 };

export function checkRetryPolicy(p: RetryPolicy): RetryPolicy {
  if (!Number.isInteger(p.maxAttempts) || p.maxAttempts < 1) {
    throw new SettingsError(`\`maxAttempts\` must be a whole number of at least 1, got ${p.maxAttempts}`);
  }
  if (!(p.baseMs >= 0) || !(p.capMs >= p.baseMs)) {
    throw new SettingsError(`\`capMs\` (${p.capMs}) must be at least \`baseMs\` (${p.baseMs}), both >= 0`);
  }
  return p;
}

/** Full-jitter backoff before attempt number `attempt + 1` (attempt counts from 1). */
export function backoffMs(p: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(p.capMs, p.baseMs * 2 ** (attempt - 1));
}

export interface RetryOptions {
  readonly policy: RetryPolicy;
  readonly clock: Clock;
  readonly isRetryable: (err: unknown) => boolean;
  /** Monotonic time (`clock.nowMs()`) after which no attempt starts. */
  readonly deadlineAtMs?: number;
  readonly onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Calls `fn(attempt)` until it succeeds, fails with a non-retryable error, or attempts or time run out. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { policy, clock } = options;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= policy.maxAttempts || !options.isRetryable(err)) throw err;
      const delay = backoffMs(policy, attempt);
      const deadline = options.deadlineAtMs;
      if (deadline !== undefined && clock.nowMs() + delay >= deadline) throw err;
      options.onRetry?.(err, attempt, delay);
      await clock.sleep(delay);
    }
  }
}

export interface PollOptions {
  /** Give up when the next wait would end past this long after the first probe. */
  readonly withinMs: number;
  /** The first wait; each next one doubles, up to `maxDelayMs`. */
  readonly firstDelayMs: number;
  readonly maxDelayMs: number;
}

/**
 * Probes until `probe` gives a value (waiting a doubling delay in between),
 * for waits on eventually consistent reads such as an association or a DNS
 * change becoming visible. Past `withinMs`, throws what `timedOut` makes of
 * the last probe's answer.
 */
export async function pollUntil<T, S>(
  clock: Clock,
  o: PollOptions,
  probe: (attempt: number) => Promise<{ done: true; value: T } | { done: false; seen: S }>,
  timedOut: (lastSeen: S) => Error,
): Promise<T> {
  const started = clock.nowMs();
  let delay = o.firstDelayMs;
  for (let attempt = 1; ; attempt++) {
    const got = await probe(attempt);
    if (got.done) return got.value;
    if (clock.nowMs() - started + delay > o.withinMs) throw timedOut(got.seen);
    await clock.sleep(delay);
    delay = Math.min(delay * 2, o.maxDelayMs);
  }
}
