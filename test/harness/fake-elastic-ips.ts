/**
 * Elastic IPs in memory on the test's clock, for the table-driven tests of the
 * node agent. EC2 is tested through the emulator and the fault proxy in
 * test/integration; here a move's timing is data, so that every ordering of a
 * move against a lease change can be written down:
 *
 * - `leavesAfterMs`: how long the request waits in the caller before it is
 *   sent (connection set-up, a socket from the pool). A caller that gives up
 *   before then sends nothing.
 * - `landsAfterMs`: from sending until EC2 applies it. Once sent, it lands
 *   whether or not the caller is still waiting, as a request already on the
 *   wire does.
 * - `answersAfterMs`: from sending until the answer reaches the caller
 *   (at least `landsAfterMs`).
 */
import type { Clock } from "../../lib/core/clock";
import type { AddressState, ElasticIpApi, MoveResult } from "../../lib/core/elastic-ip";
import { Ec2Error } from "../../lib/core/errors";

export interface MovePlan {
  readonly leavesAfterMs?: number;
  readonly landsAfterMs?: number;
  readonly answersAfterMs?: number;
}

export interface MoveCall {
  readonly allocationId: string;
  readonly instanceId: string;
  readonly startedAtMs: number;
  sentAtMs?: number;
  landedAtMs?: number;
  /** When the caller stopped waiting: its answer, or its abort. */
  endedAtMs?: number;
  /** The caller's lease validity when the call began, when the caller told (see `FakeElasticIps`). */
  readonly validUntilMs?: number;
  outcome?: "answered" | "aborted";
}

/** One region's Elastic IPs, shared by every node's `FakeElasticIps`. */
export class FakeEc2 {
  readonly addresses = new Map<string, string>();
  readonly calls: MoveCall[] = [];
  /** Every association that landed, in order: [allocationId, instanceId, atMs]. */
  readonly landings: [string, string, number][] = [];
  private readonly plans = new Map<string, MovePlan[]>();

  constructor(readonly clock: Clock) {}

  /** The next moves to `instanceId` take this long, one plan per move. */
  plan(instanceId: string, ...plans: MovePlan[]): void {
    this.plans.set(instanceId, [...(this.plans.get(instanceId) ?? []), ...plans]);
  }

  nextPlan(instanceId: string): MovePlan {
    return this.plans.get(instanceId)?.shift() ?? {};
  }

  land(allocationId: string, instanceId: string): void {
    this.addresses.set(allocationId, instanceId);
    this.landings.push([allocationId, instanceId, this.clock.nowMs()]);
  }
}

export class FakeElasticIps implements ElasticIpApi {
  /** `validUntil`: the caller's lease validity, recorded with each call for the tests to check against. */
  constructor(
    private readonly ec2: FakeEc2,
    private readonly validUntil: () => number | undefined = () => undefined,
  ) {}

  async describe(allocationId: string): Promise<AddressState> {
    return {
      allocationId,
      publicIp: "127.0.99.1",
      instanceId: this.ec2.addresses.get(allocationId) ?? "",
      associationId: "",
      fleetId: "fleet",
    };
  }

  async moveTo(
    allocationId: string,
    instanceId: string,
    options: { verifyMs?: number; signal?: AbortSignal; verifySignal?: AbortSignal } = {},
  ): Promise<MoveResult> {
    const clock = this.ec2.clock;
    const plan = this.ec2.nextPlan(instanceId);
    const call: MoveCall = {
      allocationId,
      instanceId,
      startedAtMs: clock.nowMs(),
      ...(this.validUntil() !== undefined ? { validUntilMs: this.validUntil() } : {}),
    };
    this.ec2.calls.push(call);
    const signal = options.signal;
    const gaveUp = () => {
      call.endedAtMs = clock.nowMs();
      call.outcome = "aborted";
      return new Ec2Error("HAFLEET_EC2", "AssociateAddress", "AbortError: the caller gave up", true);
    };
    await clock.sleep(plan.leavesAfterMs ?? 0, signal);
    if (signal?.aborted) throw gaveUp();
    call.sentAtMs = clock.nowMs();
    const landsAfter = plan.landsAfterMs ?? 0;
    const landed = clock.sleep(landsAfter).then(() => {
      call.landedAtMs = clock.nowMs();
      this.ec2.land(allocationId, instanceId);
    });
    if (landsAfter === 0) await landed;
    await clock.sleep(Math.max(landsAfter, plan.answersAfterMs ?? landsAfter), signal);
    if (signal?.aborted) throw gaveUp();
    await landed;
    call.endedAtMs = clock.nowMs();
    call.outcome = "answered";
    return { associationId: "eipassoc-fake", verifyReads: 1, elapsedMs: clock.nowMs() - call.startedAtMs };
  }
}
