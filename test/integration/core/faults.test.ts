import { ConfigStore } from "../../../lib/core/config-store";
import { StoreError } from "../../../lib/core/errors";
import { DynamoLeaseStore, Lease } from "../../../lib/core/lease";
import type { StateStore } from "../../../lib/core/store";
import type { TableNames } from "../../../lib/core/tables";
import { freshTables, storeOn, uniqueId } from "../../harness/aws";
import { dynamoOp, FaultProxy, INTERNAL_ERROR, THROTTLING } from "../../harness/fault-proxy";

let tables: TableNames;
let proxy: FaultProxy;
let store: StateStore;
const key = { pk: "fleet#faults", sk: "probe" };

beforeAll(async () => {
  tables = await freshTables();
  proxy = await new FaultProxy(process.env.AWS_ENDPOINT_URL!).start();
  store = storeOn(tables, proxy.endpoint, { attemptTimeoutMs: 400, retry: { baseMs: 5, capMs: 20 } });
  await store.put("state", { ...key, v: 1 });
});
afterEach(() => proxy.clear());
afterAll(async () => {
  store.destroy();
  await proxy.close();
});

async function failure(p: Promise<unknown>): Promise<StoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  return err as StoreError;
}

describe("AWS faults reach callers as store errors, and only retryable ones are retried", () => {
  test.each([
    ["throttling twice, then an answer: the read succeeds", THROTTLING, 2],
    ["a 500 twice, then an answer: the read succeeds", INTERNAL_ERROR, 2],
    ["a reset connection twice, then an answer: the read succeeds", { kind: "reset" } as const, 2],
  ])("%s", async (_name, action, times) => {
    const rule = proxy.add({ match: dynamoOp("GetItem"), action, times });
    expect(await store.get("state", key)).toMatchObject({ v: 1 });
    expect(rule.hits()).toBe(times);
  });

  test.each([
    ["throttling that never ends", THROTTLING, "HAFLEET_STORE_THROTTLED"],
    ["a 500 that never ends", INTERNAL_ERROR, "HAFLEET_STORE_UNAVAILABLE"],
    ["a connection reset every time", { kind: "reset" } as const, "HAFLEET_STORE_UNAVAILABLE"],
    ["no answer at all (each attempt times out)", { kind: "hang" } as const, "HAFLEET_STORE_UNAVAILABLE"],
  ])("%s: four attempts, then a retryable error with code %s", async (_name, action, code) => {
    const rule = proxy.add({ match: dynamoOp("GetItem"), action });
    const err = await failure(store.get("state", key));
    expect(err.code).toBe(code);
    expect(err.retryable).toBe(true);
    expect(rule.hits()).toBe(4);
  });

  test("a validation error is not retried", async () => {
    const rule = proxy.add({
      match: dynamoOp("GetItem"),
      action: { kind: "error", status: 400, awsType: "ValidationException" },
    });
    const err = await failure(store.get("state", key));
    expect(err.code).toBe("HAFLEET_STORE_REQUEST_INVALID");
    expect(err.retryable).toBe(false);
    expect(rule.hits()).toBe(1);
  });

  test("the caller's deadline bounds the whole call, retries included", async () => {
    proxy.add({ match: dynamoOp("GetItem"), action: { kind: "hang" } });
    const t0 = performance.now();
    const err = await failure(store.get("state", key, { deadlineMs: 250 }));
    expect(err.code).toBe("HAFLEET_STORE_UNAVAILABLE");
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  test("a missing table is a clear, non-retryable error naming it", async () => {
    const other = storeOn({ state: "no-such-table", sessions: "no-such-sessions" }, proxy.endpoint);
    try {
      const err = await failure(other.get("state", key));
      expect(err.code).toBe("HAFLEET_STORE_TABLE_MISSING");
      expect(err.message).toContain("table no-such-table does not exist");
    } finally {
      other.destroy();
    }
  });
});

describe("writes whose answer was lost", () => {
  test("a config write that landed but whose answer was dropped is reported as written, not as a conflict", async () => {
    const cs = new ConfigStore(store, uniqueId("fleet"));
    const doc = {
      listeners: [{ name: "web", protocol: "http", port: 8080, pool: "app" }],
      pools: { app: { backends: [{ host: "127.0.0.1", port: 9000 }] } },
    };
    const rule = proxy.add({
      match: dynamoOp("PutItem", '"config"'),
      action: { kind: "drop-response" },
      times: 1,
    });
    const written = await cs.put(doc, { expectedVersion: 0, by: "operator" });
    expect(rule.hits()).toBe(1);
    expect(written.version).toBe(1);
    expect((await cs.get())?.version).toBe(1);
  });

  test("a holder whose renewal answers are all dropped for a while keeps its lease by re-reading", async () => {
    const fleet = uniqueId("fleet");
    const ls = new DynamoLeaseStore(store, fleet);
    const a = new Lease(ls, { name: "fleet", holderId: "a" });
    const lost: string[] = [];
    a.on("lost", (e) => lost.push(e.reason));
    a.start();
    await new Promise<void>((resolve) => a.once("acquired", () => resolve()));
    // Renewals carry the condition value ":mine"; drop every answer for 3 s (over a whole leaseMs).
    const rule = proxy.add({ match: dynamoOp("UpdateItem", ":mine"), action: { kind: "drop-response" } });
    await new Promise((r) => setTimeout(r, 3000));
    rule.remove();
    expect(rule.hits()).toBeGreaterThanOrEqual(3);
    expect(lost).toEqual([]);
    expect(a.isLeader()).toBe(true);
    expect(a.token).toBe(1);
    await a.stop();
  });
});
