import { pollUntil } from "../../../lib/core/retry";
import { ManualClock } from "../../harness/manual-clock";

/** A clock whose sleeps pass at once and move it on, recording each wait. */
class SleepingClock extends ManualClock {
  readonly waits: number[] = [];
  override sleep(ms = 0): Promise<void> {
    this.waits.push(ms);
    this.advance(ms);
    return Promise.resolve();
  }
}

const opts = { withinMs: 1000, firstDelayMs: 25, maxDelayMs: 400 };

/** Not done until the given attempt; each probe costs `probeMs` of clock time. */
function probeDoneAt(clock: ManualClock, doneAt: number, probeMs = 0) {
  const seen: number[] = [];
  const probe = async (attempt: number) => {
    seen.push(attempt);
    clock.advance(probeMs);
    return attempt >= doneAt
      ? { done: true as const, value: `done at ${attempt}` }
      : { done: false as const, seen: `pending at ${attempt}` };
  };
  return { probe, seen };
}

test("a probe that is done at once returns its value without waiting", async () => {
  const clock = new SleepingClock();
  const { probe } = probeDoneAt(clock, 1);
  await expect(pollUntil(clock, opts, probe, () => new Error("timed out"))).resolves.toBe("done at 1");
  expect(clock.waits).toEqual([]);
});

test("waits double from the first delay up to the cap", async () => {
  const clock = new SleepingClock();
  const { probe, seen } = probeDoneAt(clock, 6);
  await expect(
    pollUntil(clock, { ...opts, withinMs: 10_000 }, probe, () => new Error("timed out")),
  ).resolves.toBe("done at 6");
  expect(clock.waits).toEqual([25, 50, 100, 200, 400]);
  expect(seen).toEqual([1, 2, 3, 4, 5, 6]);
});

test("gives up, with what the last probe saw, when the next wait would end past withinMs", async () => {
  const clock = new SleepingClock();
  const { probe, seen } = probeDoneAt(clock, 100, 10);
  await expect(pollUntil(clock, opts, probe, (last) => new Error(`timed out; last ${last}`))).rejects.toThrow(
    "timed out; last pending at 6",
  );
  // 25+50+100+200+400 of waits and 6 probes of 10 ms: 835 ms; another 400 would pass 1000.
  expect(clock.waits).toEqual([25, 50, 100, 200, 400]);
  expect(seen).toHaveLength(6);
});

test("a probe's own error ends the poll at once", async () => {
  const clock = new SleepingClock();
  const probe = async () => {
    throw new Error("DescribeAddresses failed");
  };
  await expect(pollUntil(clock, opts, probe, () => new Error("timed out"))).rejects.toThrow(
    "DescribeAddresses failed",
  );
  expect(clock.waits).toEqual([]);
});
