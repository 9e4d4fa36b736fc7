/**
 * A set of lease contenders as real child processes (test/harness/lease-contender.ts),
 * the events they print, and the safety invariants checked over those events.
 * Used by the lease contention test and by bench/lease.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { TableNames } from "../../lib/core/tables";
import { bundle } from "./bundle";

export interface ContenderEvent {
  readonly ev: "started" | "acquired" | "renewed" | "lost" | "released" | "act" | "stale-write";
  readonly token: number;
  /** Epoch ms on this machine's clock, shared by all contenders. */
  readonly t: number;
  readonly until?: number;
  readonly ok?: boolean;
  readonly refused?: boolean;
  readonly latencyMs?: number;
  readonly child: string;
}

export type Disruption = "kill" | "stop" | "drop" | "release";

export interface DisruptionRecord {
  readonly kind: Disruption;
  readonly at: number;
  readonly victim: string;
}

export class ContenderFleet {
  readonly events: ContenderEvent[] = [];
  readonly stderr: string[] = [];
  private readonly children = new Map<string, ChildProcess>();
  private spawned = 0;

  constructor(
    private readonly fleetId: string,
    private readonly tables: TableNames,
    private readonly endpoint: string,
    private readonly leaseMs?: number,
  ) {}

  /** Starts one more contender; returns its id. */
  async add(): Promise<string> {
    const script = await bundle("test/harness/lease-contender.ts");
    const id = `c${++this.spawned}`;
    const args = [script, "--fleet", this.fleetId, "--id", id];
    if (this.leaseMs) args.push("--lease-ms", String(this.leaseMs));
    const child = spawn(process.execPath, args, {
      env: {
        ...process.env,
        AWS_ENDPOINT_URL: this.endpoint,
        HAFLEET_STATE_TABLE: this.tables.state,
        HAFLEET_SESSIONS_TABLE: this.tables.sessions,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.children.set(id, child);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        this.events.push({ ...JSON.parse(line), child: id });
      } catch {
        this.stderr.push(`${id} stdout: ${line}`);
      }
    });
    child.stderr!.on("data", (d: Buffer) => this.stderr.push(`${id}: ${d.toString()}`));
    return id;
  }

  /** The contender that acquired last, by the events printed so far. */
  holder(): string | undefined {
    for (let i = this.events.length - 1; i >= 0; i--)
      if (this.events[i]!.ev === "acquired") return this.events[i]!.child;
    return undefined;
  }

  /** Resolves with the first acquisition after `since` by a contender other than `except`, or undefined at the timeout. */
  async nextAcquisition(
    since: number,
    except: string | undefined,
    timeoutMs: number,
  ): Promise<ContenderEvent | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const e = this.events.find((x) => x.ev === "acquired" && x.t >= since && x.child !== except);
      if (e) return e;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  }

  signal(id: string, signal: NodeJS.Signals): void {
    this.children.get(id)?.kill(signal);
  }

  /** Ends every contender: SIGTERM (graceful release), then SIGKILL what is left. */
  async stopAll(graceMs = 1500): Promise<void> {
    const alive = [...this.children.values()].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of alive) {
      c.kill("SIGCONT");
      c.kill("SIGTERM");
    }
    await Promise.all(
      alive.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const t = setTimeout(() => c.kill("SIGKILL"), graceMs);
            c.once("exit", () => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
  }
}

export interface InvariantReport {
  readonly failures: string[];
  readonly acquisitions: number;
  readonly successfulWrites: number;
  readonly refusedStaleWrites: number;
  /** Pairs of leadership intervals with different tokens that overlap in time. */
  readonly doubleHolders: number;
}

/** Checks the lease's safety invariants over what the contenders printed. */
export function checkLeaseInvariants(
  events: readonly ContenderEvent[],
  disruptions: readonly DisruptionRecord[],
): InvariantReport {
  const failures: string[] = [];
  const acquired = events.filter((e) => e.ev === "acquired").sort((a, b) => a.t - b.t);

  // 1. Tokens strictly increase in time order.
  for (let i = 1; i < acquired.length; i++) {
    if (!(acquired[i]!.token > acquired[i - 1]!.token)) {
      failures.push(
        `token ${acquired[i]!.token} (${acquired[i]!.child}) acquired after ${acquired[i - 1]!.token}`,
      );
    }
  }

  // 2. Leadership intervals of different tokens never overlap. An interval ends at the
  //    validity the holder last believed in, or earlier when it lost, released or was killed.
  const killedAt = new Map(disruptions.filter((a) => a.kind === "kill").map((a) => [a.victim, a.at]));
  const intervals = acquired.map((a) => {
    const mine = events.filter((e) => e.child === a.child && e.token === a.token);
    const ends = [Math.max(...mine.filter((e) => e.until !== undefined).map((e) => e.until!))];
    for (const e of mine) if (e.ev === "lost" || e.ev === "released") ends.push(e.t);
    const killed = killedAt.get(a.child);
    if (killed !== undefined) ends.push(killed);
    return { child: a.child, token: a.token, start: a.t, end: Math.min(...ends) };
  });
  let doubleHolders = 0;
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const a = intervals[i]!;
      const b = intervals[j]!;
      if (b.start < a.end && a.start < b.end) {
        doubleHolders++;
        failures.push(
          `token ${b.token} (${b.child}) started at ${b.start}, before token ${a.token} (${a.child}) ended at ${a.end}`,
        );
      }
    }
  }

  // 3. Successful fenced writes, in the order they started, never go back to a lower token.
  const acts = events.filter((e) => e.ev === "act" && e.ok).sort((a, b) => a.t - b.t);
  let highest = 0;
  for (const a of acts) {
    if (a.token < highest)
      failures.push(`a write with token ${a.token} (${a.child}) succeeded after one with ${highest}`);
    highest = Math.max(highest, a.token);
  }

  // 4. An ex-holder's write after a higher token was acquired is refused.
  const stale = events.filter(
    (e) => e.ev === "stale-write" && acquired.some((a) => a.token > e.token && a.t < e.t),
  );
  for (const s of stale)
    if (!s.refused) failures.push(`stale write with token ${s.token} by ${s.child} was accepted`);

  return {
    failures,
    acquisitions: acquired.length,
    successfulWrites: acts.length,
    refusedStaleWrites: stale.filter((s) => s.refused).length,
    doubleHolders,
  };
}
