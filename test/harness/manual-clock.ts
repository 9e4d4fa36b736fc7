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
  sleep(): Promise<void> {
    return Promise.resolve();
  }
  advance(ms: number): void {
    this.mono += ms;
    this.wall += ms;
  }
  /** Moves only the wall clock (skew): decisions must not change. */
  skewWall(ms: number): void {
    this.wall += ms;
  }
}
