/**
 * Every way a connection ends (`bench/close-patterns.ts`) leaves the proxy holding
 * nothing: the answer arrives, half-closed streams are carried through, and
 * the connection slot and the active-connections gauge return to 0 within
 * the lingering close (`timeouts.lingerMs`), whatever the client does.
 */

import { CLOSE_CASES, type CloseCase, closeBackend, playClient } from "../../../bench/close-patterns";
import type { ProxyServer } from "../../../proxy/server";
import { config, eventually, get, Harness, startProxy } from "./helpers";

const LINGER_MS = 300;
const h = new Harness();
afterEach(() => h.closeAll());

async function proxyFor(c: CloseCase, backendPort: number): Promise<ProxyServer> {
  const cfg = config({
    listeners: [{ name: "l", protocol: c.protocol, port: 1, bind: "127.0.0.1", pool: "p" }],
    pools: {
      p: {
        backends: [{ host: "127.0.0.1", port: backendPort }],
        healthCheck: { type: "tcp", intervalMs: 60_000, timeoutMs: 1000 },
      },
    },
    timeouts: { lingerMs: LINGER_MS, idleMs: 60_000, headMs: 60_000 },
  });
  return h.add(await startProxy(cfg));
}

describe("connection lifecycle: every close pattern frees its slot", () => {
  it.each(CLOSE_CASES.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
    const backend = h.add(await closeBackend(c.backend));
    const proxy = await proxyFor(c, backend.port);
    const port = proxy.port("l");
    const stats = proxy.stats.get("l")!;

    const client = h.add(await playClient(c, port));
    const got = client.received;
    if (c.answer !== "") {
      const seen = got.split(c.answer).length - 1;
      if (c.times !== undefined) expect(seen).toBe(c.times);
      else expect(seen).toBeGreaterThanOrEqual(1);
    }
    if (c.backendGot !== undefined) {
      await eventually(() => backend.got() === c.backendGot, 10_000, `backend to get '${c.backendGot}'`);
    }
    // The client may still hold its socket open: the proxy must not.
    await eventually(() => proxy.gate.open === 0, 10_000, "the connection slot to be freed");
    expect(stats.activeConnections).toBe(0);
    if (c.protocol === "http") expect((await get(port)).status).toBe(200);
  });
});
