/**
 * The hostile corpus (`hostile-corpus.ts`) against the proxy: for each case a
 * strict raw backend and a proxy of its own, the case's bytes from a raw
 * client, then what the client got and exactly what the backend received.
 * Head and request timeouts are a minute, so a proxy that waits where it
 * should refuse fails the case (the client waits 5 s at most).
 */

import { Harness, startProxy, webConfig } from "./helpers";
import { CORPUS, type HostileCase } from "./hostile-corpus";
import { sendCase } from "./hostile-runner";
import { startRawBackend } from "./raw-backend";

const h = new Harness();
afterEach(() => h.closeAll());

it("has at least 60 cases, each named once, the choices saying whose they follow", () => {
  expect(CORPUS.length).toBeGreaterThanOrEqual(60);
  expect(new Set(CORPUS.map((c) => c.name)).size).toBe(CORPUS.length);
  // A refusal is always a choice some peer makes otherwise, or not: say which.
  const refusals = CORPUS.filter((c) => (c.expect.statuses.at(-1) ?? 0) >= 400);
  expect(refusals.filter((c) => c.follows === undefined).map((c) => c.name)).toEqual([]);
  expect(refusals.filter((c) => c.follows === "neither" && !c.why).map((c) => c.name)).toEqual([]);
});

it.each(CORPUS.map((c): [string, string, HostileCase] => [c.cls, c.name, c]))(
  "%s: %s",
  async (_cls, _name, c) => {
    const backend = h.add(await startRawBackend(c.replies ?? []));
    const proxy = h.add(
      await startProxy(
        webConfig(
          [backend],
          {},
          {
            timeouts: { headMs: 60_000, requestMs: 60_000 },
            listener: c.trustedProxies ? { trustedProxies: [...c.trustedProxies] } : {},
          },
        ),
      ),
    );
    const got = await sendCase(proxy.port("web"), c);
    const e = c.expect;
    expect({
      statuses: got.statuses,
      closed: got.closed,
      backend: backend.received.join(""),
      ...(e.connections !== undefined ? { connections: backend.received.length } : {}),
      ...(e.client !== undefined ? { client: got.text } : {}),
      backendErrors: backend.errors,
    }).toEqual({
      statuses: e.statuses,
      closed: e.closed,
      backend: e.backend,
      ...(e.connections !== undefined ? { connections: e.connections } : {}),
      ...(e.client !== undefined ? { client: e.client } : {}),
      backendErrors: [],
    });
  },
);
