import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configDiff, configYaml, loadFleetConfigFile, parseFleetConfig } from "../../../lib/core/config";
import { ConfigInvalidError } from "../../../lib/core/errors";

const valid = {
  listeners: [{ name: "web", protocol: "http", port: 8080, pool: "app", stickiness: {} }],
  pools: {
    app: {
      algorithm: "consistent-hash",
      hashKey: { source: "header", name: "x-user" },
      backends: [
        { host: "10.0.1.10", port: 80, weight: 2, zone: "us-east-1a" },
        { host: "10.0.2.10", port: 80, zone: "us-east-1b" },
      ],
    },
  },
};

describe("fleet config", () => {
  test("a valid document gets every default filled in, and parses to itself again", () => {
    const config = parseFleetConfig(valid);
    expect(config.pools.app!.healthCheck).toEqual({
      type: "http",
      path: "/",
      expectStatus: [200, 399],
      intervalMs: 2000,
      timeoutMs: 1000,
      rise: 2,
      fall: 3,
    });
    expect(config.listeners[0]!.stickiness).toEqual({ cookieName: "HAFLEET", ttlS: 3600 });
    expect(config.failover).toEqual({
      mode: "active-passive",
      leaseMs: 1200,
      heartbeatMs: 1000,
      markTtlMs: 30_000,
    });
    expect(parseFleetConfig(JSON.parse(JSON.stringify(config)))).toEqual(config);
  });

  const invalid: [string, (d: typeof valid & Record<string, unknown>) => void, string][] = [
    [
      "an unknown key (a typo)",
      (d) => Object.assign(d, { listners: [] }),
      '(root): Unrecognized key: "listners"',
    ],
    [
      "a port out of range",
      (d) => (d.listeners[0]!.port = 70000),
      "listeners[0].port: Too big: expected number to be <=65535",
    ],
    [
      "an unknown protocol",
      (d) => (d.listeners[0]!.protocol = "udp"),
      'listeners[0].protocol: Invalid option: expected one of "http"|"tcp"',
    ],
    [
      "a listener naming a missing pool",
      (d) => (d.listeners[0]!.pool = "api"),
      "listeners[0].pool: names pool 'api', which is not in pools (app)",
    ],
    [
      "a pool without backends",
      (d) => (d.pools.app!.backends = []),
      "pools.app.backends: Too small: expected array to have >=1 items",
    ],
    [
      "a negative weight",
      (d) => (d.pools.app!.backends[0]!.weight = -1),
      "pools.app.backends[0].weight: Too small: expected number to be >=0",
    ],
    [
      "consistent hashing without a key",
      (d) => delete (d.pools.app as { hashKey?: unknown }).hashKey,
      "pools.app.hashKey: is required when algorithm is 'consistent-hash'",
    ],
    [
      "a header key without a name",
      (d) => (d.pools.app!.hashKey = { source: "header" } as never),
      "pools.app.hashKey.name: is required when source is 'header'",
    ],
    [
      "a health-check timeout not below its interval",
      (d) => Object.assign(d.pools.app!, { healthCheck: { intervalMs: 1000, timeoutMs: 1000 } }),
      "pools.app.healthCheck.timeoutMs: must be below intervalMs (1000)",
    ],
    [
      "two backends with the same id",
      (d) => d.pools.app!.backends.push({ host: "10.0.1.10", port: 80, zone: "us-east-1c" }),
      "pools.app.backends[2]: backend id '10.0.1.10:80' is already used by backends[0]",
    ],
    [
      "two listeners on one port",
      (d) => d.listeners.push({ name: "web2", protocol: "tcp", port: 8080, pool: "app", stickiness: {} }),
      "listeners[1].port: 0.0.0.0:8080 is already used by listeners[0]",
    ],
    [
      "a bad cookie name",
      (d) => (d.listeners[0]!.stickiness = { cookieName: "a b" } as never),
      "listeners[0].stickiness.cookieName: must be a valid cookie name token",
    ],
    [
      "a heartbeat not below the lease",
      (d) => Object.assign(d, { failover: { leaseMs: 1000, heartbeatMs: 1000 } }),
      "failover.heartbeatMs: must be below leaseMs (1000)",
    ],
    [
      "a trusted proxy that is no CIDR block",
      (d) => Object.assign(d.listeners[0]!, { trustedProxies: ["10.0.0.0/8", "10.0.0.300/24"] }),
      "listeners[0].trustedProxies[1]: '10.0.0.300/24' is not a CIDR block (address/prefix, such as 10.0.0.0/8 or fd00::/8)",
    ],
    [
      "a trusted proxy with a prefix too long",
      (d) => Object.assign(d.listeners[0]!, { trustedProxies: ["fd00::/129"] }),
      "listeners[0].trustedProxies[0]: 'fd00::/129' is not a CIDR block: an IPv6 prefix is 0 to 128",
    ],
    [
      "a trusted proxy without a prefix",
      (d) => Object.assign(d.listeners[0]!, { trustedProxies: ["10.1.2.3"] }),
      "listeners[0].trustedProxies[0]: '10.1.2.3' is not a CIDR block: write the prefix too (10.1.2.3/32 for one address)",
    ],
    [
      "trusted proxies on a tcp listener",
      (d) =>
        Object.assign(d.listeners[0]!, {
          protocol: "tcp",
          stickiness: undefined,
          trustedProxies: ["10.0.0.0/8"],
        }),
      "listeners[0].trustedProxies: applies to http listeners only (a tcp listener sets no forwarded headers)",
    ],
    [
      "a failover mode that does not exist",
      (d) => Object.assign(d, { failover: { mode: "active-standby" } }),
      'failover.mode: Invalid option: expected one of "active-passive"|"active-active"',
    ],
  ];
  test.each(invalid)("%s is refused with the field's path and reason", (_name, breakIt, expected) => {
    const doc = structuredClone(valid) as typeof valid & Record<string, unknown>;
    breakIt(doc);
    let error: unknown;
    try {
      parseFleetConfig(doc);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigInvalidError);
    expect((error as ConfigInvalidError).code).toBe("HAFLEET_CONFIG_INVALID");
    expect((error as ConfigInvalidError).message).toContain(expected);
  });

  test("trusted proxies: none by default, IPv4 and IPv6 CIDR blocks accepted", () => {
    expect(parseFleetConfig(valid).listeners[0]!.trustedProxies).toEqual([]);
    const doc = structuredClone(valid);
    Object.assign(doc.listeners[0]!, {
      trustedProxies: ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8", "::1/128"],
    });
    expect(parseFleetConfig(doc).listeners[0]!.trustedProxies).toEqual([
      "10.0.0.0/8",
      "192.0.2.7/32",
      "fd00::/8",
      "::1/128",
    ]);
  });

  test("every bad field is reported, not only the first", () => {
    const doc = structuredClone(valid);
    doc.listeners[0]!.port = 0;
    doc.pools.app!.backends[1]!.port = -5;
    expect(() => parseFleetConfig(doc)).toThrow(
      "invalid fleet config: listeners[0].port: Too small: expected number to be >=1; pools.app.backends[1].port: Too small: expected number to be >=1",
    );
  });

  describe("files", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "hafleet-config-"));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    test("a YAML file and a JSON file with the same content load the same", async () => {
      const yaml = [
        "listeners:",
        "  - { name: web, protocol: http, port: 8080, pool: app, stickiness: {} }",
        "pools:",
        "  app:",
        "    algorithm: consistent-hash",
        "    hashKey: { source: header, name: x-user }",
        "    backends:",
        "      - { host: 10.0.1.10, port: 80, weight: 2, zone: us-east-1a }",
        "      - { host: 10.0.2.10, port: 80, zone: us-east-1b }",
      ].join("\n");
      await writeFile(join(dir, "fleet.yaml"), yaml);
      await writeFile(join(dir, "fleet.json"), JSON.stringify(valid));
      expect(await loadFleetConfigFile(join(dir, "fleet.yaml"))).toEqual(
        await loadFleetConfigFile(join(dir, "fleet.json")),
      );
    });

    test("a file that is not YAML names the file and the problem", async () => {
      await writeFile(join(dir, "bad.yaml"), "listeners: [\n");
      await expect(loadFleetConfigFile(join(dir, "bad.yaml"))).rejects.toThrow(
        `invalid fleet config in ${join(dir, "bad.yaml")}: (root): not valid YAML`,
      );
    });

    test("a duplicated YAML key is refused rather than silently overwritten", async () => {
      await writeFile(join(dir, "dup.yaml"), "pools: {}\npools: {}\nlisteners: []\n");
      await expect(loadFleetConfigFile(join(dir, "dup.yaml"))).rejects.toThrow(
        /not valid YAML: Map keys must be unique/,
      );
    });

    // Each row: a YAML document, and the fields with the lines the error must name.
    const located: readonly (readonly [string, string, readonly string[]])[] = [
      [
        "a bad value, on its own line",
        "listeners:\n  - name: web\n    protocol: http\n    port: 99999\n    pool: app\npools:\n  app:\n    backends: [{ host: a, port: 1 }]\n",
        ["listeners[0].port (line 4): Too big"],
      ],
      [
        "an unknown key, at the key",
        "listeners:\n  - { name: web, protocol: http, port: 80, pool: app }\npools:\n  app:\n    backends: [{ host: a, port: 1 }]\n\n    listners: 2\n",
        ['pools.app (line 7): Unrecognized key: "listners"'],
      ],
      [
        "a missing field, at the object that lacks it",
        "listeners:\n  - { name: web, protocol: http, port: 80, pool: app }\npools:\n  app:\n    algorithm: round-robin\n",
        ["pools.app.backends (line 5): Invalid input"],
      ],
      [
        "a cross-field rule, at the field to change",
        "listeners:\n  - { name: web, protocol: http, port: 80, pool: nosuch }\npools:\n  app:\n    backends: [{ host: a, port: 1 }]\n",
        ["listeners[0].pool (line 2): names pool 'nosuch'"],
      ],
    ];
    test.each(located)("a YAML file's error names the line: %s", async (_what, text, wanted) => {
      const file = join(dir, "located.yaml");
      await writeFile(file, text);
      const err = await loadFleetConfigFile(file).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigInvalidError);
      for (const w of wanted) expect((err as Error).message).toContain(w);
    });

    test("configYaml reads back to the same config, and configDiff says what changed", async () => {
      const config = parseFleetConfig(valid);
      const file = join(dir, "round.yaml");
      await writeFile(file, configYaml(config));
      const back = await loadFleetConfigFile(file);
      expect(back).toEqual(config);
      expect(configDiff(config, back, { from: "a", to: "b" })).toBe("");
      const changed = parseFleetConfig({ ...valid, timeouts: { headMs: 5000 } });
      const patch = configDiff(config, changed, { from: "stored", to: "file" });
      expect(patch).toContain("--- stored");
      expect(patch).toContain("+++ file");
      expect(patch).toContain("-  headMs: 10000");
      expect(patch).toContain("+  headMs: 5000");
      expect(patch.split("\n").filter((l) => /^[-+] /.test(l))).toHaveLength(2);
    });

    test("a valid file with a bad field names the file and the field", async () => {
      await writeFile(
        join(dir, "port.json"),
        JSON.stringify({ ...valid, listeners: [{ ...valid.listeners[0], port: "80" }] }),
      );
      await expect(loadFleetConfigFile(join(dir, "port.json"))).rejects.toThrow(
        `invalid fleet config in ${join(dir, "port.json")}: listeners[0].port: Invalid input: expected number, received string`,
      );
    });
  });
});
