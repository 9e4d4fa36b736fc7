/**
 * `LeaseStore` in memory, for the table-driven tests of the lease state
 * machine. It keeps DynamoDB's semantics for one item (conditional writes are
 * atomic) and can lose answers: a write that lands but whose caller gets an
 * error, as a dropped response does. The real store is tested against the
 * emulator in test/integration.
 */

import { StoreError } from "../../lib/core/errors";
import type { LeaseChange, LeaseCondition, LeaseRecord, LeaseStore } from "../../lib/core/lease";

export class MemoryLeaseStore implements LeaseStore {
  records = new Map<string, LeaseRecord>();
  /** The token floor per lease, as the fleet's `tokens` item keeps it; fenced writes raise it. */
  floors = new Map<string, number>();
  /** The next N writes land but their answer is lost. */
  loseAnswers = 0;
  /** The next N calls fail without landing (store unreachable). */
  failCalls = 0;
  writes = 0;

  async get(name: string): Promise<LeaseRecord | undefined> {
    this.maybeFail();
    return this.records.get(name);
  }

  async create(record: LeaseRecord): Promise<LeaseRecord | undefined> {
    this.maybeFail();
    if (this.records.has(record.name)) return undefined;
    const created = { ...record, token: Math.max(record.token, (this.floors.get(record.name) ?? 0) + 1) };
    this.records.set(record.name, created);
    this.writes++;
    this.maybeLoseAnswer();
    return created;
  }

  /** What a lease-guarded write does to the floor (lib/core/fence.ts). */
  raiseFloor(name: string, token: number): void {
    this.floors.set(name, Math.max(this.floors.get(name) ?? 0, token));
  }

  async updateIf(
    name: string,
    condition: LeaseCondition,
    change: LeaseChange,
  ): Promise<LeaseRecord | undefined> {
    this.maybeFail();
    const cur = this.records.get(name);
    if (!cur) return undefined;
    const holds =
      "rvn" in condition
        ? cur.rvn === condition.rvn
        : cur.holder === condition.holder && cur.token === condition.token;
    if (!holds) return undefined;
    const next: LeaseRecord = {
      name,
      holder: change.holder,
      token: cur.token + (change.bumpToken ? 1 : 0),
      rvn: change.rvn,
      leaseMs: change.leaseMs,
      updatedAtMs: change.updatedAtMs,
      ...(change.inFlight !== undefined ? { inFlight: change.inFlight } : {}),
    };
    this.records.set(name, next);
    this.writes++;
    this.maybeLoseAnswer();
    return next;
  }

  private maybeFail(): void {
    if (this.failCalls > 0) {
      this.failCalls--;
      throw new StoreError("HAFLEET_STORE_UNAVAILABLE", "test", "store unreachable", true);
    }
  }

  private maybeLoseAnswer(): void {
    if (this.loseAnswers > 0) {
      this.loseAnswers--;
      throw new StoreError("HAFLEET_STORE_UNAVAILABLE", "test", "answer lost", true);
    }
  }
}

/** One contender's view of a shared `MemoryLeaseStore`, which can be cut off on its own. */
export class LeaseStoreView implements LeaseStore {
  down = false;
  constructor(private readonly inner: MemoryLeaseStore) {}
  private check() {
    if (this.down) throw new StoreError("HAFLEET_STORE_UNAVAILABLE", "test", "partitioned", true);
  }
  async get(name: string) {
    this.check();
    return this.inner.get(name);
  }
  async create(r: LeaseRecord) {
    this.check();
    return this.inner.create(r);
  }
  async updateIf(name: string, c: LeaseCondition, ch: LeaseChange) {
    this.check();
    return this.inner.updateIf(name, c, ch);
  }
}
