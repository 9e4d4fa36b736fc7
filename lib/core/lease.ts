/**
 * Leases with fencing tokens on DynamoDB: the one consensus primitive of hafleet.
 *
 * Guarantees
 * - At most one holder acts as leader at any moment, provided no node's
 *   monotonic clock runs more than `CLOCK_RATE_BOUND` (10%) faster than
 *   another's; `safetyMs` is checked against that bound when the lease is
 *   built (`minSafetyMs`). No node's clock is ever compared with another's: the
 *   waiter measures on its own clock how long it has seen the same `rvn`.
 * - Every change of holder increments `token`; tokens never go down. Releases
 *   keep the item; and should the item be deleted after all, the next holder
 *   starts above every token recorded under the lease (the fleet's token floor,
 *   which every lease-guarded write raises: `fence.ts`). Side effects made
 *   through the store carry the token and are refused when a higher one is
 *   recorded (`fence.ts`), which covers a holder that was paused (GC, SIGSTOP)
 *   and resumes believing it still leads.
 *
 * Not guaranteed
 * - That a leader exists: when DynamoDB is unreachable, nobody can acquire.
 * - Clocks beyond the bound: two nodes whose clocks both slew at chrony's
 *   largest rate, in opposite directions, differ by more than 10%.
 * - A suspend the wall clock does not show. `CLOCK_MONOTONIC` (Node's
 *   `performance.now()` on Linux) stops while the machine is suspended, so a
 *   suspended holder would wake believing in its validity. The holder also
 *   ends its validity `leaseMs - safetyMs` after the renewal's start by the
 *   wall clock, which does count the suspend: a woken holder stops at once.
 *   A wall clock stepped back at the same time hides the suspend until the
 *   next renewal is refused; a wall clock stepped forward only makes the
 *   holder stop early (it then takes its own lease back at once, 2b below).
 * - Side effects outside the store (AssociateAddress) cannot check a token;
 *   they are driven from fenced desired state and reconciled (docs/architecture.md §6).
 *   Run through `act`, they end with the holding, a release waits for them,
 *   and a successor waits out one that may still land (`successorWaitMs`):
 *   the next holder's move comes last as long as EC2 applies a request, if
 *   ever, within `leaseMs` after its caller gave up on it.
 *
 * How it errs
 * - The holder errs early: it stops acting as leader when `leaseMs - safetyMs`
 *   has passed since the *start* of its last confirmed renewal, on its own
 *   monotonic clock or on its wall clock, whichever comes first, whether or
 *   not it has heard anything.
 * - The waiter errs late: its wait starts when a read that returned the rvn
 *   *completed*, which is after the renewal that wrote it started.
 *
 * Protocol (item `lease#<name>` in the fleet's partition)
 * 1. Free (no item): read the token floor, then put with
 *    `attribute_not_exists(sk)`, token floor + 1 (1 in a new fleet). One
 *    conditional write: the floor cannot rise in between, since only a write
 *    guarded by this lease raises it and no lease item exists to guard one.
 * 2. Released (item without `holder`): update with `rvn = :seen`, token + 1.
 * 3. Held: wait until the same rvn has been seen for the item's `leaseMs` on
 *    the local monotonic clock, then update with `rvn = :seen`, token + 1.
 *    After reads failed for half a lease or more (an outage), the wait starts
 *    afresh; and a contender whose own holding ran out unconfirmed (the store
 *    was unreachable) and that finds the item still recording it with that
 *    token takes it back at once: nobody acquired in between. So a store
 *    outage alone never moves the leader.
 * 4. Renew every `renewMs` with `holder = :me AND token = :mine`, new rvn.
 *    Every write also says whether the holder may have a call outside the
 *    store in flight (`inFlight`); one is recorded before such a call starts.
 * 5. A write whose answer was lost (timeout, reset) may have landed: every
 *    write sets a fresh rvn, so re-reading tells whether it did.
 * 6. Release: once the side effects in flight have ended,
 *    `holder = :me AND token = :mine`, REMOVE holder: a waiter takes it at its
 *    next poll without waiting out the lease.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { type Clock, systemClock } from "./clock";
import { AwsCallError, LeaseLostError, SettingsError, StoreError } from "./errors";
import { floorAttribute } from "./fence";
import { isConditionFailed, type StateStore } from "./store";
import { keys } from "./tables";

/**
 * Default lease length: 1200 ms, chosen for failover time. A takeover is the
 * lease minus the time since the dead holder's last renewal, plus up to one
 * poll: 0.8 to 1.35 s, and with the promotion and AWS applying the
 * association (up to about 1 s after accepting it) the fleet answers again
 * within 2 s at the median and 3 s at p99 (README, "Failover with the realistic
 * mode"); a 2000 ms lease measured 2.7 s and 3.3 s.
 *
 * What it costs. The holder renews every 400 ms and stops 1080 ms after a
 * renewal started: it keeps the lease through one lost renewal, or a stall of
 * its event loop of about 650 ms (DynamoDB's write p99 is tens of ms); a longer
 * stall moves the lease, safely, to a standby. Writes: 2.5 a second for the
 * lease (3.9 million write requests a month at 2000 ms, 6.6 million at 1200);
 * each standby reads it every 150 ms. A fleet whose nodes stall longer (small
 * burstable instances out of CPU credits) sets `failover.leaseMs` higher.
 */
