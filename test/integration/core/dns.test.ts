import { CreateHostedZoneCommand, Route53Client } from "@aws-sdk/client-route-53";
import { awsClientConfig } from "../../../lib/core/aws";
import { setIdentifierFor, WeightedRecords } from "../../../lib/core/dns";
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

test("weights are upserted in one batch and read back; a node at weight 0 stays in the zone", async () => {
  const set = { zoneId, name: `app.${zoneName}`, ttlS: 5 };
  await records.apply(set, [
    { nodeId: "n1", address: "127.1.0.1", weight: 100 },
    { nodeId: "n2", address: "127.1.0.2", weight: 100 },
    { nodeId: "n3", address: "127.1.0.3", weight: 50 },
  ]);
  await records.apply(set, [{ nodeId: "n2", address: "127.1.0.2", weight: 0 }]);
  const now = await records.read(set);
  expect([...now.values()].map((r) => [r.nodeId, r.weight]).sort()).toEqual([
    ["n1", 100],
    ["n2", 0],
    ["n3", 50],
  ]);
});

test("SetIdentifiers are unique per record name, so two names with the same node ids never touch each other", async () => {
  const a = { zoneId, name: `a.${zoneName}`, ttlS: 5 };
  const b = { zoneId, name: `b.${zoneName}`, ttlS: 5 };
  expect(setIdentifierFor(a.name, "n1")).not.toBe(setIdentifierFor(b.name, "n1"));
  await records.apply(a, [{ nodeId: "n1", address: "127.2.0.1", weight: 10 }]);
  await records.apply(b, [{ nodeId: "n1", address: "127.3.0.1", weight: 20 }]);
  await records.apply(a, [{ nodeId: "n1", address: "127.2.0.1", weight: 0 }]);
  expect((await records.read(a)).get("n1")?.weight).toBe(0);
  expect((await records.read(b)).get("n1")).toEqual({
    nodeId: "n1",
    address: "127.3.0.1",
    weight: 20,
    ttlS: 5,
  });
});

test("a change to a zone that does not exist is a clear Route 53 error", async () => {
  await expect(
    records.apply({ zoneId: "ZNOSUCHZONE", name: "x.test", ttlS: 5 }, [
      { nodeId: "n", address: "127.0.0.9", weight: 1 },
    ]),
  ).rejects.toMatchObject({
    code: "HAFLEET_ROUTE53",
    operation: "ChangeResourceRecordSets",
  });
});
