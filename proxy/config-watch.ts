/**
 * Config from the store, with static stability: the data plane never needs
 * the control plane to serve.
 *
 * - At start, the store is asked with a deadline; when it fails or is slow,
 *   the last good config kept on local disk (the state file) is used instead.
 * - While running, the store is polled; a newer version is applied (hot
 *   reload) and only then written to the state file, so the file always holds
 *   a config that this node has actually run.
 * - A store failure or an invalid stored document never stops the proxy: it
 *   keeps the config in force and logs (at most once per `warnEveryMs`).
 *
 * The state file is written atomically (temporary file, then rename), so a
 * crash mid-write leaves the previous good copy.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { type FleetConfig, parseFleetConfig } from "../lib/core/config";
import { HafleetError } from "../lib/core/errors";

/** What the watch needs from the store (`ConfigStore` of `lib/core/config-store.ts` satisfies it). */
export interface ConfigSource {
  get(): Promise<{ readonly version: number; readonly config: FleetConfig } | undefined>;
}

export interface VersionedConfig {
  readonly version: number;
  readonly config: FleetConfig;
}

export async function readStateFile(file: string): Promise<VersionedConfig | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const doc = JSON.parse(text) as { version?: unknown; config?: unknown };
  return { version: Number(doc.version ?? 0), config: parseFleetConfig(doc.config, file) };
}

export async function writeStateFile(file: string, value: VersionedConfig): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const doc = { version: value.version, savedAt: new Date().toISOString(), config: value.config };
  await writeFile(tmp, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

/** Resolves with the call's value, or rejects after `ms`. */
function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err);
      },
    );
  });
}

export interface InitialConfig extends VersionedConfig {
  readonly from: "store" | "state-file";
}

/**
 * The config to start with: the store's, or (store failing, slow or empty)
 * the state file's. Throws `HafleetError` HAFLEET_CONFIG_MISSING naming both
 * causes when neither has one.
 */
export async function loadInitialConfig(options: {
  readonly source: ConfigSource;
  readonly stateFile?: string;
  /** @default 5000 */
  readonly deadlineMs?: number;
  readonly logger?: Logger;
}): Promise<InitialConfig> {
  let storeProblem: string;
  try {
    const got = await withDeadline(options.source.get(), options.deadlineMs ?? 5000, "the config store");
    if (got) {
      if (options.stateFile) {
        await writeStateFile(options.stateFile, got).catch((err: unknown) =>
          options.logger?.warn({ err, file: options.stateFile }, "cannot write the state file"),
        );
      }
      return { ...got, from: "store" };
    }
    storeProblem = "the store has no config for this fleet";
  } catch (err) {
    storeProblem = `the store failed: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (options.stateFile) {
    const saved = await readStateFile(options.stateFile);
    if (saved) {
      options.logger?.warn(
        { reason: storeProblem, version: saved.version },
        "starting with the last good config from disk",
      );
      return { ...saved, from: "state-file" };
    }
  }
  throw new HafleetError(
    "HAFLEET_CONFIG_MISSING",
    `no config to start with: ${storeProblem}, and ${
      options.stateFile ? `the state file ${options.stateFile} does not exist` : "no --state-file was given"
    }`,
  );
}

export interface ConfigWatchOptions {
  readonly source: ConfigSource;
  /** Applies a newer config; a rejection keeps the old one (and is logged). */
  readonly apply: (config: FleetConfig, version: number) => Promise<void>;
  /** The version in force at start. */
  readonly version: number;
  /** @default 5000 */
  readonly intervalMs?: number;
  /** Where the last good config is kept. @default none */
  readonly stateFile?: string;
  readonly logger?: Logger;
  /** @default 60000 */
  readonly warnEveryMs?: number;
}

export class ConfigWatch {
  version: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private lastWarnMs = Number.NEGATIVE_INFINITY;
  private stopped = false;

  constructor(private readonly options: ConfigWatchOptions) {
    this.version = options.version;
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pollOnce().then(() => this.schedule());
    }, this.options.intervalMs ?? 5000);
    this.timer.unref();
  }

  /** One poll: applies a newer version if there is one. Never rejects; resolves true when it applied. */
  async pollOnce(): Promise<boolean> {
    let got: VersionedConfig | undefined;
    try {
      got = await this.options.source.get();
    } catch (err) {
      this.warn({ err }, "config store unreachable: keeping the config in force");
      return false;
    }
    if (!got || got.version <= this.version) return false;
    try {
      await this.options.apply(got.config, got.version);
    } catch (err) {
      this.warn({ err, version: got.version }, "new config not applied: keeping the config in force");
      return false;
    }
    this.version = got.version;
    this.options.logger?.info({ version: got.version }, "config reloaded");
    if (this.options.stateFile) {
      await writeStateFile(this.options.stateFile, got).catch((err: unknown) =>
        this.options.logger?.warn({ err }, "cannot write the state file"),
      );
    }
    return true;
  }

  private warn(fields: object, message: string): void {
    const now = performance.now();
    if (now - this.lastWarnMs < (this.options.warnEveryMs ?? 60_000)) return;
    this.lastWarnMs = now;
    this.options.logger?.warn(fields, message);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
