/**
 * Hot reload from the config store on the emulator, and the last good config
 * kept on disk for static stability.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FleetConfig } from "../../../lib/core/config";
import { ConfigStore } from "../../../lib/core/config-store";
import { StateStore } from "../../../lib/core/store";
import { ensureTables, type TableNames } from "../../../lib/core/tables";
import { ConfigWatch, loadInitialConfig, readStateFile } from "../../../proxy/config-watch";
import {
  eventually,
  get,
  Harness,
  keepAliveAgent,
  startBackend,
  startProxy,
  webConfig,
} from "../../unit/proxy/helpers";

const h = new Harness();
afterEach(() => h.closeAll());
const suffix = randomBytes(4).toString("hex");
const tables: TableNames = {
  state: `proxy-watch-state-${suffix}`,
  sessions: `proxy-watch-sessions-${suffix}`,
};
let dir: string;
let store: StateStore;

beforeAll(async () => {
  store = new StateStore({ tables });
  await ensureTables(store.client, tables);
  dir = await mkdtemp(join(tmpdir(), "hafleet-watch-"));
});
afterAll(async () => {
  store.destroy();
  await rm(dir, { recursive: true, force: true });
});

describe("config watch", () => {
  it("applies each new stored version under load with zero failed requests, and keeps it on disk", async () => {
    const a = h.add(await startBackend("a"));
    const b = h.add(await startBackend("b"));
    const configs = new ConfigStore(store, `watch-${suffix}`);
    const v1: FleetConfig = webConfig([a]);
    await configs.put(v1, { expectedVersion: 0, by: "test" });
    const stateFile = join(dir, "fleet.json");

    const initial = await loadInitialConfig({ source: configs, stateFile });
    expect(initial).toMatchObject({ version: 1, from: "store" });
    const proxy = h.add(await startProxy(initial.config, { version: initial.version }));
    const watch = new ConfigWatch({
      source: configs,
      version: initial.version,
      intervalMs: 100,
      stateFile,
      apply: (config, version) => proxy.apply(config, version),
    });
    h.add({ close: () => watch.stop() });
    watch.start();

    const agent = h.add(keepAliveAgent(4));
    let stop = false;
    const failures: string[] = [];
    const bodies: string[] = [];
    const loop = async () => {
      while (!stop) {
        try {
          const r = await get(proxy.port("web"), "/", { agent });
          if (r.status !== 200) failures.push(String(r.status));
          bodies.push(r.body);
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const loops = Array.from({ length: 4 }, loop);
    await eventually(() => bodies.length > 30);
    await configs.put(webConfig([b]), { expectedVersion: 1, by: "test" });
    await eventually(() => proxy.version === 2, 20_000, "version 2 applied");
    const mark = bodies.length;
    await eventually(() => bodies.length > mark + 30);
    stop = true;
    await Promise.all(loops);

    expect(failures).toEqual([]);
    expect(bodies.slice(mark + 8)).not.toContain("a");
    const saved = await readStateFile(stateFile);
    expect(saved?.version).toBe(2);
    expect(saved!.config.pools.web!.backends[0]!.port).toBe(b.port);
  });

  it("keeps the config in force when the stored document is invalid", async () => {
    const a = h.add(await startBackend("a"));
    const fleet = `bad-${suffix}`;
    const configs = new ConfigStore(store, fleet);
    await configs.put(webConfig([a]), { expectedVersion: 0, by: "test" });
    const proxy = h.add(await startProxy(webConfig([a]), { version: 1 }));
    // An invalid version 2 written around the validation (as a bad tool or a bug would).
    await store.put("state", {
      pk: `fleet#${fleet}`,
      sk: "config",
      kind: "config",
      version: 2,
      doc: { listeners: [] },
    });
    const watch = new ConfigWatch({ source: configs, version: 1, apply: (c, v) => proxy.apply(c, v) });
    expect(await watch.pollOnce()).toBe(false);
    expect(proxy.version).toBe(1);
    expect((await get(proxy.port("web"))).status).toBe(200);
  });
});