export const DEFAULT_LEASE_MS = 1200;

/**
 * How much faster one node's monotonic clock may run than another's: 10%.
 * NTP's kernel discipline (ntpd) slews by at most 500 ppm, but chrony, the
 * NTP client of Amazon Linux and most distributions, slews by up to 83,333 ppm
 * (8.3%, its default `maxslewrate`) while it corrects an offset, and
 * `CLOCK_MONOTONIC` follows the slew (only `CLOCK_MONOTONIC_RAW` does not).
 * 10% covers one clock slewing that fast plus the oscillators' own error
 * (tens of ppm) with room to spare.
 */
export const CLOCK_RATE_BOUND = 0.1;

/**
 * The least `safetyMs` that keeps at most one holder under `CLOCK_RATE_BOUND`.
 * The holder stops `leaseMs - safetyMs` after its renewal started, by its own
 * clock; a waiter takes over `leaseMs` after it saw that renewal, by its own.
 * With the waiter's clock up to `1 + b` times as fast as the holder's, the
 * holder has stopped first when `leaseMs - safetyMs < leaseMs / (1 + b)`, that
 * is `safetyMs > leaseMs * b / (1 + b)`: 110 ms of a 1200 ms lease.
 */
export function minSafetyMs(leaseMs: number): number {
  return Math.ceil((leaseMs * CLOCK_RATE_BOUND) / (1 + CLOCK_RATE_BOUND));
}

/**
 * How long a new holder waits, from the start of its acquiring write, before
 * its first call outside the store (AssociateAddress), when the holder before
 * it may have left one in flight (docs/architecture.md §3, §6).
 *
 * A holder's calls outside the store are aborted at the validity they began
 * under (`Lease.act`), so none of them lasts longer than `leaseMs - safetyMs`
 * on its clock, and before a successor acquires, the deposed holder has given
 * up on every one: its validity ran out (a takeover), or its release waited
 * for them (a release). What the cloud still does with a request its caller
 * gave up on, no client can bound; the wait rests on one assumption, taken to
 * be at least as long as the longest call: EC2 applies a request, if ever,
 * within `LATE_LANDING_MS` or the deposed holder's `leaseMs` (on its clock),
 * whichever is longer, after its caller gave up on it. Measured on the
 * successor's clock, which may run up to `CLOCK_RATE_BOUND` faster, that is
 * 2200 ms for the default lease. A shorter lease shortens a takeover, not this
 * wait. The successor waits only when the item says a call may be in flight
 * (`LeaseRecord.inFlight`), which a holder records before making one; an idle
 * holder's successor moves the address at once.
 */
export function successorWaitMs(priorLeaseMs: number): number {
  return Math.ceil(Math.max(priorLeaseMs, LATE_LANDING_MS) * (1 + CLOCK_RATE_BOUND));
}

/**
 * The least time after its caller gave up within which EC2 is taken to apply
 * a request, if ever (`successorWaitMs`): 2 s, the bound the fleet was built
 * and tested with when its lease was 2000 ms, kept when the lease shortened.
 */
export const LATE_LANDING_MS = 2000;

export interface LeaseRecord {
  readonly name: string;
  /** Absent after a release. */
  readonly holder: string | undefined;
  readonly token: number;
  /** Record version number: random, new on every write. */
  readonly rvn: string;
  /** The holder's lease length: the waiter waits this long, whatever its own setting. */
  readonly leaseMs: number;
  /** Wall time of the last write, display only. */
  readonly updatedAtMs: number;
  /**
   * What the holder's last write said: it may have a call outside the store
   * (AssociateAddress) in flight, or one given up on that may still land. A
   * successor waits `successorWaitMs` before its own such call unless this is
   * false; absent (an item written before it existed) counts as true.
   */
  readonly inFlight?: boolean;
}

export type LeaseCondition = { readonly rvn: string } | { readonly holder: string; readonly token: number };

export interface LeaseChange {
  readonly holder: string | undefined;
  readonly bumpToken: boolean;
  readonly rvn: string;
  readonly leaseMs: number;
  readonly updatedAtMs: number;
  /** See `LeaseRecord.inFlight`; undefined removes it (unknown: a successor waits). */
  readonly inFlight?: boolean;
}

/** Storage of lease items, narrow so the state machine can be tested on its own. */
export interface LeaseStore {
  get(name: string, deadlineMs?: number): Promise<LeaseRecord | undefined>;
  /**
   * Creates the item with `attribute_not_exists(sk)`, its token above the
   * lease's token floor when `record.token` is not; the record as created, or
   * undefined when the item exists.
   */
  create(record: LeaseRecord, deadlineMs?: number): Promise<LeaseRecord | undefined>;
  /** Applies `change` when `condition` holds; the new record, or undefined when it did not hold. */
  updateIf(
    name: string,
    condition: LeaseCondition,
    change: LeaseChange,
    deadlineMs?: number,
  ): Promise<LeaseRecord | undefined>;
}

