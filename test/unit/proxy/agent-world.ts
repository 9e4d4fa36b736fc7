/**
 * Node agents on one manual clock, with the fleet's state, the lease items and
 * the Elastic IPs in memory: the world of the agent's table-driven tests. Time
 * moves only when a test says so, in 10 ms steps, and every step checks that no
 * two agents hold the lease at once.
 */
import { Lease } from "../../../lib/core/lease";
import { NodeAgent } from "../../../proxy/agent";
import { FakeEc2, FakeElasticIps } from "../../harness/fake-elastic-ips";
import { ManualTimerClock, settle } from "../../harness/manual-clock";
import { FleetMemory, MemoryAgentStore } from "../../harness/memory-agent-store";
import { LeaseStoreView, MemoryLeaseStore } from "../../harness/memory-lease-store";

export const SHARED = "eipalloc-shared";

export interface WorldNode {
  readonly id: string;
  readonly instanceId: string;
  readonly agent: NodeAgent;
  readonly lease: Lease;
  readonly leaseView: LeaseStoreView;
  readonly store: MemoryAgentStore;
  readonly roles: string[];
  readonly logs: string[];
  /** Cuts the node off from the store (lease and state alike), or heals it. */
  cut(down: boolean): void;
}

export class AgentWorld {
  readonly clock = new ManualTimerClock();
  readonly leases = new MemoryLeaseStore();
  readonly memory = new FleetMemory(this.leases, this.clock);
  readonly ec2 = new FakeEc2(this.clock);
  readonly nodes: Record<string, WorldNode> = {};
  /** A line per change of lease holder, as the leases report it. */
  readonly leaseEvents: string[] = [];
  /** When each node last acquired the lease (the test's clock). */
  readonly acquiredAt: Record<string, number> = {};
  /** Each node's proxy drain (its listeners closing), with where the shared address was then. */
  readonly drains: { id: string; addressOn: string | undefined }[] = [];

  private readonly heartbeatMs: number;

  constructor(ids: readonly string[], options: { heartbeatMs?: number } = {}) {
    this.heartbeatMs = options.heartbeatMs ?? 1000;
    for (const id of ids) this.addNode(id);
  }

  /**
   * Adds a node: by default one that contends for the shared address; with
   * `own`, an active-active node that holds its own address (`allocationId`)
   * under a stable `name`, as a replacement instance of a node shares it.
   */
  addNode(id: string, own?: { readonly name: string; readonly allocationId: string }): WorldNode {
    const instanceId = `i-${id}`;
    const leaseView = new LeaseStoreView(this.leases);
    // The orderings are written against a 2000 ms lease (its validity, 1800 ms, and its successor wait, 2200 ms).
    const lease = new Lease(leaseView, { name: "fleet", holderId: id, leaseMs: 2000 }, this.clock);
    const store = new MemoryAgentStore(this.memory, id);
    const roles: string[] = [];
    const logs: string[] = [];
    for (const ev of ["acquired", "lost", "released"] as const)
      lease.on(ev, (e: { token: number }) => this.leaseEvents.push(`${id} ${ev} ${e.token}`));
    lease.on("acquired", () => {
      this.acquiredAt[id] = this.clock.nowMs();
    });
    const agent = new NodeAgent({
      store,
      lease,
      nodeId: id,
      instanceId,
      address: "127.0.0.1",
      adminUrl: `http://127.0.0.1:9901/${id}`,
      version: "test",
      elasticIps: new FakeElasticIps(this.ec2, () => lease.validUntilMs),
      allocationIds: own ? [] : [SHARED],
      ...(own ? { name: own.name, ownAllocationId: own.allocationId } : {}),
      heartbeatMs: this.heartbeatMs,
      proxy: {
        ready: () => true,
        load: () => ({ connections: 0, rps: 0 }),
        drain: async () => {
          this.drains.push({ id, addressOn: this.addressOn() });
        },
      },
      onRole: (role) => roles.push(role),
      log: (level, message, fields) => logs.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`),
      clock: this.clock,
    });
    this.nodes[id] = {
      id,
      instanceId,
      agent,
      lease,
      leaseView,
      store,
      roles,
      logs,
      cut: (down) => {
        leaseView.down = down;
        store.down = down;
      },
    };
    return this.nodes[id];
  }

  node(id: string): WorldNode {
    const n = this.nodes[id];
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Starts a node (heartbeat, then the lease contest) and lets its first steps run. */
  async start(id: string): Promise<void> {
    await this.during(this.node(id).agent.start(), 100);
  }

  /** Moves time on by `ms`, checking at every step that at most one node leads. */
  async run(ms: number): Promise<void> {
    for (let done = 0; done < ms; done += 10) {
      await this.clock.run(10);
      const leaders = Object.values(this.nodes).filter((n) => n.lease.isLeader());
      if (leaders.length > 1)
        throw new Error(`two leaders at ${this.clock.nowMs()}: ${leaders.map((n) => n.id).join(", ")}`);
    }
  }

  /** Runs `work` while time moves on, until it settles (at most `withinMs`). */
  async during<T>(work: Promise<T>, withinMs = 30_000): Promise<T> {
    let settled = false;
    const watched = work.finally(() => {
      settled = true;
    });
    watched.catch(() => {});
    await settle();
    for (let waited = 0; !settled && waited < withinMs; waited += 10) await this.run(10);
    if (!settled) throw new Error(`still running after ${withinMs} ms of the test's clock`);
    return watched;
  }

  /** Runs until `condition` holds (at most `withinMs`); returns the time it took. */
  async until(condition: () => boolean, withinMs: number, what: string): Promise<number> {
    const started = this.clock.nowMs();
    while (!condition()) {
      if (this.clock.nowMs() - started >= withinMs) throw new Error(`${what}: not within ${withinMs} ms`);
      await this.run(10);
    }
    return this.clock.nowMs() - started;
  }

  /** The instance the shared address is on now. */
  addressOn(): string | undefined {
    return this.ec2.addresses.get(SHARED);
  }

  holder(): string | undefined {
    return this.leases.records.get("fleet")?.holder;
  }

  /** Stops every node that runs (release, hand-over, drain), moving time until all are done. */
  async stopAll(): Promise<void> {
    await this.during(Promise.allSettled(Object.values(this.nodes).map((n) => n.agent.stop())), 60_000);
  }
}
