/**
 * Errors of the data plane. Callers branch on `code` or class, never on the
 * message. Failures of one request (a bad request head, a dead backend) are not
 * errors here: they become an HTTP status on the wire and a metric. These are
 * the failures of the process itself, which `main.ts` turns into an exit code.
 */
import { HafleetError } from "../lib/core/errors";

/** A listener (or the admin server) could not bind its address. */
export class ListenError extends HafleetError {
  override readonly name = "ListenError";
  readonly address: string;

  constructor(what: string, address: string, cause: unknown) {
    const reason = (cause as NodeJS.ErrnoException)?.code ?? String(cause);
    super("HAFLEET_PROXY_LISTEN", `${what} cannot listen on ${address}: ${reason}`, { cause });
    this.address = address;
  }
}

/** The command line is wrong: names the flag and what it needs. */
export class UsageError extends HafleetError {
  override readonly name = "UsageError";
  constructor(message: string) {
    super("HAFLEET_PROXY_USAGE", message);
  }
}