export interface LeaseSettings {
  /** Lease name, e.g. `fleet` or `checker`. */
  readonly name: string;
  /** This contender's id (the node id). */
  readonly holderId: string;
  /** How long a lease lives after a renewal starts. @default 2000 (see `DEFAULT_LEASE_MS`) */
  readonly leaseMs?: number;
  /** Interval between renewals; `leaseMs - safetyMs` must exceed 2 x `renewMs`. @default leaseMs / 3 */
  readonly renewMs?: number;
  /** The holder stops this long before its lease could expire anywhere; at least `minSafetyMs(leaseMs)`. @default leaseMs / 10 */
  readonly safetyMs?: number;
  /** How often a waiter reads the lease; at most leaseMs / 2. @default leaseMs / 8 */
  readonly pollMs?: number;
}

export interface ResolvedLeaseSettings extends Required<LeaseSettings> {}

/** Fills in defaults and checks the timing rules; errors name the fields. */
export function resolveLeaseSettings(s: LeaseSettings): ResolvedLeaseSettings {
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(s.name))
    throw new SettingsError(`\`name\` '${s.name}' must be 1-128 of [A-Za-z0-9._:-]`);
  if (!s.holderId || s.holderId.length > 256) throw new SettingsError("`holderId` must be 1-256 characters");
  const leaseMs = s.leaseMs ?? DEFAULT_LEASE_MS;
  if (!Number.isFinite(leaseMs) || leaseMs < 50)
    throw new SettingsError(`\`leaseMs\` must be at least 50, got ${leaseMs}`);
  const renewMs = s.renewMs ?? Math.floor(leaseMs / 3);
  const safetyMs = s.safetyMs ?? Math.floor(leaseMs / 10);
  const pollMs = s.pollMs ?? Math.floor(leaseMs / 8);
  if (!(renewMs > 0)) throw new SettingsError(`\`renewMs\` must be above 0, got ${renewMs}`);
  if (!(safetyMs >= 0)) throw new SettingsError(`\`safetyMs\` must be at least 0, got ${safetyMs}`);
  if (safetyMs < minSafetyMs(leaseMs)) {
    throw new SettingsError(
      `\`safetyMs\` (${safetyMs}) must be at least ${minSafetyMs(leaseMs)} with \`leaseMs\` ${leaseMs}: the holder must stop before a waiter whose clock runs up to ${CLOCK_RATE_BOUND * 100}% faster (CLOCK_RATE_BOUND) can take over`,
    );
  }
  if (!(leaseMs - safetyMs > 2 * renewMs)) {
    throw new SettingsError(
      `\`leaseMs\` - \`safetyMs\` (${leaseMs - safetyMs}) must exceed 2 x \`renewMs\` (${2 * renewMs}), so that one lost renewal does not cost the lease`,
    );
  }
  if (!(pollMs > 0 && pollMs <= leaseMs / 2)) {
    throw new SettingsError(
      `\`pollMs\` must be above 0 and at most \`leaseMs\` / 2 (${leaseMs / 2}), got ${pollMs}`,
    );
  }
  return { name: s.name, holderId: s.holderId, leaseMs, renewMs, safetyMs, pollMs };
}

export interface LeaseEvents {
  acquired: [{ token: number; tookOverFrom: string | undefined }];
  renewed: [{ token: number; latencyMs: number }];
  lost: [{ token: number; reason: string }];
  released: [{ token: number }];
  /** A follower saw a holder (or a change of holder). */
  observed: [{ holder: string | undefined; token: number }];
}

/** The holder's state: what it last confirmed, and the signals of its holding. */
interface LeaderState {
  kind: "leader";
  token: number;
  rvn: string;
  validUntilMs: number;
  /** The same end by the wall clock, which counts a suspend that the monotonic clock does not. */
  wallValidUntilMs: number;
  nextRenewAtMs: number;
  /** No call outside the store before this (monotonic): a deposed holder's may still land until then. */
  quietUntilMs: number;
  /** What the last confirmed write of the item said about calls in flight (`inFlight`). */
  advertised: boolean;
  /** Aborted when the holding ends (lost, released, stopped): every side effect in flight ends. */
  readonly ended: AbortController;
  /** Aborted when a release begins: no new call outside the store starts. */
  readonly handover: AbortController;
}

type State = { kind: "follower" } | LeaderState | { kind: "stopped" };

/** A write sent whose answer never came: it may have landed. */
interface PendingWrite {
  readonly rvn: string;
  readonly startedAtMs: number;
  readonly startedAtWallMs: number;
  readonly tookOverFrom: string | undefined;
  /** The successor's wait it inherits (`successorWaitMs`); `by-token` for a created item (a floor above 0: wait). */
  readonly waitMs: number | "by-token";
  /** What the write says about calls in flight. */
  readonly inFlight: boolean;
}

/** What a side effect run by `Lease.act` gets: the token to stamp, and when to give up. */
export interface Holding {
  readonly token: number;
  /**
   * Aborts when the holding ends, or at the validity it had when the effect
   * began, whichever comes first: pass it to the call (`abortSignal`).
   */
  readonly signal: AbortSignal;
  /**
   * Aborts when the holding ends, not at the validity: for a read that checks
   * an effect and may take longer than a validity (EC2 showing a move). A
   * release waits for it as for the effect.
   */
  readonly ended: AbortSignal;
  /** Ms left until `signal` aborts by the clock: a store call's `deadlineMs`. */
  remainingMs(): number;
}

