/**
 * A gate in a Route 53 client's middleware stack, for what the fault proxy
 * cannot do: hold one operation's requests unsent until the test releases
 * them (a checker paused between its decision and its batch, whose batch then
 * lands late); report changes PENDING while `pending` is set, as Route 53
 * does until a change has propagated (the emulator's are INSYNC at once,
 * docs/architecture.md §9); and count the calls per operation. The requests
 * still go through the real SDK to the emulator; only their timing and the
 * change status are the test's.
 */
import type { Route53Client } from "@aws-sdk/client-route-53";

interface Hold {
  readonly arrived: Promise<void>;
  readonly release: () => void;
}

export class Route53Gate {
  /** Calls per operation (`ChangeResourceRecordSets`, `GetChange`, ...), held ones included. */
  readonly calls = new Map<string, number>();
  /** While true, ChangeResourceRecordSets and GetChange answer `PENDING`. */
  pending = false;
  private readonly holds = new Map<string, { arrive: () => void; released: Promise<void> }>();

  constructor(client: Route53Client) {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const op = String(context.commandName ?? "").replace(/Command$/, "");
        this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
        const hold = this.holds.get(op);
        if (hold) {
          this.holds.delete(op);
          hold.arrive();
          await hold.released;
        }
        const out = await next(args);
        const info = (out.output as { ChangeInfo?: { Status?: string } }).ChangeInfo;
        if (this.pending && info) info.Status = "PENDING";
        return out;
      },
      { step: "initialize", name: "hafleetRoute53Gate" },
    );
  }

  /** Holds the next call of `operation` until `release()`; `arrived` resolves when it is made. */
  hold(operation: string): Hold {
    let arrive = () => {};
    let release = () => {};
    const arrived = new Promise<void>((r) => {
      arrive = r;
    });
    const released = new Promise<void>((r) => {
      release = r;
    });
    this.holds.set(operation, { arrive, released });
    return { arrived, release };
  }

  count(operation: string): number {
    return this.calls.get(operation) ?? 0;
  }
}
