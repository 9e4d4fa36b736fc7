import { CreateHostedZoneCommand, Route53Client } from "@aws-sdk/client-route-53";
import { awsClientConfig } from "../../../lib/core/aws";
import { setIdentifierFor, type WeightedRecord, WeightedRecords } from "../../../lib/core/dns";
import { uniqueId } from "../../harness/aws";

let route53: Route53Client;
let records: WeightedRecords;
let zoneId: string;
const zoneName = `${uniqueId("z")}.test`;
beforeAll(async () => {
  route53 = new Route53Client(awsClientConfig());
  records = new WeightedRecords({ route53 });
  const zone = await route53.send(
    new CreateHostedZoneCommand({ Name: zoneName, CallerReference: uniqueId("ref") }),
  );
  zoneId = zone.HostedZone!.Id!.split("/").pop()!;
});
afterAll(() => route53.destroy());

const NONE = new Map<string, WeightedRecord>();
const setNamed = (label: string) => ({ zoneId, name: `${label}.${zoneName}`, ttlS: 5 });

test("weights change in one compare-and-swap batch and read back; a node at weight 0 stays in the zone", async () => {
  const set = setNamed("app");
  await records.apply(
    set,
    [
      { nodeId: "n1", address: "127.1.0.1", weight: 100 },
      { nodeId: "n2", address: "127.1.0.2", weight: 100 },
      { nodeId: "n3", address: "127.1.0.3", weight: 50 },
    ],
    NONE,
  );
  await records.apply(set, [{ nodeId: "n2", address: "127.1.0.2", weight: 0 }], await records.read(set));
  const now = await records.read(set);
  expect([...now.values()].map((r) => [r.nodeId, r.weight]).sort()).toEqual([
    ["n1", 100],
    ["n2", 0],
    ["n3", 50],
  ]);
});

test("SetIdentifiers are unique per record name, so two names with the same node ids never touch each other", async () => {
  const a = setNamed("a");
  const b = setNamed("b");
  expect(setIdentifierFor(a.name, "n1")).not.toBe(setIdentifierFor(b.name, "n1"));
  await records.apply(a, [{ nodeId: "n1", address: "127.2.0.1", weight: 10 }], NONE);
  await records.apply(b, [{ nodeId: "n1", address: "127.3.0.1", weight: 20 }], NONE);
  await records.apply(a, [{ nodeId: "n1", address: "127.2.0.1", weight: 0 }], await records.read(a));
  expect((await records.read(a)).get("n1")?.weight).toBe(0);
  expect((await records.read(b)).get("n1")).toEqual({
    nodeId: "n1",
    address: "127.3.0.1",
    weight: 20,
    ttlS: 5,
  });
});

test("a weight that comes back to an earlier value is accepted (moto alone refuses such a CREATE)", async () => {
  const set = setNamed("cycle");
  for (const weight of [100, 0, 25, 100, 0, 100]) {
    const current = await records.read(set);
    await records.apply(set, [{ nodeId: "n1", address: "127.4.0.1", weight }], current);
    expect((await records.read(set)).get("n1")?.weight).toBe(weight);
  }
  expect((await records.read(set)).size).toBe(1); // no duplicate records
});

describe("a batch planned from a stale read is refused whole, as Route 53 refuses it", () => {
  // What the writer believes n1 is, against what it is: { n1 at 100 on 127.5.0.1, TTL 5, no health check }.
  const n1: WeightedRecord = { nodeId: "n1", address: "127.5.0.1", weight: 100, ttlS: 5 };
  test.each<[string, ReadonlyMap<string, WeightedRecord>, WeightedRecord]>([
    ["a DELETE with another weight", new Map([["n1", { ...n1, weight: 90 }]]), { ...n1, weight: 0 }],
    [
      "a DELETE with another address",
      new Map([["n1", { ...n1, address: "127.5.0.9" }]]),
      { ...n1, weight: 0 },
    ],
    ["a DELETE with another TTL", new Map([["n1", { ...n1, ttlS: 60 }]]), { ...n1, weight: 0 }],
    [
      "a DELETE naming a health check the record does not carry",
      new Map([["n1", { ...n1, healthCheckId: "00000000-0000-0000-0000-000000000000" }]]),
      { ...n1, weight: 0 },
    ],
    ["a CREATE of a record that exists", NONE, { ...n1, weight: 0 }],
    [
      "a DELETE of a record that is not there",
      new Map([["n9", { ...n1, nodeId: "n9" }]]),
      { ...n1, nodeId: "n9", weight: 0 },
    ],
  ])("%s: HAFLEET_ROUTE53_CONFLICT, and nothing in the batch changed", async (_name, believed, wanted) => {
    const set = setNamed(uniqueId("stale"));
    await records.apply(set, [n1, { nodeId: "n2", address: "127.5.0.2", weight: 100 }], NONE);
    const before = await records.read(set);
    // With a change of n2 that alone would be fine: a refusal is of the whole batch.
    const batch = [wanted, { nodeId: "n2", address: "127.5.0.2", weight: 0 }];
    const expected = new Map([...believed, ["n2", before.get("n2")!]]);
    await expect(records.apply(set, batch, expected)).rejects.toMatchObject({
      code: "HAFLEET_ROUTE53_CONFLICT",
      operation: "ChangeResourceRecordSets",
    });
    expect(await records.read(set)).toEqual(before);
  });
});

test("a change to a zone that does not exist is a clear Route 53 error", async () => {
  await expect(
    records.apply(
      { zoneId: "ZNOSUCHZONE", name: "x.test", ttlS: 5 },
      [{ nodeId: "n", address: "127.0.0.9", weight: 1 }],
      NONE,
    ),
  ).rejects.toMatchObject({
    code: "HAFLEET_ROUTE53",
    operation: "ChangeResourceRecordSets",
  });
});

describe("a stale record is removed by a DELETE of it exactly as read, in the same compare-and-swap batch", () => {
  test("removed alone, and beside a weight change", async () => {
    const set = setNamed(uniqueId("stale-rm"));
    await records.apply(
      set,
      [
        { nodeId: "node-0", address: "127.6.0.1", weight: 100 },
        { nodeId: "i-0gone", address: "127.6.0.9", weight: 0 },
        { nodeId: "i-0gone2", address: "127.6.0.8", weight: 0 },
      ],
      NONE,
    );
    let now = await records.read(set);
    await records.apply(set, [], now, [now.get("i-0gone")!]);
    now = await records.read(set);
    expect([...now.keys()].sort()).toEqual(["i-0gone2", "node-0"]);
    await records.apply(set, [{ nodeId: "node-0", address: "127.6.0.1", weight: 50 }], now, [
      now.get("i-0gone2")!,
    ]);
    now = await records.read(set);
    expect([...now.values()].map((r) => [r.nodeId, r.weight])).toEqual([["node-0", 50]]);
  });

  test("a removal of a record that changed since it was read is refused whole", async () => {
    const set = setNamed(uniqueId("stale-rm"));
    await records.apply(
      set,
      [
        { nodeId: "node-0", address: "127.7.0.1", weight: 100 },
        { nodeId: "i-0gone", address: "127.7.0.9", weight: 0 },
      ],
      NONE,
    );
    const before = await records.read(set);
    const believed = { ...before.get("i-0gone")!, weight: 10 };
    await expect(
      records.apply(set, [{ nodeId: "node-0", address: "127.7.0.1", weight: 0 }], before, [believed]),
    ).rejects.toMatchObject({ code: "HAFLEET_ROUTE53_CONFLICT" });
    expect(await records.read(set)).toEqual(before);
  });
});
