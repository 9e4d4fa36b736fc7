/**
 * Elastic IPs through the EC2 API. AssociateAddress cannot check a fencing
 * token and DescribeAddresses is eventually consistent, so a move is always
 * followed by reading back until the address shows the new instance, and the
 * desired owner lives fenced in the store (`vip#`), where reconcilers compare.
 * Associations are read from DescribeAddresses only: DescribeInstances can keep
 * showing a moved address on the old instance (seen on moto 5.2).
 *
 * The client makes one attempt per call (`maxAttempts: 1`, as the state
 * store's does). A move is one AssociateAddress, never sent again, and ends
 * when its caller's `signal` aborts: a lease holder aborts it when its
 * validity runs out, and a copy the SDK retried later could land after the
 * next holder's move (docs/architecture.md §6). Reads are retried here, with
 * jittered backoff, until the signal aborts.
 */
import {
  type Address,
  AssociateAddressCommand,
  DescribeAddressesCommand,
  EC2Client,
} from "@aws-sdk/client-ec2";
import { type AwsClientOptions, awsClientConfig, describeAwsFailure } from "./aws";
import { type Clock, systemClock } from "./clock";
import { Ec2Error } from "./errors";
import { DEFAULT_RETRY_POLICY, pollUntil, withRetry } from "./retry";

/** Tag that binds an Elastic IP to a fleet; the instance role may only move addresses with it. */
export const FLEET_TAG = "hafleet:fleet";

export interface AddressState {
  readonly allocationId: string;
  readonly publicIp: string;
  /** Empty when not associated. */
  readonly instanceId: string;
  readonly associationId: string;
  readonly fleetId: string | undefined;
}

export interface MoveResult {
  readonly associationId: string;
  /** Reads until DescribeAddresses showed the new instance. */
  readonly verifyReads: number;
  readonly elapsedMs: number;
}

export interface ElasticIpsOptions {
  /** An existing client; its own settings apply (give it `maxAttempts: 1` for single-attempt moves). */
  readonly ec2?: EC2Client;
  readonly aws?: AwsClientOptions;
  readonly clock?: Clock;
}

/** What a user of Elastic IPs needs of `ElasticIps`: narrow, so that tests can put a fake in its place. */
export type ElasticIpApi = Pick<ElasticIps, "describe" | "moveTo">;

export class ElasticIps {
  readonly ec2: EC2Client;
  private readonly clock: Clock;
  private readonly ownsClient: boolean;

  constructor(options: ElasticIpsOptions = {}) {
    this.ownsClient = !options.ec2;
    this.ec2 =
      options.ec2 ??
      new EC2Client(awsClientConfig({ requestTimeoutMs: 2000, maxAttempts: 1, ...options.aws }));
    this.clock = options.clock ?? systemClock;
  }

  async describe(allocationId: string, options: { signal?: AbortSignal } = {}): Promise<AddressState> {
    const signal = options.signal;
    const out = await this.read(signal, () =>
      this.call("DescribeAddresses", () =>
        this.ec2.send(new DescribeAddressesCommand({ AllocationIds: [allocationId] }), {
          abortSignal: signal,
        }),
      ),
    );
    const address = out.Addresses?.[0];
    if (!address)
      throw new Ec2Error(
        "HAFLEET_EC2_NOT_FOUND",
        "DescribeAddresses",
        `Elastic IP ${allocationId} not found`,
        false,
      );
    return toState(address);
  }

  /** Every Elastic IP tagged with the fleet. */
  async listByFleet(fleetId: string): Promise<AddressState[]> {
    const out = await this.read(undefined, () =>
      this.call("DescribeAddresses", () =>
        this.ec2.send(
          new DescribeAddressesCommand({ Filters: [{ Name: `tag:${FLEET_TAG}`, Values: [fleetId] }] }),
        ),
      ),
    );
    return (out.Addresses ?? []).map(toState);
  }

  /**
   * Associates the address with the instance (taking it from whichever had it),
   * in one attempt, and reads back until DescribeAddresses shows it there, up
   * to `verifyMs`. Throws `HAFLEET_EC2_UNVERIFIED` when the read-back never
   * agreed; `signal` ends the call and its read-back at once (a retryable
   * `Ec2Error`: the association may still land). With `verifySignal`, that
   * ends the read-back instead: a lease holder bounds the association by its
   * lease's validity, but EC2 may show a move later than a lease stays valid
   * (applied up to a second after it is accepted, then read stale for a while).
   */
  async moveTo(
    allocationId: string,
    instanceId: string,
    options: { verifyMs?: number; signal?: AbortSignal; verifySignal?: AbortSignal } = {},
  ): Promise<MoveResult> {
    const started = this.clock.nowMs();
    const verifyMs = options.verifyMs ?? 5000;
    const signal = options.signal;
    const verifySignal = options.verifySignal ?? signal;
    const out = await this.call("AssociateAddress", () =>
      this.ec2.send(
        new AssociateAddressCommand({
          AllocationId: allocationId,
          InstanceId: instanceId,
          AllowReassociation: true,
        }),
        { abortSignal: signal },
      ),
    );
    return pollUntil(
      this.clock,
      { withinMs: verifyMs, firstDelayMs: 25, maxDelayMs: 400 },
      async (reads) => {
        const now = await this.describe(allocationId, { signal: verifySignal });
        return now.instanceId === instanceId
          ? {
              done: true as const,
              value: {
                associationId: out.AssociationId ?? now.associationId,
                verifyReads: reads,
                elapsedMs: this.clock.nowMs() - started,
              },
            }
          : { done: false as const, seen: now.instanceId };
      },
      (seen) =>
        new Ec2Error(
          "HAFLEET_EC2_UNVERIFIED",
          "AssociateAddress",
          `Elastic IP ${allocationId} still shows instance '${seen}' ${verifyMs} ms after moving it to ${instanceId}`,
          true,
        ),
    );
  }

  destroy(): void {
    if (this.ownsClient) this.ec2.destroy();
  }

  /** A read, retried while it fails retryably and `signal` has not aborted. */
  private read<T>(signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, {
      policy: DEFAULT_RETRY_POLICY,
      clock: this.clock,
      isRetryable: (err) => err instanceof Ec2Error && err.retryable && !signal?.aborted,
    });
  }

  private async call<T>(operation: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      throw translateEc2Error(err, operation);
    }
  }
}

function toState(a: Address): AddressState {
  return {
    allocationId: a.AllocationId ?? "",
    publicIp: a.PublicIp ?? "",
    instanceId: a.InstanceId ?? "",
    associationId: a.AssociationId ?? "",
    fleetId: a.Tags?.find((t) => t.Key === FLEET_TAG)?.Value,
  };
}

export function translateEc2Error(err: unknown, operation: string): Ec2Error {
  if (err instanceof Ec2Error) return err;
  const f = describeAwsFailure(err);
  if (/NotFound|Malformed/.test(f.name))
    return new Ec2Error("HAFLEET_EC2_NOT_FOUND", operation, f.detail, false, err);
  return new Ec2Error("HAFLEET_EC2", operation, f.detail, f.retryable, err);
}
