/**
 * Weighted Route 53 records for active-active: one record per node under one
 * name, each with its own SetIdentifier. Changes go out in one
 * ChangeResourceRecordSets batch, since the desired weights live fenced in
 * the store (`dns#`) and the cloud is made to match them. Route 53 answers a
 * batch PENDING and reports it INSYNC once propagated (up to a minute): a
 * caller records the change id and asks about it later (`isInSync`), never
 * waiting for it (docs/architecture.md §5.2).
 *
 * Each batch is a compare-and-swap: per record a DELETE of it exactly as the
 * writer last read it and a CREATE of the new one. Route 53 checks the whole
 * batch against the records as they are and refuses all of it when a DELETE
 * does not match (InvalidChangeBatch), so a batch planned from a stale read (a
 * deposed checker's, landing late) changes nothing (docs/architecture.md §6).
 *
 * SetIdentifiers are `<record name>#<endpoint>`, the endpoint a node's stable
 * name (`node-0`, which a replacement instance keeps; its id when it has none)
 * or `active`: unique per record name, because some emulators (moto 5.2)
 * delete by SetIdentifier across every name in a zone. Only records of that
 * name and that scheme are the fleet's: `read` leaves every other one out, so
 * nothing here changes or removes another fleet's (docs/architecture.md §5.2).
 */
import {
  type Change,
  ChangeResourceRecordSetsCommand,
  GetChangeCommand,
  ListResourceRecordSetsCommand,
  Route53Client,
} from "@aws-sdk/client-route-53";
import { type AwsClientOptions, awsClientConfig, describeAwsFailure } from "./aws";
import { Route53Error } from "./errors";
import type { StateStore } from "./store";
import { keys } from "./tables";

/** A weighted set as the checker last planned it, fenced in the store (`dns#<name>`). */
export interface DnsPlan {
  readonly name: string;
  readonly mode: string;
  readonly ttlS: number;
  /** The checker lease's token the plan was written with. */
  readonly token: number;
  /**
   * By endpoint (a node's stable name, or `active`), with the node id of the node that stands for
   * it (`nodeId`; absent in plans of older checkers, whose endpoints were node ids).
   */
  readonly weights: Readonly<
    Record<string, { readonly address: string; readonly weight: number; readonly nodeId?: string }>
  >;
  /** Wall ms when a checker run found the change that made Route 53 match the plan INSYNC; undefined while in flight. */
  readonly syncedAt: number | undefined;
  /** The Route 53 change that made the records match the plan, while it is not known to be INSYNC. */
  readonly changeId: string | undefined;
}

/** The fleet's recorded plans, one per weighted set (none: the fleet has no weighted set). */
export async function listDnsPlans(store: StateStore, fleetId: string): Promise<DnsPlan[]> {
  const items = await store.query("state", keys.fleet(fleetId), { prefix: keys.dns("") });
  return items.map((d) => ({
    name: String(d.name),
    mode: String(d.mode),
    ttlS: Number(d.ttlS ?? 0),
    token: Number(d.fenceToken),
    weights: Object.fromEntries(
      Object.entries(
        (d.weights ?? {}) as Record<string, { address?: unknown; weight?: unknown; nodeId?: unknown }>,
      ).map(([id, w]) => [
        id,
        {
          address: String(w.address),
          weight: Number(w.weight),
          ...(typeof w.nodeId === "string" ? { nodeId: w.nodeId } : {}),
        },
      ]),
    ),
    syncedAt: d.syncedAt === undefined ? undefined : Number(d.syncedAt),
    changeId: typeof d.changeId === "string" ? d.changeId : undefined,
  }));
}

export interface WeightedRecord {
  /**
   * The endpoint, the key of its SetIdentifier: a node's stable name (its id when it has none), or
   * `active` for the fleet's shared address (`SHARED_ENDPOINT`).
   */
  readonly nodeId: string;
  readonly address: string;
  readonly weight: number;
  /**
   * The Route 53 health check the record carries. A change replaces the whole
   * record, so a change of weight must carry the check on, or it is dropped.
   */
  readonly healthCheckId?: string;
  /** As read back; on writes the set's `ttlS` applies. */
  readonly ttlS?: number;
}

/** A batch Route 53 accepted: its id, and whether it was INSYNC already (the emulator's are at once). */
export interface AppliedChange {
  readonly changeId: string | undefined;
  readonly insync: boolean;
}

export interface WeightedSet {
  readonly zoneId: string;
  /** Fully qualified, e.g. `app.example.org.` (a missing final dot is added). */
  readonly name: string;
  readonly ttlS: number;
}

export function setIdentifierFor(name: string, nodeId: string): string {
  return `${fqdn(name).slice(0, -1)}#${nodeId}`;
}

function fqdn(name: string): string {
  return name.endsWith(".") ? name : `${name}.`;
}

export class WeightedRecords {
  readonly route53: Route53Client;
  private readonly ownsClient: boolean;

  constructor(options: { route53?: Route53Client; aws?: AwsClientOptions } = {}) {
    this.ownsClient = !options.route53;
    this.route53 =
      options.route53 ?? new Route53Client(awsClientConfig({ requestTimeoutMs: 3000, ...options.aws }));
  }

