/**
 * A strict raw TCP backend for the proxy's framing tests: it records exactly
 * the bytes it received on each connection, reads requests with a small
 * strict framing reader of its own (not the proxy's code), and answers each
 * request it read in full with the next scripted reply, as raw bytes.
 *
 * Whatever it cannot frame without doubt (no CRLFCRLF line ends, two
 * lengths, a length and chunked, a transfer coding other than chunked, a bad
 * chunk) is recorded in `errors` and the connection is closed: a proxy that
 * forwards such bytes has let something ambiguous through.
 */
import { createServer, type Socket } from "node:net";

/**
 * One answer: raw bytes (latin1), written at once, then maybe a close. A
 * write given as `{ afterMs, data }` goes out that long after the request
 * was read (a late answer, or bytes nobody asked for); a close waits for it.
 */
export type RawReply =
  | string
  | {
      readonly writes: readonly (string | { readonly afterMs: number; readonly data: string })[];
      readonly close?: boolean;
    };

export interface RawBackend {
  readonly port: number;
  /** Bytes received, one latin1 string per connection, in the order they opened. */
  readonly received: string[];
  /** Requests read in full (heads and bodies), in order, across connections. */
  readonly requests: string[];
  /** What it refused to frame, in order. */
  readonly errors: string[];
  close(): Promise<void>;
}

export const DEFAULT_REPLY = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/** Starts a backend on loopback answering `replies[k]` to the k-th request (then `DEFAULT_REPLY`). */
export async function startRawBackend(replies: readonly RawReply[] = []): Promise<RawBackend> {
  const received: string[] = [];
  const requests: string[] = [];
  const errors: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const index = received.push("") - 1;
    let pending = "";
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.on("data", (d: Buffer) => {
      const text = d.toString("latin1");
      received[index] += text;
      pending += text;
      for (;;) {
        const r = readRequest(pending);
        if (r === undefined) return;
        if (typeof r === "string") {
          errors.push(r);
          socket.destroy();
          return;
        }
        requests.push(pending.slice(0, r));
        pending = pending.slice(r);
        const reply = replies[requests.length - 1] ?? DEFAULT_REPLY;
        if (typeof reply === "string") socket.write(reply, "latin1");
        else {
          let lastMs = 0;
          for (const w of reply.writes) {
            if (typeof w === "string") socket.write(w, "latin1");
            else {
              lastMs = Math.max(lastMs, w.afterMs);
              setTimeout(() => socket.writable && socket.write(w.data, "latin1"), w.afterMs);
            }
          }
          if (reply.close) {
            if (lastMs === 0) socket.end();
            else setTimeout(() => socket.end(), lastMs);
            return;
          }
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    received,
    requests,
    errors,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** The length of the first request in `text`, undefined when incomplete, or why it cannot be framed. */
export function readRequest(text: string): number | string | undefined {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return /(^|[^\r])\n|\r[^\n]/.test(text) ? "bare CR or LF in a head" : undefined;
  const head = text.slice(0, end);
  if (/(^|[^\r])\n|\r[^\n]/.test(head)) return "bare CR or LF in a head";
  const lines = head.split("\r\n");
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP\/1\.[01]$/.test(lines[0]!))
    return `bad request line '${lines[0]}'`;
  let length: number | undefined;
  let chunked = false;
  for (const line of lines.slice(1)) {
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) return `bad header line '${line}'`;
    const name = m[1]!.toLowerCase();
    if (name === "content-length") {
      if (length !== undefined || !/^\d+$/.test(m[2]!)) return "two or bad content-lengths";
      length = Number(m[2]);
    } else if (name === "transfer-encoding") {
      if (chunked || m[2]!.toLowerCase() !== "chunked") return "transfer-encoding other than one chunked";
      chunked = true;
    }
  }
  if (chunked && length !== undefined) return "content-length and chunked";
  const bodyStart = end + 4;
  if (!chunked) {
    const total = bodyStart + (length ?? 0);
    return text.length >= total ? total : undefined;
  }
  return readChunked(text, bodyStart);
}

/** The end of a chunked body starting at `at`, strictly (RFC 9112 7.1, no whitespace anywhere). */
function readChunked(text: string, at: number): number | string | undefined {
  let i = at;
  for (;;) {
    const eol = text.indexOf("\r\n", i);
    if (eol < 0) return undefined;
    const m =
      // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control bytes is the point
      /^([0-9A-Fa-f]{1,13})((?:;[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:=(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"))?)*)$/.exec(
        text.slice(i, eol),
      );
    if (!m) return `bad chunk size line '${text.slice(i, eol)}'`;
    const size = Number.parseInt(m[1]!, 16);
    i = eol + 2;
    if (size === 0) break;
    if (text.length < i + size + 2) return undefined;
    if (text.slice(i + size, i + size + 2) !== "\r\n") return "chunk data not followed by CRLF";
    i += size + 2;
  }
  for (;;) {
    const eol = text.indexOf("\r\n", i);
    if (eol < 0) return undefined;
    if (eol === i) return i + 2;
    const line = text.slice(i, eol);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control bytes is the point
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[^\x00-\x08\x0a-\x1f\x7f]*$/.exec(line);
    if (!m) return `bad trailer '${line}'`;
    if (/^(content-length|transfer-encoding|host)$/i.test(m[1]!)) return `framing trailer '${line}'`;
    i = eol + 2;
  }
}
