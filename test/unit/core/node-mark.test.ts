import { markHolds, toNodeRecord } from "../../../lib/core/heartbeat";

const mark = { by: "checker-1", reason: "probes fail", atMs: 1, token: 3 };

describe("the checker's failed mark as every reader of node# sees it", () => {
  test.each<[string, unknown, number, boolean]>([
    ["a mark before its untilSeq holds", { ...mark, untilSeq: 10 }, 9, true],
    ["a mark at its untilSeq has lapsed", { ...mark, untilSeq: 10 }, 10, false],
    ["a mark past its untilSeq has lapsed", { ...mark, untilSeq: 10 }, 25, false],
    ["a mark without untilSeq (an older checker's) is no mark", mark, 0, false],
    ["a mark with a non-numeric untilSeq is no mark", { ...mark, untilSeq: "10" }, 0, false],
    ["no mark is no mark", undefined, 0, false],
  ])("%s", (_name, failed, seq, holds) => {
    expect(markHolds(failed, seq)).toBe(holds);
    const record = toNodeRecord({ sk: "node#n1", seq, ...(failed ? { failed } : {}) });
    expect(record.failed === undefined).toBe(!holds);
  });
});
