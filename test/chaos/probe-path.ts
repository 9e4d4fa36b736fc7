/**
 * The checker's network path to the nodes, made faultable. The in-process
 * checker probes each node's `/healthz` with `fetch`; on AWS those probes
 * cross the VPC from the Lambda's network interface, a path that can break
 * while DynamoDB stays reachable (a security group change, a route). The
 * fault proxy only stands between processes and AWS, so this stands between
 * this process's `fetch` and the nodes: it installs a dispatcher whose
 * connector opens real TCP connections to the nodes' addresses, and refuses
 * them (`refuse`) or never completes them (`blackhole`) while a host is cut.
 * Nothing else in the process is touched: the SDK, the fabric and the sticky
 * clients use `node:http` and `node:net`.
 *
 * It goes through the key undici's `setGlobalDispatcher` uses
 * (`Symbol.for("undici.globalDispatcher.1")`), so Node's own `fetch` picks it
 * up; the dispatcher is an instance of the class Node's fetch already uses.
 */
import { connect, type Socket } from "node:net";

const GLOBAL_DISPATCHER = Symbol.for("undici.globalDispatcher.1");

type Connector = (
  options: { hostname: string; port: string | number; protocol: string },
  callback: (err: Error | null, socket: Socket | null) => void,
) => void;
type DispatcherClass = new (options: { connect: Connector }) => { destroy(): Promise<void> };

export type CutHow = "refuse" | "blackhole";

/**
 * The global object of the realm `fetch` belongs to, where it looks up its
 * dispatcher. Under jest, test code runs in a vm context whose `globalThis` is
 * another object; `fetch` is the outer realm's, and so is its Function.
 */
function fetchRealm(): Record<symbol, unknown> {
  const OuterFunction = (fetch as unknown as { constructor: FunctionConstructor }).constructor;
  return OuterFunction("return globalThis")() as Record<symbol, unknown>;
}

export class ProbePath {
  private readonly cut = new Map<string, CutHow>();
  private readonly sockets = new Map<string, Set<Socket>>();
  private previous: unknown;
  private installed: { destroy(): Promise<void> } | undefined;

  /** Routes this process's `fetch` through the path; `uninstall` restores what was there. */
  async install(): Promise<void> {
    if (this.installed) return;
    const g = fetchRealm();
    // Node creates its dispatcher on the first fetch.
    await fetch("http://127.0.0.1:1/").catch(() => {});
    this.previous = g[GLOBAL_DISPATCHER];
    const Dispatcher = (this.previous as { constructor: DispatcherClass } | undefined)?.constructor;
    if (!Dispatcher)
      throw new Error("fetch has no global dispatcher to replace: the probe path cannot be installed");
    this.installed = new Dispatcher({ connect: (options, callback) => this.open(options, callback) });
    g[GLOBAL_DISPATCHER] = this.installed;
  }

  async uninstall(): Promise<void> {
    if (!this.installed) return;
    fetchRealm()[GLOBAL_DISPATCHER] = this.previous;
    this.heal();
    await this.installed.destroy().catch(() => {});
    this.installed = undefined;
  }

  /** Cuts the path to these hosts (their open connections too) until `heal`. */
  cutOff(hosts: readonly string[], how: CutHow): void {
    for (const host of hosts) {
      this.cut.set(host, how);
      for (const s of this.sockets.get(host) ?? []) s.destroy();
    }
  }

  heal(hosts?: readonly string[]): void {
    for (const host of hosts ?? [...this.cut.keys()]) this.cut.delete(host);
  }

  private open(
    options: { hostname: string; port: string | number },
    callback: (err: Error | null, socket: Socket | null) => void,
  ): void {
    const host = options.hostname;
    const how = this.cut.get(host);
    if (how === "refuse") {
      callback(
        Object.assign(new Error(`connect ECONNREFUSED ${host} (probe path cut)`), { code: "ECONNREFUSED" }),
        null,
      );
      return;
    }
    // A blackholed SYN is never answered: the caller's timeout ends the wait.
    if (how === "blackhole") return;
    const socket = connect({ host, port: Number(options.port) });
    const set = this.sockets.get(host) ?? new Set<Socket>();
    this.sockets.set(host, set);
    set.add(socket);
    socket.once("close", () => set.delete(socket));
    const failed = (err: Error) => callback(err, null);
    socket.once("error", failed);
    socket.once("connect", () => {
      socket.off("error", failed);
      callback(null, socket);
    });
  }
}