export function newRvn(): string {
  return randomBytes(12).toString("base64url");
}

/**
 * One contender for one lease. Drive it with `start()` (a loop of `tick()`),
 * or call `tick()` yourself (tests with an injected clock).
 */
export class Lease extends EventEmitter<LeaseEvents> {
  readonly settings: ResolvedLeaseSettings;
  private readonly store: LeaseStore;
  private readonly clock: Clock;
  private state: State = { kind: "follower" };
  /** The rvn a follower sees and since when (monotonic, at the end of the read). */
  private seen: { rvn: string; sinceMs: number; holder: string | undefined; token: number } | undefined;
  private pending: PendingWrite | undefined;
  /** Since when this contender's reads have been failing (undefined while they succeed). */
  private failingSinceMs: number | undefined;
  /** The token this contender held until its validity ran out unconfirmed (not released, not taken). */
  private lostByTimeout: number | undefined;
  private eligible = true;
  /** Set by `stop()`: no acquisition while it hands over. */
  private stopping = false;
  private loop: Promise<void> | undefined;
  private abort = new AbortController();
  private watchdog: AbortController | undefined;
  private ticking: Promise<number> | undefined;
  private releasing: Promise<void> | undefined;
  /** Side effects run by `act` that have not ended. */
  private readonly effects = new Set<Promise<unknown>>();
  /** Of those, calls outside the store. */
  private unfencedInFlight = 0;
  /** Until when (monotonic) a call outside the store that was given up on may still land, or a deposed holder's. */
  private dirtyUntilMs = Number.NEGATIVE_INFINITY;

  constructor(store: LeaseStore, settings: LeaseSettings, clock: Clock = systemClock) {
    super();
    this.settings = resolveLeaseSettings(settings);
    this.store = store;
    this.clock = clock;
  }

  /** True only while this contender holds the lease and its validity has not run out, right now. */
  isLeader(): boolean {
    const st = this.state;
    return (
      st.kind === "leader" &&
      this.clock.nowMs() < st.validUntilMs &&
      this.clock.wallMs() < st.wallValidUntilMs
    );
  }

  /** The token of the lease held now; undefined when not leader. */
  get token(): number | undefined {
    return this.isLeader() && this.state.kind === "leader" ? this.state.token : undefined;
  }

  /** Throws `LeaseLostError` unless leader now; returns the token to stamp side effects with. */
  assertLeader(): number {
    const token = this.token;
    if (token === undefined)
      throw new LeaseLostError(this.settings.name, "not the holder (or validity ran out)");
    return token;
  }

  /** Monotonic time until which the current holding is valid; undefined when not leader. */
  get validUntilMs(): number | undefined {
    return this.state.kind === "leader" ? this.state.validUntilMs : undefined;
  }

  /** The holder and token last seen by this contender (itself when leader). */
  get observed(): { holder: string | undefined; token: number } | undefined {
    if (this.state.kind === "leader") return { holder: this.settings.holderId, token: this.state.token };
    return this.seen ? { holder: this.seen.holder, token: this.seen.token } : undefined;
  }

  /** An ineligible contender does not acquire (a node draining or marked failed); a leader releases. */
  async setEligible(eligible: boolean): Promise<void> {
    this.eligible = eligible;
    if (!eligible && this.state.kind === "leader") await this.release();
  }

  /**
   * Runs `fn`, one side effect of the current holding (docs/architecture.md §6).
   * Throws `LeaseLostError` without running it unless this contender is leader
   * now (with `token`, when given). `fn` gets a signal that aborts when the
   * holding ends or at the validity it had when `fn` began, whichever comes
   * first: no effect outlives the holding it was made under. `release()` waits
   * for every effect in flight.
   *
   * `unfenced`: a call that no store checks the token of (AssociateAddress).
   * It first waits out `untilQuiet()`, does not start once a release has
   * begun, and is recorded in the lease item (`inFlight`, a renewal written
   * before the call when the item says none) so that a successor knows to wait
   * for it. One given up on (aborted, no answer) stays recorded for `leaseMs`,
   * the longest it may still take to land.
   */
  async act<T>(
    fn: (h: Holding) => Promise<T>,
    options: { readonly token?: number; readonly unfenced?: boolean } = {},
  ): Promise<T> {
    const unfenced = options.unfenced ?? false;
    let leader = this.current(options.token, unfenced);
    if (unfenced) {
      await this.untilQuiet(options.token);
      this.unfencedInFlight++;
    }
    let settled = false;
    try {
      if (unfenced && !leader.advertised) await this.advertise(leader);
      leader = this.current(options.token, unfenced);
      const deadlineMs = leader.validUntilMs;
      const timer = new AbortController();
      const done = new AbortController();
      void this.clock.sleep(deadlineMs - this.clock.nowMs(), done.signal).then(() => {
        if (!done.signal.aborted) timer.abort(new LeaseLostError(this.settings.name, "validity ran out"));
      });
      const holding: Holding = {
        token: leader.token,
        signal: AbortSignal.any([leader.ended.signal, timer.signal]),
        ended: leader.ended.signal,
        remainingMs: () => Math.max(0, deadlineMs - this.clock.nowMs()),
      };
      const run = fn(holding);
      this.effects.add(run);
      try {
        const value = await run;
        settled = true;
        return value;
      } catch (err) {
        // An answer that refused the call leaves nothing behind; anything else may still land.
        settled = err instanceof AwsCallError && !err.retryable;
        throw err;
      } finally {
        done.abort();
        this.effects.delete(run);
      }
    } finally {
      if (unfenced) {
        this.unfencedInFlight--;
        if (!settled)
          this.dirtyUntilMs = Math.max(this.dirtyUntilMs, this.clock.nowMs() + this.settings.leaseMs);
      }
    }
  }

