/**
 * Active health checks of one pool: every `intervalMs`, each backend gets an
 * HTTP GET of `path` (healthy when the status is within `expectStatus`) or a
 * bare TCP connect, bounded by `timeoutMs`. Results are damped as HAProxy
 * does: `fall` failures in a row take a healthy backend down, `rise` successes
 * in a row bring it back. A check never overlaps the previous one of the same
 * backend (the next is scheduled when the last ends; `timeoutMs < intervalMs`
 * is enforced by the config schema).
 */
import { connect, type Socket } from "node:net";
import type { Backend, Pool } from "./pool";

/** Bytes of a check answer read before giving up on finding its status line. */
const MAX_CHECK_HEAD = 4096;
const STATUS_RE = /^HTTP\/1\.[01] (\d{3})/;

export class HealthChecker {
  private readonly timers = new Map<Backend, NodeJS.Timeout>();
  private readonly sockets = new Set<Socket>();
  private stopped = false;

  constructor(private readonly pool: Pool) {}

  start(): void {
    // Spread the first checks over the interval so a large pool does not probe in bursts.
    const n = this.pool.backends.length;
    this.pool.backends.forEach((b, i) => {
      this.schedule(b, Math.floor((this.pool.config.healthCheck.intervalMs * i) / Math.max(1, n)));
    });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  private schedule(b: Backend, delayMs: number): void {
    if (this.stopped || b.removed) return;
    const t = setTimeout(() => {
      this.timers.delete(b);
      void this.checkOnce(b).then((ok) => {
        if (this.stopped || b.removed) return;
        this.record(b, ok);
        this.schedule(b, this.pool.config.healthCheck.intervalMs);
      });
    }, delayMs);
    t.unref();
    this.timers.set(b, t);
  }

  /** Applies rise/fall to one result. */
  private record(b: Backend, ok: boolean): void {
    const hc = this.pool.config.healthCheck;
    if (ok === b.healthy) {
      b.checkStreak = 0;
      return;
    }
    b.checkStreak++;
    if (b.checkStreak >= (ok ? hc.rise : hc.fall)) {
      b.checkStreak = 0;
      this.pool.setHealthy(b, ok);
    }
  }

  /** One check; resolves true when healthy. Never rejects. */
  checkOnce(b: Backend): Promise<boolean> {
    const hc = this.pool.config.healthCheck;
    return new Promise<boolean>((resolve) => {
      let done = false;
      let head = "";
      const socket = connect({ host: b.host, port: b.port });
      this.sockets.add(socket);
      const finish = (ok: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.sockets.delete(socket);
        socket.destroy();
        resolve(ok);
      };
      const timer = setTimeout(() => finish(false), hc.timeoutMs);
      timer.unref();
      socket.setNoDelay(true);
      socket.on("error", () => finish(false));
      socket.on("close", () => finish(false));
      socket.on("connect", () => {
        if (hc.type === "tcp") return finish(true);
        socket.write(
          `GET ${hc.path} HTTP/1.1\r\nhost: ${b.host}:${b.port}\r\nuser-agent: hafleet-health-check\r\n` +
            "connection: close\r\n\r\n",
        );
      });
      socket.on("data", (chunk: Buffer) => {
        head += chunk.toString("latin1");
        const eol = head.indexOf("\r\n");
        if (eol < 0) {
          if (head.length > MAX_CHECK_HEAD) finish(false);
          return;
        }
        const m = STATUS_RE.exec(head.slice(0, eol));
        const status = m ? Number(m[1]) : 0;
        finish(status >= hc.expectStatus[0] && status <= hc.expectStatus[1]);
      });
    });
  }
}
