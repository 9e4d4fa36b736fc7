/** A clock that moves only when told: table-driven tests of timing logic. */
import type { Clock } from "../../lib/core/clock";

export class ManualClock implements Clock {
  private mono = 1_000;
  private wall = Date.UTC(2026, 0, 1);

  nowMs(): number {
    return this.mono;
  }
  wallMs(): number {
    return this.wall;
  }
  /** Sleeping does not advance this clock; tests call `advance`. */
  sleep(_ms?: number, _signal?: AbortSignal): Promise<void> {
    return Promise.resolve();
  }
  advance(ms: number): void {
    this.mono += ms;
    this.wall += ms;
  }
  /** Moves only the wall clock (skew, or a suspend that the monotonic clock did not count). */
  skewWall(ms: number): void {
    this.wall += ms;
  }
}

interface Sleeper {
  readonly atMs: number;
  readonly resolve: () => void;
}

/**
 * A manual clock whose sleeps end only when `advance` has moved it past their
 * end (or their signal aborts): the loops of the code under test (lease,
 * heartbeats, timeouts) run as the test moves time, and nothing runs on its own.
 */
export class ManualTimerClock extends ManualClock {
  private sleepers: Sleeper[] = [];

  override sleep(ms = 0, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const sleeper: Sleeper = {
        atMs: this.nowMs() + Math.max(0, ms),
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        this.sleepers = this.sleepers.filter((s) => s !== sleeper);
        resolve();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.sleepers.push(sleeper);
    });
  }

  override advance(ms: number): void {
    super.advance(ms);
    const now = this.nowMs();
    const due = this.sleepers.filter((s) => s.atMs <= now).sort((a, b) => a.atMs - b.atMs);
    this.sleepers = this.sleepers.filter((s) => s.atMs > now);
    for (const s of due) s.resolve();
  }

  /** Moves time on by `ms` in steps of `stepMs`, letting whatever became due run after each step. */
  async run(ms: number, stepMs = 10): Promise<void> {
    for (let done = 0; done < ms; done += stepMs) {
      this.advance(Math.min(stepMs, ms - done));
      await settle();
    }
  }
}

/** Lets every promise chain that can run now run (the fakes answer without I/O). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