  /**
   * Resolves once no deposed holder's call outside the store can still land
   * (at once, unless this holding began after a holder that may have had one
   * in flight: then `successorWaitMs` after the acquiring write began). Throws
   * `LeaseLostError` when the holding ends or a release begins first.
   */
  async untilQuiet(token?: number): Promise<void> {
    const leader = this.current(token, true);
    const waitMs = leader.quietUntilMs - this.clock.nowMs();
    if (waitMs > 0)
      await this.clock.sleep(waitMs, AbortSignal.any([leader.ended.signal, leader.handover.signal]));
    this.current(token, true);
  }

  /** The leader state if it may act now (a call outside the store: not while handing over); else throws. */
  private current(token: number | undefined, unfenced: boolean): LeaderState {
    const st = this.state;
    if (st.kind !== "leader" || !this.isLeader())
      throw new LeaseLostError(this.settings.name, "not the holder (or validity ran out)");
    if (token !== undefined && st.token !== token)
      throw new LeaseLostError(this.settings.name, `held with token ${st.token}, not ${token}`);
    if (unfenced && st.handover.signal.aborted)
      throw new LeaseLostError(this.settings.name, "handing over: no new call outside the store");
    return st;
  }

  /** Whether a call outside the store may be in flight or still land: what the item's `inFlight` says. */
  private inFlightNow(): boolean {
    return this.unfencedInFlight > 0 || this.clock.nowMs() < this.dirtyUntilMs;
  }

  /** A renewal now, in turn with the ticks, so that the item says a call is in flight before it starts. */
  private async advertise(leader: LeaderState): Promise<void> {
    const run = (this.ticking ?? Promise.resolve(0)).then(() =>
      this.state === leader && this.isLeader() ? this.renew(leader) : 0,
    );
    this.ticking = run.catch(() => 0);
    await run;
    if (this.state !== leader || !leader.advertised)
      throw new LeaseLostError(this.settings.name, "could not record a call in flight in the lease item");
  }

  /** One step of the state machine; returns the ms until the next step is due. */
  tick(): Promise<number> {
    // Steps never overlap: a tick called while one runs waits for it.
    const run = (this.ticking ?? Promise.resolve(0)).then(() => this.step());
    this.ticking = run.catch(() => 0);
    return run;
  }

  private async step(): Promise<number> {
    const s = this.settings;
    if (this.state.kind === "stopped") return s.pollMs;
    if (this.state.kind === "leader") return this.leaderStep(this.state);
    return this.followerStep();
  }

