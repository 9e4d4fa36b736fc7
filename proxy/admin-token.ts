/**
 * The admin token: what a caller of the admin endpoint must show to change the
 * node's state (`POST /drain`). Reads (`/healthz`, `/readyz`, `/metrics`) need
 * none: the health checker and Route 53 probe them, and they reveal no secret.
 *
 * The token lives in a file that only the node's user may read (mode 0600):
 * the local fleet writes one per fleet, the CDK stack generates one in Secrets
 * Manager that only the node role may read and the node copies it to
 * `/etc/hafleet/admin-token` at boot. A node started without a token file
 * refuses every state change over HTTP (403), so a forgotten flag fails closed.
 * Node commands that travel through the state table (`hafleet drain`, the
 * checker's marks) are authorized by IAM instead and do not use it.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { UsageError } from "./errors";

/** 128 bits at least: a token is compared in constant time, but it must also not be guessable. */
export const MIN_TOKEN_LENGTH = 32;

/** A new token: 256 random bits as hex. */
export function generateAdminToken(): string {
  return randomBytes(32).toString("hex");
}

/**
 * Reads and checks a token file; throws `UsageError` naming the file and what
 * is wrong (missing, readable by others, empty or too short).
 */
export async function readAdminToken(path: string): Promise<string> {
  let mode: number;
  try {
    mode = (await stat(path)).mode;
  } catch (err) {
    throw new UsageError(`--admin-token-file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new UsageError(
      `--admin-token-file ${path} is readable or writable by others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`,
    );
  }
  const token = (await readFile(path, "utf8")).trim();
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new UsageError(
      `--admin-token-file ${path} must hold one token of at least ${MIN_TOKEN_LENGTH} characters without spaces`,
    );
  }
  return token;
}

/** The header a caller sends: `authorization: Bearer <token>`. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}

/**
 * Whether an `authorization` header carries `token`. Both sides are hashed
 * first, so the comparison takes the same time whatever the length or the
 * first differing byte.
 */
export function tokenMatches(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  const m = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (!m) return false;
  const a = createHash("sha256").update(m[1]!).digest();
  const b = createHash("sha256").update(token).digest();
  return timingSafeEqual(a, b);
}
