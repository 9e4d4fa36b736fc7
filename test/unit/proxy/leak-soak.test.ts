/**
 * The leak soak in `npm test`: 10,000 connections mixing every close pattern
 * against the proxy as a child process with `maxConnections` 1,000 (see
 * `bench/soak.ts`, which runs it longer). Descriptors, the active-connections
 * gauge and resident memory come back to where the warm-up left them, no
 * client is turned away, and a normal client is served.
 */
import { runSoak } from "../../../bench/soak";

it("10,000 connections of every close pattern leave nothing behind", async () => {
  const r = await runSoak({ connections: 10_000, concurrency: 250, lingerMs: 100, maxConnections: 1000 });
  expect(r.failures).toEqual({});
  expect(r.turnedAway).toBe(0);
  expect(r.wrongAnswers).toBe(0);
  expect(r.gaugeAfter).toBe(0);
  expect(Math.abs(r.fdsAfter - r.fdsBefore)).toBeLessThanOrEqual(0.05 * r.fdsBefore);
  expect(r.rssKiBAfter).toBeLessThanOrEqual(r.rssKiBBefore * 1.05);
  expect(r.servedAfter).toBe(true);
}, 120_000);
