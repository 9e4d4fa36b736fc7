/**
 * Sticky clients for the local fleet: each client keeps the session cookie the
 * proxy hands it and sends a request every `intervalMs` through the Elastic IP
 * (backing off, jittered, up to 100 ms to 800 ms after a failure),
 * on a new connection each time (as a client whose keep-alive connection died
 * with a node would). Records every outcome with its time and the backend that
 * answered (the demo backends answer `{"backend": id}`), so the demo, the e2e
 * tests and the failover benchmark can ask: when did requests succeed again
 * after a kill, how many failed, did each client keep its backend.
 *
 * With `dns`, each client resolves the fleet's name through its own stub
 * resolver, which keeps an answer for its TTL (as a client that honours the
 * TTL does, failures or not), and connects to the address it got.
 */
import { request } from "node:http";
import { StickyRouter } from "../../proxy/sticky";
import { CachingStub, type Route53Resolver } from "./route53-resolver";

export interface Outcome {
  readonly client: number;
  /** Epoch ms when the request was sent. */
  readonly sentAt: number;
  readonly doneAt: number;
  readonly ok: boolean;
  readonly backend?: string;
  /** The address the client connected to (with `dns`). */
  readonly address?: string;
  readonly error?: string;
}

export interface StickyTrafficOptions {
  readonly url: string;
  /** @default 20 */
  readonly clients?: number;
  /** @default 50 */
  readonly intervalMs?: number;
  /** Per-request timeout; a connection waiting for a dead address to move counts in it, as a browser's connect wait does. @default 10000 */
  readonly timeoutMs?: number;
  /** @default "HAFLEET" */
  readonly cookieName?: string;
  /** Resolve this name for every request (the URL's host is replaced by the answer). */
  readonly dns?: { readonly resolver: Route53Resolver; readonly name: string };
}

export class StickyTraffic {
  readonly outcomes: Outcome[] = [];
  private readonly cookies: (string | undefined)[];
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly o: Required<Omit<StickyTrafficOptions, "dns">> & Pick<StickyTrafficOptions, "dns">;
  private readonly stubs: CachingStub[];

  constructor(options: StickyTrafficOptions) {
    this.o = { clients: 20, intervalMs: 50, timeoutMs: 10_000, cookieName: "HAFLEET", ...options };
    this.cookies = new Array(this.o.clients).fill(undefined);
    const dns = this.o.dns;
    this.stubs = dns
      ? Array.from({ length: this.o.clients }, () => new CachingStub(dns.resolver, dns.name))
      : [];
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loops = Array.from({ length: this.o.clients }, (_, i) => this.loop(i));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** Each client's session key (its cookie without the backend hint), undefined before its first answer. */
  sessionKeys(): (string | undefined)[] {
    return this.cookies.map((c) => StickyRouter.parseCookie(c)?.key);
  }

  /** The backend each client reached last before `t` (undefined when none). */
  backendsBefore(t: number): (string | undefined)[] {
    return Array.from({ length: this.o.clients }, (_, c) => {
      const last = this.outcomes.filter((o) => o.client === c && o.ok && o.doneAt < t).at(-1);
      return last?.backend;
    });
  }

  /** The backends each client reached after `t`. */
  backendsAfter(t: number): Set<string>[] {
    return Array.from(
      { length: this.o.clients },
      (_, c) =>
        new Set(this.outcomes.filter((o) => o.client === c && o.ok && o.sentAt > t).map((o) => o.backend!)),
    );
  }

  /** Sessions that kept their backend across `t`: every success after `t` went to the backend seen last before it. */
  sessionsKept(t: number): { kept: number; total: number; moved: number[] } {
    const before = this.backendsBefore(t);
    const after = this.backendsAfter(t);
    const moved: number[] = [];
    let total = 0;
    for (let c = 0; c < this.o.clients; c++) {
      if (!before[c] || after[c]!.size === 0) continue;
      total++;
      if (after[c]!.size !== 1 || !after[c]!.has(before[c]!)) moved.push(c);
    }
    return { kept: total - moved.length, total, moved };
  }

  /** The first successful request sent after `t`, if any. */
  firstSuccessAfter(t: number): Outcome | undefined {
    return this.outcomes.filter((o) => o.ok && o.sentAt >= t).sort((a, b) => a.doneAt - b.doneAt)[0];
  }

  failuresBetween(from: number, to = Number.POSITIVE_INFINITY): Outcome[] {
    return this.outcomes.filter((o) => !o.ok && o.sentAt >= from && o.sentAt < to);
  }

  private async loop(client: number): Promise<void> {
    let failures = 0;
    while (this.running) {
      const sentAt = Date.now();
      const outcome = await this.once(client).catch((err: unknown) => ({
        ok: false as const,
        error: String(err),
      }));
      this.outcomes.push({ client, sentAt, doneAt: Date.now(), ...outcome });
      // After a failure a client backs off with full jitter (up to 100 ms, doubling,
      // at most 800 ms), as a client with a retry policy does: without jitter, clients
      // that failed together retry in lockstep. After a success it goes on at its pace.
      failures = outcome.ok ? 0 : failures + 1;
      const wait =
        failures === 0 ? this.o.intervalMs : Math.random() * Math.min(800, 100 * 2 ** (failures - 1));
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  private once(client: number): Promise<{ ok: boolean; backend?: string; address?: string; error?: string }> {
    let url = this.o.url;
    let address: string | undefined;
    if (this.o.dns) {
      address = this.stubs[client]!.address();
      if (!address) return Promise.resolve({ ok: false, error: `no DNS answer for ${this.o.dns.name}` });
      const u = new URL(url);
      u.hostname = address;
      url = u.toString();
    }
    const at = address ? { address } : {};
    return new Promise((resolve) => {
      const cookie = this.cookies[client];
      const req = request(
        url,
        {
          agent: false,
          headers: cookie ? { cookie: `${this.o.cookieName}=${cookie}` } : {},
          timeout: this.o.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", (err) => resolve({ ok: false, ...at, error: String(err) }));
          res.on("end", () => {
            const set = res.headers["set-cookie"]?.find((c) => c.startsWith(`${this.o.cookieName}=`));
            if (set) this.cookies[client] = set.slice(this.o.cookieName.length + 1).split(";")[0];
            if (res.statusCode !== 200) return resolve({ ok: false, ...at, error: `HTTP ${res.statusCode}` });
            try {
              resolve({
                ok: true,
                ...at,
                backend: (JSON.parse(Buffer.concat(chunks).toString()) as { backend: string }).backend,
              });
            } catch {
              resolve({ ok: false, ...at, error: "not a backend's answer" });
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", (err) =>
        resolve({ ok: false, ...at, error: (err as NodeJS.ErrnoException).code ?? String(err) }),
      );
      req.end();
    });
  }
}
