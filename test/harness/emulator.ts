/**
 * The AWS emulator for tests and local mode: moto server, installed by the
 * project itself into `.hafleet/venv` (ignored by git) from
 * `test/harness/requirements.txt` the first time it is needed, and started on
 * a free loopback port. The code under test talks to it through the real AWS
 * SDK; only the endpoint differs from AWS.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { freePort } from "../../lib/core/ports";

const run = promisify(execFile);

export const REPO_ROOT = resolve(__dirname, "..", "..");
export const WORK_DIR = join(REPO_ROOT, ".hafleet");
export const VENV_DIR = join(WORK_DIR, "venv");
const REQUIREMENTS = join(__dirname, "requirements.txt");
/** moto server handling one request at a time, as DynamoDB applies conditional writes atomically. */
const SERVE = join(__dirname, "moto-serve.py");

/** The account moto reports; LocalStack's default, so both behave alike. */
export const EMULATOR_ACCOUNT_ID = "000000000000";
export const EMULATOR_REGION = "us-east-1";

/** Environment that points the AWS SDK (and the CDK CLI) at an emulator. */
export function emulatorEnv(endpoint: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: endpoint,
    AWS_REGION: EMULATOR_REGION,
    AWS_DEFAULT_REGION: EMULATOR_REGION,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
  };
}

/** SDK client settings for the emulator at `endpoint`, for code that must not depend on the environment. */
export function emulatorClientConfig(endpoint: string) {
  return {
    endpoint,
    region: EMULATOR_REGION,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  };
}

export class EmulatorSetupError extends Error {
  override readonly name = "EmulatorSetupError";
}

/** Returns the venv's bin folder, creating the venv and installing the pinned tools when needed. */
export async function ensureVenv(log: (line: string) => void = () => {}): Promise<string> {
  const bin = join(VENV_DIR, "bin");
  const requirements = await readFile(REQUIREMENTS, "utf8");
  const digest = createHash("sha256").update(requirements).digest("hex");
  const stamp = join(VENV_DIR, ".hafleet-requirements");
  if (existsSync(stamp) && (await readFile(stamp, "utf8")) === digest) return bin;

  await mkdir(WORK_DIR, { recursive: true });
  const lock = join(WORK_DIR, "venv.lock");
  await withDirLock(lock, async () => {
    // Another process may have finished the install while this one waited.
    if (existsSync(stamp) && (await readFile(stamp, "utf8")) === digest) return;
    const python = await findPython();
    log(`installing the AWS emulator (moto server) into ${VENV_DIR} (first run only, about a minute)`);
    await rm(VENV_DIR, { recursive: true, force: true });
    try {
      await run(python, ["-m", "venv", VENV_DIR]);
    } catch (err) {
      throw new EmulatorSetupError(
        `${python} cannot create a virtualenv: install the venv module (Debian: apt-get install python3-venv). ${firstLine(err)}`,
      );
    }
    try {
      await run(join(bin, "pip"), ["install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS], {
        maxBuffer: 16 * 1024 * 1024,
      });
    } catch (err) {
      throw new EmulatorSetupError(
        `pip could not install ${REQUIREMENTS} into ${VENV_DIR}: ${firstLine(err)} (is PyPI reachable?)`,
      );
    }
    await writeFile(stamp, digest);
  });
  return bin;
}

async function findPython(): Promise<string> {
  for (const candidate of [process.env.HAFLEET_PYTHON, "python3", "python"]) {
    if (!candidate) continue;
    try {
      const { stdout } = await run(candidate, [
        "-c",
        "import sys, venv; print(sys.version_info[:2] >= (3, 9))",
      ]);
      if (stdout.trim() === "True") return candidate;
    } catch {
      // try the next candidate
    }
  }
  throw new EmulatorSetupError(
    "python3 (3.9 or newer, with venv and pip) is needed to run the AWS emulator: install it (Debian: apt-get install python3 python3-venv python3-pip)",
  );
}

async function withDirLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  // mkdir is atomic; a lock older than 10 minutes is from a process that died.
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      await mkdir(dir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (Date.now() > deadline) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function firstLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  const text = (e.stderr?.trim() || e.message || String(err)).split("\n");
  return text[text.length - 1] ?? "";
}

/** Runs argv[1:] as a child; ends it on SIGTERM or when stdin reaches end of file. */
const WATCHDOG = `
import signal, subprocess, sys, threading
child = subprocess.Popen(sys.argv[1:])
def stop(*_):
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
threading.Thread(target=lambda: (sys.stdin.read(), stop()), daemon=True).start()
sys.exit(child.wait())
`;

export interface Emulator {
  /** `http://127.0.0.1:PORT` (or `http://localhost:PORT` when asked for). */
  readonly endpoint: string;
  readonly port: number;
  /** Clears every resource in the emulator (moto's `/moto-api/reset`). */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartEmulatorOptions {
  /** Use `localhost` in the endpoint; the CDK deploy path needs it (docs/architecture.md §10). @default false */
  readonly localhostName?: boolean;
  /** Where moto's own log goes. @default `.hafleet/logs/moto-<port>.log` */
  readonly logFile?: string;
  readonly log?: (line: string) => void;
  /** How long to wait for the server to answer. @default 60000 */
  readonly startTimeoutMs?: number;
}

/** Installs moto when needed and starts it on a free loopback port. */
export async function startEmulator(options: StartEmulatorOptions = {}): Promise<Emulator> {
  const bin = await ensureVenv(options.log);
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;
  let lastError: unknown;
  // The free port may be taken between asking and binding: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const logFile = options.logFile ?? join(WORK_DIR, "logs", `moto-${port}.log`);
    await mkdir(join(logFile, ".."), { recursive: true });
    const out = createWriteStream(logFile, { flags: "a" });
    // moto runs under a watchdog that ends it when this process's end of the stdin
    // pipe closes: a parent killed with SIGKILL leaves no emulator behind.
    const child = spawn(
      join(bin, "python"),
      ["-c", WATCHDOG, join(bin, "python"), SERVE, "-H", "127.0.0.1", "-p", String(port)],
      {
        env: { ...process.env, MOTO_ACCOUNT_ID: EMULATOR_ACCOUNT_ID, PYTHONUNBUFFERED: "1" },
        stdio: ["pipe", "pipe", "pipe"],
      },
    );
    child.stdout?.pipe(out);
    child.stderr?.pipe(out);
    const base = `http://127.0.0.1:${port}`;
    try {
      await waitReady(base, child, startTimeoutMs);
    } catch (err) {
      lastError = err;
      await stopChild(child);
      out.end();
      continue;
    }
    const endpoint = options.localhostName ? `http://localhost:${port}` : base;
    return {
      endpoint,
      port,
      reset: async () => {
        const res = await fetch(`${base}/moto-api/reset`, { method: "POST" });
        if (!res.ok) throw new Error(`emulator reset failed: HTTP ${res.status}`);
      },
      stop: async () => {
        await stopChild(child);
        out.end();
      },
    };
  }
  throw new EmulatorSetupError(`moto server did not start: ${firstLine(lastError)}`);
}

async function waitReady(base: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`moto server exited with code ${child.exitCode}`);
    try {
      const res = await fetch(`${base}/moto-api/data.json`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`moto server did not answer on ${base} within ${timeoutMs} ms`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolveStop) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.once("exit", () => {
      clearTimeout(kill);
      resolveStop();
    });
    child.kill("SIGTERM");
  });
}
