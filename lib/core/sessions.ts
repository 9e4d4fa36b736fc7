/**
 * The shared session table: sticky-session and connection mappings (session
 * key to backend id), so that whichever node a client reaches next sends it to
 * the same backend.
 *
 * - First writer wins: a mapping is created with
 *   `attribute_not_exists(sk) OR expiresAt <= :now`; a node that loses the race
 *   reads and uses the winner's mapping. Concurrent creators all end up with
 *   one backend.
 * - Mappings expire `ttlS` after their last touch; a touch rewrites the TTL
 *   only once half of it has passed, so a busy session costs about one write
 *   per `ttlS / 2`, not one per request.
 * - A bounded LRU cache in front serves repeat lookups without a read. Entries
 *   live at most `cacheMs`, so a reassignment by another node is picked up.
 */
import type { Clock } from "./clock";
import { SettingsError } from "./errors";
import type { Item, StateStore } from "./store";
import { keys } from "./tables";

export interface StickyMapping {
  readonly key: string;
  readonly backend: string;
  readonly createdBy: string;
  readonly expiresAtS: number;
}

export interface SessionTableOptions {
  readonly store: StateStore;
  readonly fleetId: string;
  /** Listener name: each listener has its own partition. */
  readonly listener: string;
  /** Recorded as `createdBy`. */
  readonly nodeId: string;
  /** Idle lifetime of a mapping, seconds. */
  readonly ttlS: number;
  /** Most mappings kept in memory. @default 10000 */
  readonly cacheEntries?: number;
  /** Longest a cached mapping is used without a read. @default 30000 */
  readonly cacheMs?: number;
  /** Deadline of each store call, so a slow store costs a request little. @default 500 */
  readonly deadlineMs?: number;
}

interface CacheEntry {
  mapping: StickyMapping;
  cachedAtMs: number;
}

export class SessionTable {
  private readonly store: StateStore;
  private readonly clock: Clock;
  private readonly pk: string;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly cacheEntries: number;
  private readonly cacheMs: number;
  private readonly deadlineMs: number;
  readonly ttlS: number;
  readonly nodeId: string;

  constructor(options: SessionTableOptions) {
    if (!Number.isInteger(options.ttlS) || options.ttlS < 1) {
      throw new SettingsError(`\`ttlS\` must be a whole number of at least 1, got ${options.ttlS}`);
    }
    this.store = options.store;
    this.clock = options.store.clock;
    this.pk = keys.sessions(options.fleetId, options.listener);
    this.ttlS = options.ttlS;
    this.nodeId = options.nodeId;
    this.cacheEntries = options.cacheEntries ?? 10_000;
    this.cacheMs = options.cacheMs ?? 30_000;
    this.deadlineMs = options.deadlineMs ?? 500;
    if (this.cacheEntries < 0) throw new SettingsError("`cacheEntries` must be at least 0");
  }

  /** The live mapping of `key`, from the cache or the table; undefined when none. */
  async get(key: string): Promise<StickyMapping | undefined> {
    const cached = this.fromCache(key);
    if (cached) return cached;
    const item = await this.store.get("sessions", { pk: this.pk, sk: key }, { deadlineMs: this.deadlineMs });
    return item ? this.remember(toMapping(item)) : undefined;
  }

  /** The stored mapping of `key`; creates it with `backend` if there is none (first writer wins). */
  async getOrCreate(key: string, backend: string): Promise<StickyMapping> {
    const existing = await this.get(key);
    if (existing) return existing;
    for (let attempt = 0; attempt < 3; attempt++) {
      const mapping: StickyMapping = {
        key,
        backend,
        createdBy: this.nodeId,
        expiresAtS: this.store.nowS() + this.ttlS,
      };
      const created = await this.store.put(
        "sessions",
        { pk: this.pk, sk: key, backend, createdBy: this.nodeId, expiresAt: mapping.expiresAtS },
        // attribute_not_exists(sk) OR expiresAt <= :now   (an expired item TTL has not removed yet)
        { condition: "attribute_not_exists(sk) OR expiresAt <= :now", values: { ":now": this.store.nowS() } },
        { deadlineMs: this.deadlineMs },
      );
      if (created) return this.remember(mapping);
      const winner = await this.store.get(
        "sessions",
        { pk: this.pk, sk: key },
        { deadlineMs: this.deadlineMs },
      );
      if (winner) return this.remember(toMapping(winner));
      // The winner's mapping expired between the two calls: try again.
    }
    throw new Error(`session ${key}: could not create or read a mapping`);
  }

  /**
   * Moves `key` from backend `from` to `to` (when `from` is gone or unhealthy).
   * If another node moved it first, its choice is kept and returned.
   */
  async reassign(key: string, from: string, to: string): Promise<StickyMapping> {
    const expiresAtS = this.store.nowS() + this.ttlS;
    const item = await this.store.update(
      "sessions",
      { pk: this.pk, sk: key },
      "SET backend = :to, createdBy = :me, expiresAt = :exp",
      {
        condition: "backend = :from",
        values: { ":to": to, ":from": from, ":me": this.nodeId, ":exp": expiresAtS },
      },
      { deadlineMs: this.deadlineMs },
    );
    this.cache.delete(key);
    if (item) return this.remember(toMapping(item));
    return this.getOrCreate(key, to);
  }

  /** Extends the mapping's life; writes only once half of its TTL has passed. */
  async touch(key: string): Promise<void> {
    const entry = this.cache.get(key);
    const now = this.store.nowS();
    if (entry && entry.mapping.expiresAtS - now > this.ttlS / 2) return;
    const expiresAtS = now + this.ttlS;
    const item = await this.store.update(
      "sessions",
      { pk: this.pk, sk: key },
      "SET expiresAt = :exp",
      { condition: "attribute_exists(sk) AND expiresAt > :now", values: { ":exp": expiresAtS, ":now": now } },
      { deadlineMs: this.deadlineMs },
    );
    if (item) this.remember(toMapping(item));
    else this.cache.delete(key);
  }

  /** Drops the cached copy (e.g. after the store was unreachable). */
  forget(key: string): void {
    this.cache.delete(key);
  }

  get cacheSize(): number {
    return this.cache.size;
  }

  private fromCache(key: string): StickyMapping | undefined {
    const entry = this.cache.get(key);
    if (!entry) return undefined;
    if (
      entry.mapping.expiresAtS <= this.store.nowS() ||
      this.clock.nowMs() - entry.cachedAtMs > this.cacheMs
    ) {
      this.cache.delete(key);
      return undefined;
    }
    // Map keeps insertion order: re-inserting marks it most recently used.
    this.cache.delete(key);
    this.cache.set(key, entry);
    return entry.mapping;
  }

  private remember(mapping: StickyMapping): StickyMapping {
    if (this.cacheEntries === 0) return mapping;
    this.cache.delete(mapping.key);
    this.cache.set(mapping.key, { mapping, cachedAtMs: this.clock.nowMs() });
    if (this.cache.size > this.cacheEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    return mapping;
  }
}

function toMapping(item: Item): StickyMapping {
  return {
    key: String(item.sk),
    backend: String(item.backend),
    createdBy: String(item.createdBy),
    expiresAtS: Number(item.expiresAt),
  };
}