  private async followerStep(): Promise<number> {
    const s = this.settings;
    let record: LeaseRecord | undefined;
    try {
      record = await this.store.get(s.name, s.pollMs * 2);
    } catch {
      // The store is unreachable: nobody can acquire now.
      this.failingSinceMs ??= this.clock.nowMs();
      return s.pollMs;
    }
    const readDoneMs = this.clock.nowMs();
    // Safety does not need it (an rvn seen unchanged for leaseMs was not renewed,
    // whatever reads failed between), but after an outage of half a lease or more
    // the waiter waits afresh: the holder that lost its lease to the outage alone
    // takes it back first (2b), so a store outage never moves the leader. A
    // single slow read restarts nothing.
    if (this.failingSinceMs !== undefined && readDoneMs - this.failingSinceMs >= s.leaseMs / 2)
      this.seen = undefined;
    this.failingSinceMs = undefined;

    // 5. An earlier write of ours whose answer was lost: did it land?
    const pending = this.pending;
    this.pending = undefined;
    if (pending && record && record.rvn === pending.rvn && record.holder === s.holderId) {
      this.becomeLeader(record.token, record.rvn, pending);
      return this.nextDelay();
    }
    if (this.state.kind !== "follower") return s.pollMs;
    const canAcquire = this.eligible && !this.stopping;

    // 1. Free: nobody holds an item (a new fleet, or the item was deleted).
    if (!record) {
      if (!canAcquire) return s.pollMs;
      const rvn = newRvn();
      // Written as in flight: a deleted item's last holder is unknown (the floor says whether there was one).
      const write = {
        rvn,
        ...this.startedAt(),
        tookOverFrom: undefined,
        waitMs: "by-token",
        inFlight: true,
      } as const;
      return this.attempt(write, async () => {
        const created = await this.store.create(
          {
            name: s.name,
            holder: s.holderId,
            token: 1,
            rvn,
            leaseMs: s.leaseMs,
            updatedAtMs: this.clock.wallMs(),
            inFlight: true,
          },
          s.pollMs * 2,
        );
        return created?.token;
      });
    }

    if (this.seen?.rvn !== record.rvn) {
      const changedHolder = this.seen?.holder !== record.holder || this.seen?.token !== record.token;
      this.seen = { rvn: record.rvn, sinceMs: readDoneMs, holder: record.holder, token: record.token };
      if (changedHolder) this.emit("observed", { holder: record.holder, token: record.token });
    }

    if (!canAcquire) return s.pollMs;
    // 2. Released: take it at once. 2b. Still recorded as ours with the token we
    // lost by timeout (e.g. the store was unreachable): nobody acquired since, take
    // it back at once, so a store outage alone never moves the leader.
    // 3. Held by another: only once the same rvn has been seen for its leaseMs.
    const waitedMs = readDoneMs - this.seen.sinceMs;
    const ownPast = record.holder === s.holderId && record.token === this.lostByTimeout;
    if (record.holder !== undefined && !ownPast && waitedMs < record.leaseMs) {
      return Math.max(1, Math.min(s.pollMs, record.leaseMs - waitedMs));
    }
    const seenRvn = record.rvn;
    const rvn = newRvn();
    const from = record.holder;
    // The holder before may have left a call outside the store in flight, unless its last write said
    // none (an item without the attribute predates it: assume one). Our own past calls go where ours go.
    const waitMs = ownPast || record.inFlight === false ? 0 : successorWaitMs(record.leaseMs);
    const inFlight = waitMs > 0 || this.inFlightNow();
    return this.attempt({ rvn, ...this.startedAt(), tookOverFrom: from, waitMs, inFlight }, async () => {
      const next = await this.store.updateIf(
        s.name,
        { rvn: seenRvn },
        {
          holder: s.holderId,
          bumpToken: true,
          rvn,
          leaseMs: s.leaseMs,
          updatedAtMs: this.clock.wallMs(),
          inFlight,
        },
        s.pollMs * 2,
      );
      return next?.token;
    });
  }

  /** Runs an acquiring write; on a lost answer, remembers it for the next read to settle. */
  private async attempt(pending: PendingWrite, write: () => Promise<number | undefined>): Promise<number> {
    try {
      const token = await write();
      if (token !== undefined) {
        this.becomeLeader(token, pending.rvn, pending);
        return this.nextDelay();
      }
      // Somebody else wrote first, or a retry of our own landed write found its
      // condition gone: the next read settles which. Watch afresh meanwhile.
      this.pending = pending;
      this.seen = undefined;
      return 1;
    } catch (err) {
      if (isConditionFailed(err) || !(err instanceof StoreError) || err.retryable) this.pending = pending;
      return 1;
    }
  }

  /** When a write starts, by both clocks: its validity counts from here. */
  private startedAt(): { startedAtMs: number; startedAtWallMs: number } {
    return { startedAtMs: this.clock.nowMs(), startedAtWallMs: this.clock.wallMs() };
  }

  private becomeLeader(token: number, rvn: string, write: PendingWrite): void {
    const s = this.settings;
    const waitMs = write.waitMs === "by-token" ? (token > 1 ? successorWaitMs(s.leaseMs) : 0) : write.waitMs;
    const quietUntilMs = write.startedAtMs + waitMs;
    this.dirtyUntilMs = Math.max(this.dirtyUntilMs, quietUntilMs);
    this.state = {
      kind: "leader",
      token,
      rvn,
      validUntilMs: write.startedAtMs + s.leaseMs - s.safetyMs,
      wallValidUntilMs: write.startedAtWallMs + s.leaseMs - s.safetyMs,
      nextRenewAtMs: write.startedAtMs + s.renewMs,
      quietUntilMs,
      advertised: write.inFlight,
      ended: new AbortController(),
      handover: new AbortController(),
    };
    this.seen = undefined;
    this.armWatchdog();
    this.emit("acquired", { token, tookOverFrom: write.tookOverFrom });
  }

  private async leaderStep(leader: LeaderState): Promise<number> {
    if (!this.isLeader()) {
      this.loseByTimeout(leader);
      return 1;
    }
    if (this.clock.nowMs() < leader.nextRenewAtMs) return this.nextDelay();
    return this.renew(leader);
  }

  /** 4. Renews; the call may not outlive the current validity. The item says whether a call is in flight. */
  private async renew(leader: LeaderState): Promise<number> {
    const s = this.settings;
    const rvn = newRvn();
    const started = this.startedAt();
    const budget = leader.validUntilMs - started.startedAtMs;
    const inFlight = this.inFlightNow();
    let next: LeaseRecord | undefined;
    try {
      next = await this.store.updateIf(
        s.name,
        { holder: s.holderId, token: leader.token },
        {
          holder: s.holderId,
          bumpToken: false,
          rvn,
          leaseMs: s.leaseMs,
          updatedAtMs: this.clock.wallMs(),
          inFlight,
        },
        budget,
      );
    } catch {
      // 5. The answer was lost: re-read before deciding anything.
      return this.settleRenewal(leader, rvn, started, inFlight);
    }
    if (this.state !== leader) return this.nextDelay(); // released meanwhile
    if (!next) {
      this.lose(leader.token, "the lease was taken over (holder or token changed)");
      return 1;
    }
    this.renewed(leader, rvn, started, inFlight);
    return this.nextDelay();
  }

