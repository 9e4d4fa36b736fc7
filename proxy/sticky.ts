/**
 * Sticky sessions over the shared session table.
 *
 * Contract: routing never fails because of the store. Every store call is
 * bounded by `waitMs`; when it throws or is slow, the backend is the one the
 * client's cookie hints at (HTTP), or else the one that consistent hashing
 * gives the session key in the current eligible set, which every node
 * computes alike without talking to anyone. When the store works, the first
 * writer of a key wins across nodes (`getOrCreate`), so two nodes that race on
 * a new key still agree, and the table decides over the hint.
 *
 * HTTP: the cookie is a random session key, then `.` and the hint of the
 * backend the session is on (a hash of its id: docs/architecture.md §7). A
 * node that took over with a cold cache while the store is slow keeps every
 * session where it was, which hashing alone cannot once the eligible set
 * changed. TCP: the key is the client's address (there is nowhere to put a
 * cookie), and only hashing stands in for the table.
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { hash32 } from "./hash";
import type { Backend, Pool } from "./pool";

/** What the proxy needs from the session table (`lib/core/sessions.ts`'s `SessionTable` satisfies it). */
export interface SessionLookup {
  get(key: string): Promise<{ readonly backend: string } | undefined>;
  /** Stores `key -> backend` unless a mapping exists; returns the stored one (maybe another node's). */
  getOrCreate(key: string, backend: string): Promise<{ readonly backend: string }>;
  /** Extends the mapping's life. */
  touch(key: string): Promise<void>;
  /** Moves `key` from `from` to `to` unless another node moved it first; returns the stored mapping. */
  reassign?(key: string, from: string, to: string): Promise<{ readonly backend: string }>;
}

export interface StickyDecision {
  readonly backend: Backend | undefined;
  /** The cookie value to hand the client (HTTP: Set-Cookie): a new session, or its backend's hint changed. */
  readonly cookie?: string;
  /** The store did not answer in time or failed: the hint or consistent hashing decided. */
  readonly fallback?: boolean;
}

/** A session cookie's value: the session key and, after a `.`, its backend's hint. */
export interface SessionCookie {
  readonly key: string;
  readonly hint: string | undefined;
}

/**
 * Session keys the proxy issues: 128 random bits, base64url; a hint is up to 7
 * base-36 digits (a 32-bit hash). Anything else in the cookie is ignored.
 */
const COOKIE_RE = /^([A-Za-z0-9_-]{16,64})(?:\.([0-9a-z]{1,7}))?$/;
const TIMEOUT = Symbol("timeout");
/** Keys remembered for touch throttling; the map is cleared when full (a cheap bound, not an LRU). */
const MAX_TOUCHED = 10_000;
const WARN_EVERY_MS = 10_000;

export interface StickyOptions {
  readonly lookup: SessionLookup;
  /** Longest wait for one store call before falling back to hashing. @default 250 */
  readonly waitMs?: number;
  /** Session idle lifetime, to pace `touch` (at most once per quarter of it per key). */
  readonly ttlS: number;
  readonly logger?: Logger;
}

export class StickyRouter {
  readonly lookup: SessionLookup;
  private readonly waitMs: number;
  private readonly touchEveryMs: number;
  private readonly touched = new Map<string, number>();
  private readonly logger: Logger | undefined;
  /** Decisions made by the fallback (for /metrics and tests). */
  fallbacks = 0;

  constructor(options: StickyOptions) {
    this.lookup = options.lookup;
    this.waitMs = options.waitMs ?? 250;
    this.touchEveryMs = Math.min(60_000, (options.ttlS * 1000) / 4);
    this.logger = options.logger;
  }

  /** The session cookie in `value`, or undefined when it is not one the proxy issues. */
  static parseCookie(value: string | undefined): SessionCookie | undefined {
    if (value === undefined) return undefined;
    const m = COOKIE_RE.exec(value);
    return m ? { key: m[1]!, hint: m[2] } : undefined;
  }

  static newKey(): string {
    return randomBytes(16).toString("base64url");
  }

  /** The cookie value for a session on `backend`. */
  static cookieValue(key: string, backend: Backend): string {
    return `${key}.${backend.hint}`;
  }