  /** The fleet's weighted A records at the set's name, by endpoint (records of any other SetIdentifier scheme are left out). */
  async read(set: WeightedSet): Promise<Map<string, WeightedRecord>> {
    const name = fqdn(set.name);
    const out = new Map<string, WeightedRecord>();
    let start: { name?: string; type?: string; id?: string } = { name, type: "A" };
    for (;;) {
      const page = await route53Call("ListResourceRecordSets", () =>
        this.route53.send(
          new ListResourceRecordSetsCommand({
            HostedZoneId: set.zoneId,
            StartRecordName: start.name,
            StartRecordType: start.type as "A",
            StartRecordIdentifier: start.id,
          }),
        ),
      );
      for (const r of page.ResourceRecordSets ?? []) {
        if (r.Name !== name || r.Type !== "A" || r.Weight === undefined || !r.SetIdentifier) continue;
        const prefix = `${name.slice(0, -1)}#`;
        if (!r.SetIdentifier.startsWith(prefix)) continue;
        out.set(r.SetIdentifier.slice(prefix.length), {
          nodeId: r.SetIdentifier.slice(prefix.length),
          address: r.ResourceRecords?.[0]?.Value ?? "",
          weight: r.Weight,
          ...(r.TTL !== undefined ? { ttlS: r.TTL } : {}),
          ...(r.HealthCheckId ? { healthCheckId: r.HealthCheckId } : {}),
        });
      }
      if (!page.IsTruncated || page.NextRecordName !== name) break;
      start = { name: page.NextRecordName, type: page.NextRecordType, id: page.NextRecordIdentifier };
    }
    return out;
  }

  /**
   * Changes every record in one compare-and-swap batch: each one in `current`
   * (the set as the caller last read it, e.g. from `read`) is deleted exactly
   * as it is there and created anew; one not in `current` is only created;
   * each of `remove` (stale records, as in `current`) is only deleted.
   * Throws `HAFLEET_ROUTE53_CONFLICT` when Route 53 refuses the batch (the set
   * is no longer as `current` says; nothing changed: read it again). Route 53
   * applies a batch whole or refuses it whole, so the answer is the
   * verification; it returns without waiting for propagation, with the change
   * to ask about later (`isInSync`).
   */
  async apply(
    set: WeightedSet,
    records: readonly WeightedRecord[],
    current: ReadonlyMap<string, WeightedRecord>,
    remove: readonly WeightedRecord[] = [],
  ): Promise<AppliedChange> {
    if (records.length === 0 && remove.length === 0) return { changeId: undefined, insync: true };
    const name = fqdn(set.name);
    const recordSet = (r: WeightedRecord, ttlS: number) => ({
      Name: name,
      Type: "A" as const,
      SetIdentifier: setIdentifierFor(name, r.nodeId),
      Weight: r.weight,
      TTL: ttlS,
      ResourceRecords: [{ Value: r.address }],
      ...(r.healthCheckId ? { HealthCheckId: r.healthCheckId } : {}),
    });
    const changes: Change[] = records.flatMap((r): Change[] => {
      const was = current.get(r.nodeId);
      const create: Change = { Action: "CREATE", ResourceRecordSet: recordSet(r, set.ttlS) };
      return was
        ? [{ Action: "DELETE", ResourceRecordSet: recordSet(was, was.ttlS ?? set.ttlS) }, create]
        : [create];
    });
    for (const r of remove)
      changes.push({ Action: "DELETE", ResourceRecordSet: recordSet(r, r.ttlS ?? set.ttlS) });
    const sent = await route53Call("ChangeResourceRecordSets", async () => {
      try {
        return await this.route53.send(
          new ChangeResourceRecordSetsCommand({
            HostedZoneId: set.zoneId,
            ChangeBatch: { Changes: changes },
          }),
        );
      } catch (err) {
        const f = describeAwsFailure(err);
        if (f.name !== "InvalidChangeBatch") throw err;
        throw new Route53Error(
          "HAFLEET_ROUTE53_CONFLICT",
          "ChangeResourceRecordSets",
          `${set.name}: refused whole, the records are no longer as last read (${f.detail})`,
          false,
          err,
        );
      }
    });
    // A change without an id cannot be asked about; its answer is all there is to know.
    const changeId = sent.ChangeInfo?.Id;
    return { changeId, insync: !changeId || sent.ChangeInfo?.Status === "INSYNC" };
  }

  /** One GetChange: whether Route 53 has propagated the change to all its name servers. */
  async isInSync(changeId: string): Promise<boolean> {
    const out = await route53Call("GetChange", () =>
      this.route53.send(new GetChangeCommand({ Id: changeId })),
    );
    return out.ChangeInfo?.Status === "INSYNC";
  }

  destroy(): void {
    if (this.ownsClient) this.route53.destroy();
  }
}

/** One Route 53 call, its failure as a `Route53Error` that names the operation (and `scope`, such as the zone). */
export async function route53Call<T>(operation: string, send: () => Promise<T>, scope?: string): Promise<T> {
  try {
    return await send();
  } catch (err) {
    if (err instanceof Route53Error) throw err;
    const f = describeAwsFailure(err);
    throw new Route53Error(
      "HAFLEET_ROUTE53",
      operation,
      scope ? `${scope}: ${f.detail}` : f.detail,
      f.retryable,
      err,
    );
  }
}
