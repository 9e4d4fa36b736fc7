/**
 * The fleet's configuration document in the `State` table (`sk = config`),
 * versioned with optimistic concurrency: a write names the version it read and
 * fails with `ConfigConflictError` when another writer got there first. An
 * invalid document is refused before any write (`ConfigInvalidError`, every
 * bad field listed). A leader's write may carry its fencing token; a lower
 * token than the one recorded is refused (`FencedError`).
 *
 * Each write stores a unique `writeId`, so that a write whose answer was lost
 * and whose retry then found the version moved (by itself) is recognised on
 * re-read as a success rather than reported as a conflict.
 */
import { randomBytes } from "node:crypto";
import { type FleetConfig, parseFleetConfig } from "./config";
import { ConfigConflictError, FencedError } from "./errors";
import { FENCE_ATTRIBUTE } from "./fence";
import type { StateStore } from "./store";
import { keys } from "./tables";

export interface StoredConfig {
  readonly version: number;
  readonly config: FleetConfig;
  readonly updatedAtMs: number;
  readonly updatedBy: string;
}

export interface PutConfigOptions {
  /** The version this change was based on; 0 to create the first version. */
  readonly expectedVersion: number;
  /** Who writes (operator or node id), for the record. */
  readonly by: string;
  /** A leader's fencing token; refused when a higher one is recorded. @default unfenced */
  readonly token?: number;
}

export class ConfigStore {
  constructor(
    private readonly store: StateStore,
    readonly fleetId: string,
  ) {}

  private get key() {
    return { pk: keys.fleet(this.fleetId), sk: keys.config };
  }

  /** The current version, validated; undefined when the fleet has none yet. */
  async get(options: { deadlineMs?: number } = {}): Promise<StoredConfig | undefined> {
    const item = await this.store.get("state", this.key, options);
    if (!item) return undefined;
    return {
      version: Number(item.version),
      config: parseFleetConfig(item.doc, `stored config of fleet '${this.fleetId}' v${item.version}`),
      updatedAtMs: Number(item.updatedAt),
      updatedBy: String(item.updatedBy),
    };
  }

  /** Validates `input` and writes it as version `expectedVersion + 1`. */
  async put(input: unknown, options: PutConfigOptions): Promise<StoredConfig> {
    const config = parseFleetConfig(input); // throws before any write
    const version = options.expectedVersion + 1;
    const writeId = randomBytes(9).toString("base64url");
    const updatedAtMs = this.store.clock.wallMs();
    // condition: (attribute_not_exists(sk) | version = :expected)
    //            [AND (attribute_not_exists(fenceToken) OR fenceToken <= :token)]
    const values: Record<string, unknown> = {};
    const names: Record<string, string> = {};
    let condition: string;
    if (options.expectedVersion === 0) condition = "attribute_not_exists(sk)";
    else {
      condition = "#version = :expected";
      names["#version"] = "version";
      values[":expected"] = options.expectedVersion;
    }
    if (options.token !== undefined) {
      condition += " AND (attribute_not_exists(#fence) OR #fence <= :token)";
      names["#fence"] = FENCE_ATTRIBUTE;
      values[":token"] = options.token;
    }
    const ok = await this.store.put(
      "state",
      {
        ...this.key,
        kind: "config",
        version,
        doc: config,
        writeId,
        updatedAt: updatedAtMs,
        updatedBy: options.by,
        ...(options.token !== undefined ? { [FENCE_ATTRIBUTE]: options.token } : {}),
      },
      { condition, names, values },
    );
    if (ok) return { version, config, updatedAtMs, updatedBy: options.by };

    const now = await this.store.get("state", this.key);
    if (now?.writeId === writeId) return { version, config, updatedAtMs, updatedBy: options.by };
    if (
      options.token !== undefined &&
      typeof now?.[FENCE_ATTRIBUTE] === "number" &&
      now[FENCE_ATTRIBUTE] > options.token
    ) {
      throw new FencedError(
        `config of fleet '${this.fleetId}'`,
        options.token,
        `token ${now[FENCE_ATTRIBUTE]} is recorded`,
      );
    }
    throw new ConfigConflictError(
      this.fleetId,
      options.expectedVersion,
      now ? Number(now.version) : undefined,
    );
  }

  /** Reads, applies `change` to the current document, writes; retries on conflict up to `attempts` times. */
  async update(
    change: (current: FleetConfig | undefined) => unknown,
    options: { by: string; token?: number; attempts?: number },
  ): Promise<StoredConfig> {
    const attempts = options.attempts ?? 3;
    for (let i = 1; ; i++) {
      const current = await this.get();
      try {
        return await this.put(change(current?.config), {
          expectedVersion: current?.version ?? 0,
          by: options.by,
          token: options.token,
        });
      } catch (err) {
        if (!(err instanceof ConfigConflictError) || i >= attempts) throw err;
      }
    }
  }
}
