/**
 * Runs one case of the hostile corpus (`hostile-corpus.ts`) against a proxy
 * listening on loopback whose backend is a strict raw backend
 * (`raw-backend.ts`): sends the case's writes on one connection, reads until
 * the proxy closes it or has sent the answers the case expects, and returns
 * what the client got. Waits are bounded (a proxy that hangs fails the case)
 * but nothing is timed.
 */
import { connect } from "node:net";
import type { HostileCase } from "./hostile-corpus";

export interface ClientView {
  /** Status codes the client got, in order, interim ones included. */
  readonly statuses: number[];
  /** Every byte the client got (latin1). */
  readonly text: string;
  /** The proxy closed the connection (or reset it). */
  readonly closed: boolean;
}

/** How long a case may wait for an answer or a close before it counts as hanging. */
export const CASE_WAIT_MS = 5000;
/** Pause between a case's writes, so that they tend to reach the proxy as separate reads. */
const WRITE_GAP_MS = 30;

export function sendCase(port: number, c: HostileCase, host = "127.0.0.1"): Promise<ClientView> {
  const writes = typeof c.send === "string" ? [c.send] : c.send;
  const finals = c.expect.statuses.filter((s) => s >= 200).length;
  return new Promise((resolve) => {
    const s = connect(port, host);
    const chunks: Buffer[] = [];
    let done = false;
    const timers: NodeJS.Timeout[] = [];
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      for (const t of timers) clearTimeout(t);
      s.destroy();
      const text = Buffer.concat(chunks).toString("latin1");
      resolve({ statuses: statusesOf(text, c.headAnswers), text, closed });
    };
    timers.push(setTimeout(() => finish(false), CASE_WAIT_MS));
    s.on("data", (d: Buffer) => {
      chunks.push(d);
      // A case that expects the connection to stay open ends once its answers are in.
      if (!c.expect.closed && countFinal(Buffer.concat(chunks).toString("latin1"), c.headAnswers) >= finals)
        finish(false);
    });
    s.on("error", () => finish(true));
    s.on("close", () => finish(true));
    s.on("connect", () => {
      writes.forEach((w, i) => {
        if (i === 0) s.write(w, "latin1");
        else timers.push(setTimeout(() => !s.destroyed && s.write(w, "latin1"), i * WRITE_GAP_MS));
      });
    });
  });
}

/** Status codes of the status lines in an answer stream, read by framing (not by searching the bodies). */
export function statusesOf(text: string, headAnswers: readonly number[] = []): number[] {
  const out: number[] = [];
  walkResponses(text, headAnswers, (status) => out.push(status));
  return out;
}

/** Complete final (non-1xx) answers in `text`. */
function countFinal(text: string, headAnswers: readonly number[] = []): number {
  let n = 0;
  walkResponses(text, headAnswers, (status, complete) => {
    if (status >= 200 && complete) n++;
  });
  return n;
}

/**
 * Calls `visit` for each answer in `text` in order: its status and whether
 * its body is complete. Bodies are framed by Content-Length or chunked; 1xx,
 * 204 and 304 have none, nor the final answers numbered in `headAnswers`
 * (answers to HEAD, counted from 0); without either, the body runs to the end.
 */
function walkResponses(
  text: string,
  headAnswers: readonly number[],
  visit: (status: number, complete: boolean) => void,
): void {
  let at = 0;
  let final = 0;
  while (at < text.length) {
    const end = text.indexOf("\r\n\r\n", at);
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(text.slice(at, at + 12));
    if (!m) return;
    const status = Number(m[1]);
    if (end < 0) {
      visit(status, false);
      return;
    }
    const head = text.slice(at, end);
    at = end + 4;
    if (status < 200) {
      visit(status, true);
      continue;
    }
    if (status === 204 || status === 304 || headAnswers.includes(final++)) {
      visit(status, true);
      continue;
    }
    const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    if (cl) {
      const len = Number(cl[1]);
      const complete = text.length - at >= len;
      visit(status, complete);
      if (!complete) return;
      at += len;
      continue;
    }
    if (/\r\ntransfer-encoding:[ \t]*chunked/i.test(head)) {
      const last = text.indexOf("\r\n0\r\n\r\n", at - 2);
      visit(status, last >= 0);
      if (last < 0) return;
      at = last + 7;
      continue;
    }
    visit(status, false);
    return;
  }
}