  private async settleRenewal(
    leader: LeaderState,
    rvn: string,
    started: { startedAtMs: number; startedAtWallMs: number },
    inFlight: boolean,
  ): Promise<number> {
    const s = this.settings;
    const budget = leader.validUntilMs - this.clock.nowMs();
    if (budget <= 0) return 1;
    let record: LeaseRecord | undefined;
    try {
      record = await this.store.get(s.name, budget);
    } catch {
      return Math.min(s.renewMs / 4, Math.max(1, leader.validUntilMs - this.clock.nowMs()));
    }
    if (this.state !== leader) return this.nextDelay();
    if (!record || record.holder !== s.holderId || record.token !== leader.token) {
      this.lose(leader.token, "the lease was taken over (seen on re-read after a lost renewal answer)");
      return 1;
    }
    if (record.rvn === rvn) this.renewed(leader, rvn, started, inFlight);
    else {
      // The renewal did not land; still ours, try again soon. The item says what its last write said.
      leader.rvn = record.rvn;
      leader.advertised = record.inFlight !== false;
    }
    return Math.max(1, Math.min(s.renewMs / 4, leader.validUntilMs - this.clock.nowMs()));
  }

  private renewed(
    leader: LeaderState,
    rvn: string,
    started: { startedAtMs: number; startedAtWallMs: number },
    inFlight: boolean,
  ): void {
    const s = this.settings;
    leader.rvn = rvn;
    leader.validUntilMs = started.startedAtMs + s.leaseMs - s.safetyMs;
    leader.wallValidUntilMs = started.startedAtWallMs + s.leaseMs - s.safetyMs;
    leader.nextRenewAtMs = started.startedAtMs + s.renewMs;
    leader.advertised = inFlight;
    this.armWatchdog();
    this.emit("renewed", { token: leader.token, latencyMs: this.clock.nowMs() - started.startedAtMs });
  }

  /** The holder's own clocks say its validity ran out with no renewal confirmed. */
  private loseByTimeout(leader: LeaderState): void {
    const validMs = this.settings.leaseMs - this.settings.safetyMs;
    const suspended = this.clock.nowMs() < leader.validUntilMs;
    this.lose(
      leader.token,
      suspended
        ? `the wall clock moved on ${validMs} ms since the last renewal started while the monotonic clock did not (a suspend?)`
        : `no renewal confirmed within ${validMs} ms`,
      true,
    );
  }

  private lose(token: number, reason: string, byTimeout = false): void {
    const st = this.state;
    this.lostByTimeout = byTimeout ? token : undefined;
    this.state = { kind: "follower" };
    this.seen = undefined;
    this.clearWatchdog();
    if (st.kind === "leader") st.ended.abort(new LeaseLostError(this.settings.name, reason));
    this.emit("lost", { token, reason });
  }

  private nextDelay(): number {
    const st = this.state;
    if (st.kind !== "leader") return this.settings.pollMs;
    const now = this.clock.nowMs();
    return Math.max(1, Math.min(st.nextRenewAtMs, st.validUntilMs) - now);
  }

  /**
   * While a renewal call hangs, the loop is blocked in it; this timer makes
   * `lost` fire on time anyway (`isLeader()` is right regardless: it reads the clock).
   */
  private armWatchdog(): void {
    this.clearWatchdog();
    if (!this.loop || this.state.kind !== "leader") return;
    const leader = this.state;
    const watchdog = new AbortController();
    this.watchdog = watchdog;
    void this.clock
      .sleep(Math.max(0, leader.validUntilMs - this.clock.nowMs()) + 1, watchdog.signal)
      .then(() => {
        if (!watchdog.signal.aborted && this.state === leader && !this.isLeader()) this.loseByTimeout(leader);
      });
  }

  private clearWatchdog(): void {
    this.watchdog?.abort();
    this.watchdog = undefined;
  }

  /** Starts the loop of ticks. Errors never escape it: a failing store means "not leader". */
  start(): void {
    if (this.loop) return;
    if (this.state.kind === "stopped") this.state = { kind: "follower" };
    this.stopping = false;
    this.abort = new AbortController();
    const signal = this.abort.signal;
    this.loop = (async () => {
      while (!signal.aborted) {
        let delay: number;
        try {
          delay = await this.tick();
        } catch {
          delay = this.settings.pollMs;
        }
        await this.clock.sleep(delay, signal);
      }
    })();
  }

  /**
   * Hands the lease over: no call outside the store starts from here on; the
   * side effects in flight end first (each by the validity it began under, the
   * holder renewing meanwhile); then the holder stops acting and clears the
   * holder in the item, saying whether a call outside the store may still
   * land, so that a waiter takes it at its next poll and waits for such a call
   * only if there is one. A failed release is harmless: the lease then expires
   * by itself.
   */
  release(): Promise<void> {
    this.releasing ??= this.handOver().finally(() => {
      this.releasing = undefined;
    });
    return this.releasing;
  }

