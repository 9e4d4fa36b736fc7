/**
 * The differential check (`test/fuzz/differential.ts`) in every test run:
 * 10,000 mutated requests, one fixed seed, through a proxy to a node:http
 * backend. Every request the proxy forwards must reach the backend as the
 * proxy parsed it (method, target, headers, body), and the backend must
 * read no more requests than the proxy accepted. `npm run fuzz:proxy` runs
 * more, with other seeds.
 */
import { generate, predict, runDifferential } from "../../fuzz/differential";

it("node's parser reads every request the proxy forwards as the proxy read it (10,000 mutated requests)", async () => {
  const { report, mismatches } = await runDifferential({ cases: 10_000, seed: 20_251 });
  // On failure, the bytes that reproduce each mismatch (`npm run fuzz:proxy -- --seed 20251`).
  expect(mismatches).toEqual([]);
  expect(report.mismatches).toBe(0);
  expect(report.backendRequests).toBe(report.predictedRequests);
  // The generator makes a mix worth checking: many forwarded, many refused.
  expect(report.accepted).toBeGreaterThan(3000);
  expect(report.refused).toBeGreaterThan(3000);
  expect(report.sent).toBeGreaterThan(report.accepted);
});

it("generates the same bytes for the same seed, and predicts pipelined pairs as two requests", () => {
  expect(generate(5, 17)).toBe(generate(5, 17));
  expect(generate(5, 17)).not.toBe(generate(6, 17));
  const pair = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
  const p = predict(pair, { maxHeaderBytes: 16384, maxBodyBytes: 1000 });
  expect(p.accepted.map((s) => [s.method, s.url, s.body])).toEqual([
    ["GET", "/1", ""],
    ["POST", "/2", "hi"],
  ]);
  expect(p.end).toEqual({ kind: "open" });
});
