/**
 * A lease contender as its own process, for the lease safety test. It runs one
 * `Lease` and prints one JSON line per event on stdout, with `t` in epoch ms
 * from this machine's clock (all contenders share it, so the test can order
 * their events):
 *   {"ev":"acquired","token":3,"t":..,"until":..}   until = end of validity
 *   {"ev":"renewed","token":3,"t":..,"until":..,"latencyMs":..}
 *   {"ev":"lost","token":3,"t":..,"until":..}       until = validity it had
 *   {"ev":"released","token":3,"t":..}
 *   {"ev":"act","token":3,"t":..,"ok":true}         a fenced write as leader
 *   {"ev":"stale-write","token":3,"t":..,"refused":true}  after losing the lease
 * SIGTERM releases the lease and exits 0.
 *
 * Usage: lease-contender --fleet F --id ID [--lease-ms 2000]
 * (tables and endpoint from HAFLEET_STATE_TABLE, HAFLEET_SESSIONS_TABLE, AWS_ENDPOINT_URL)
 */
import { parseArgs } from "node:util";
import { isHafleetError } from "../../lib/core/errors";
import { fencedPut } from "../../lib/core/fence";
import { DynamoLeaseStore, Lease } from "../../lib/core/lease";
import { StateStore } from "../../lib/core/store";

const { values } = parseArgs({
  options: {
    fleet: { type: "string" },
    id: { type: "string" },
    "lease-ms": { type: "string", default: "2000" },
  },
});
const fleetId = values.fleet!;
const id = values.id!;
const store = new StateStore({ attemptTimeoutMs: 1000 });
const lease = new Lease(new DynamoLeaseStore(store, fleetId), {
  name: "fleet",
  holderId: id,
  leaseMs: Number(values["lease-ms"]),
});
const wall = (mono: number | undefined) => (mono === undefined ? undefined : performance.timeOrigin + mono);
const out = (o: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify({ ...o, t: Date.now() })}\n`);
let lastToken: number | undefined;

lease.on("acquired", (e) => {
  lastToken = e.token;
  out({ ev: "acquired", token: e.token, until: wall(lease.validUntilMs) });
});
lease.on("renewed", (e) =>
  out({ ev: "renewed", token: e.token, until: wall(lease.validUntilMs), latencyMs: e.latencyMs }),
);
lease.on("lost", (e) => {
  out({ ev: "lost", token: e.token, reason: e.reason });
  // An ex-holder tries one write with its old token: the store must refuse it once another holds the lease.
  fencedPut(store, {
    fleetId,
    sk: "vip#contention",
    token: e.token,
    attrs: { owner: id },
    lease: { name: "fleet", holder: id },
  }).then(
    () => out({ ev: "stale-write", token: e.token, refused: false }),
    (err: unknown) =>
      out({
        ev: "stale-write",
        token: e.token,
        refused: isHafleetError(err, "HAFLEET_FENCED"),
        error: String(err),
      }),
  );
});
lease.on("released", (e) => out({ ev: "released", token: e.token }));

// While leader, act every 100 ms: a fenced write stamped with the token.
const actor = setInterval(() => {
  const token = lease.token;
  if (token === undefined) return;
  const t = Date.now();
  fencedPut(store, {
    fleetId,
    sk: "vip#contention",
    token,
    attrs: { owner: id },
    lease: { name: "fleet", holder: id },
  }).then(
    () => process.stdout.write(`${JSON.stringify({ ev: "act", token, t, ok: true })}\n`),
    () => process.stdout.write(`${JSON.stringify({ ev: "act", token, t, ok: false })}\n`),
  );
}, 100);

process.on("SIGTERM", () => {
  clearInterval(actor);
  lease.stop({ release: true }).then(() => {
    store.destroy();
    process.exit(0);
  });
});
lease.start();
out({ ev: "started", id, lastToken });
