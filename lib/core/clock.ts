/**
 * Time, injected. `nowMs` is monotonic and is the only clock used for elapsed
 * time (leases, timeouts, damping); `wallMs` is for display and TTLs only. No
 * decision ever compares one node's clock with another's.
 */
export interface Clock {
  /** Monotonic milliseconds; only differences mean anything. */
  nowMs(): number;
  /** Wall time in epoch milliseconds: display and TTL only. */
  wallMs(): number;
  /** Resolves after `ms`, or early (without throwing) when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  nowMs: () => performance.now(),
  wallMs: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener("abort", done, { once: true });
    }),
};

/** Epoch seconds `ttlS` from now by `clock`: the value of a TTL attribute. */
export function expiresAtS(clock: Clock, ttlS: number): number {
  return Math.floor(clock.wallMs() / 1000) + ttlS;
}