  private async handOver(): Promise<void> {
    await this.ticking;
    const st = this.state;
    if (st.kind !== "leader") return;
    st.handover.abort();
    while (this.effects.size > 0) await Promise.allSettled([...this.effects]);
    await this.ticking;
    if (this.state !== st) return; // lost meanwhile
    this.state = { kind: "follower" };
    this.clearWatchdog();
    st.ended.abort(new LeaseLostError(this.settings.name, "released"));
    const s = this.settings;
    try {
      await this.store.updateIf(
        s.name,
        { holder: s.holderId, token: st.token },
        {
          holder: undefined,
          bumpToken: false,
          rvn: newRvn(),
          leaseMs: s.leaseMs,
          updatedAtMs: this.clock.wallMs(),
          inFlight: this.inFlightNow(),
        },
        Math.max(100, st.validUntilMs - this.clock.nowMs()),
      );
    } catch {
      // expires by itself
    }
    this.emit("released", { token: st.token });
  }

  /** Stops the loop; with `release` (the default) hands the lease over first, renewing until it has. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.stopping = true;
    if (options.release ?? true) await this.release();
    this.abort.abort();
    const loop = this.loop;
    this.loop = undefined;
    await loop;
    this.clearWatchdog();
    const st = this.state;
    if (st.kind === "leader") st.ended.abort(new LeaseLostError(this.settings.name, "stopped"));
    this.state = { kind: "stopped" };
  }
}

/** `LeaseStore` on the `State` table, in one fleet's partition. */
export class DynamoLeaseStore implements LeaseStore {
  constructor(
    private readonly store: StateStore,
    private readonly fleetId: string,
  ) {}

  private key(name: string) {
    return { pk: keys.fleet(this.fleetId), sk: keys.lease(name) };
  }

  async get(name: string, deadlineMs?: number): Promise<LeaseRecord | undefined> {
    const item = await this.store.get("state", this.key(name), { deadlineMs });
    return item ? toRecord(name, item) : undefined;
  }

  async create(record: LeaseRecord, deadlineMs?: number): Promise<LeaseRecord | undefined> {
    const startedAtMs = this.store.clock.nowMs();
    const tokens = await this.store.get(
      "state",
      { pk: keys.fleet(this.fleetId), sk: keys.tokens },
      { deadlineMs },
    );
    const floor = Number(tokens?.[floorAttribute(record.name)] ?? 0);
    const created = { ...record, token: Math.max(record.token, floor + 1) };
    const left = deadlineMs === undefined ? undefined : deadlineMs - (this.store.clock.nowMs() - startedAtMs);
    const ok = await this.store.put(
      "state",
      {
        ...this.key(record.name),
        kind: "lease",
        holder: created.holder,
        token: created.token,
        rvn: created.rvn,
        leaseMs: created.leaseMs,
        updatedAt: created.updatedAtMs,
        ...(created.inFlight !== undefined ? { inFlight: created.inFlight } : {}),
      },
      { condition: "attribute_not_exists(sk)" },
      { deadlineMs: left },
    );
    return ok ? created : undefined;
  }

  async updateIf(
    name: string,
    condition: LeaseCondition,
    change: LeaseChange,
    deadlineMs?: number,
  ): Promise<LeaseRecord | undefined> {
    // Conditions, written out:
    //   by rvn:            rvn = :seen
    //   by holder & token: holder = :me AND #token = :mine
    const values: Record<string, unknown> = {
      ":rvn": change.rvn,
      ":leaseMs": change.leaseMs,
      ":at": change.updatedAtMs,
    };
    const sets = ["rvn = :rvn", "leaseMs = :leaseMs", "updatedAt = :at"];
    const removes: string[] = [];
    if (change.holder === undefined) removes.push("holder");
    else {
      sets.push("holder = :holder");
      values[":holder"] = change.holder;
    }
    if (change.inFlight === undefined) removes.push("inFlight");
    else {
      sets.push("inFlight = :inFlight");
      values[":inFlight"] = change.inFlight;
    }
    if (change.bumpToken) {
      sets.push("#token = #token + :one");
      values[":one"] = 1;
    }
    let cond: string;
    if ("rvn" in condition) {
      cond = "rvn = :seen";
      values[":seen"] = condition.rvn;
    } else {
      cond = "holder = :me AND #token = :mine";
      values[":me"] = condition.holder;
      values[":mine"] = condition.token;
    }
    const item = await this.store.update(
      "state",
      this.key(name),
      `SET ${sets.join(", ")}${removes.length > 0 ? ` REMOVE ${removes.join(", ")}` : ""}`,
      { condition: cond, names: { "#token": "token" }, values },
      { deadlineMs },
    );
    return item ? toRecord(name, item) : undefined;
  }
}

function toRecord(name: string, item: Record<string, unknown>): LeaseRecord {
  return {
    name,
    holder: typeof item.holder === "string" ? item.holder : undefined,
    token: Number(item.token),
    rvn: String(item.rvn),
    leaseMs: Number(item.leaseMs),
    updatedAtMs: Number(item.updatedAt ?? 0),
    ...(typeof item.inFlight === "boolean" ? { inFlight: item.inFlight } : {}),
  };
}