  /**
   * Routes a request or connection. `key` is the client's session key (HTTP
   * cookie, TCP client address) or undefined for a new HTTP session, `hint`
   * the backend hint of its cookie; `issueKeys` says whether new keys and
   * cookies may be handed out (HTTP only).
   */
  async route(
    pool: Pool,
    key: string | undefined,
    issueKeys: boolean,
    hint?: string,
  ): Promise<StickyDecision> {
    if (key === undefined) {
      if (!issueKeys) return { backend: pool.pick(0) };
      return this.create(pool, StickyRouter.newKey(), true, undefined);
    }
    const found = await this.bounded(this.lookup.get(key));
    if (found === TIMEOUT) return this.fallback(pool, key, hint, issueKeys);
    if (found) {
      const b = pool.byId(found.backend);
      if (b && pool.isEligible(b)) {
        this.maybeTouch(key);
        return this.decided(b, key, hint, issueKeys);
      }
      // Its backend left or is down: move the session (the first node to move
      // it decides for all). Without `reassign`, an HTTP client gets a new
      // session and a TCP client is hashed until its mapping expires.
      if (this.lookup.reassign) {
        const picked = pool.hashPick(hash32(key)); // as in create(): what the fallback would pick
        if (!picked) return { backend: undefined };
        const moved = await this.bounded(this.lookup.reassign(key, found.backend, picked.id));
        if (moved === TIMEOUT) return this.fallback(pool, key, hint, issueKeys);
        const m = pool.byId(moved.backend);
        return this.decided(m && pool.isEligible(m) ? m : picked, key, hint, issueKeys);
      }
      if (issueKeys) return this.create(pool, StickyRouter.newKey(), true, undefined);
      return { backend: pool.hashPick(hash32(key)) };
    }
    // Unknown to the table (expired, or created while the store was slow): on its hint's backend.
    return this.create(pool, key, issueKeys, hint);
  }

  private async create(
    pool: Pool,
    key: string,
    issueKeys: boolean,
    hint: string | undefined,
  ): Promise<StickyDecision> {
    // A new session gets the backend consistent hashing gives its key, not the
    // pool algorithm's next pick: when the store is slow later and there is no
    // hint (TCP), the fallback computes the same backend, and the session stays
    // put. Random keys spread evenly over the ring.
    const picked = this.hinted(pool, hint) ?? pool.hashPick(hash32(key));
    if (!picked) return { backend: undefined };
    const stored = await this.bounded(this.lookup.getOrCreate(key, picked.id));
    if (stored === TIMEOUT) {
      this.fallbacks++;
      return { ...this.decided(picked, key, hint, issueKeys), fallback: true };
    }
    const b = pool.byId(stored.backend);
    this.touched.set(key, performance.now());
    // Another node may have won with a backend this node no longer considers eligible.
    return this.decided(b && pool.isEligible(b) ? b : picked, key, hint, issueKeys);
  }

  /** The store could not decide: the hint's backend while it is eligible, else hashing's. */
  private fallback(pool: Pool, key: string, hint: string | undefined, issueKeys: boolean): StickyDecision {
    this.fallbacks++;
    const b = this.hinted(pool, hint) ?? pool.hashPick(hash32(key));
    if (!b) return { backend: undefined, fallback: true };
    return { ...this.decided(b, key, hint, issueKeys), fallback: true };
  }

  /** `b`, with a new cookie for the client when its hint does not name `b`. */
  private decided(b: Backend, key: string, hint: string | undefined, issueKeys: boolean): StickyDecision {
    return issueKeys && hint !== b.hint
      ? { backend: b, cookie: StickyRouter.cookieValue(key, b) }
      : { backend: b };
  }

  /** The eligible backend `hint` names, if any. */
  private hinted(pool: Pool, hint: string | undefined): Backend | undefined {
    if (hint === undefined) return undefined;
    for (const b of pool.eligible()) if (b.hint === hint) return b;
    return undefined;
  }

  private maybeTouch(key: string): void {
    const now = performance.now();
    const last = this.touched.get(key);
    if (last !== undefined && now - last < this.touchEveryMs) return;
    if (this.touched.size >= MAX_TOUCHED) this.touched.clear();
    this.touched.set(key, now);
    this.lookup.touch(key).catch((err: unknown) => {
      this.logger?.debug({ err }, "session touch failed");
    });
  }

  private lastWarnMs = Number.NEGATIVE_INFINITY;

  /** At most one warning per WARN_EVERY_MS: a down store must not flood the log at request rate. */
  private warn(fields: object, message: string): void {
    const now = performance.now();
    if (now - this.lastWarnMs < WARN_EVERY_MS) return;
    this.lastWarnMs = now;
    this.logger?.warn(fields, message);
  }

  /** The call's result, or TIMEOUT when it failed or took longer than `waitMs`. */
  private bounded<T>(call: Promise<T>): Promise<T | typeof TIMEOUT> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.warn({ waitMs: this.waitMs }, "session store slow: falling back to consistent hashing");
        resolve(TIMEOUT);
      }, this.waitMs);
      call.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          this.warn({ err }, "session store failed: falling back to consistent hashing");
          resolve(TIMEOUT);
        },
      );
    });
  }
}
