/**
 * Loopback ports for processes this one starts: the local fleet's nodes and
 * emulator, the benchmarks' proxies and backends.
 */
import { connect, createServer } from "node:net";

/** Asks the kernel for a free TCP port on `host`. */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === "object" && addr ? resolvePort(addr.port) : reject(new Error("no port")),
      );
    });
  });
}

/** Whether something accepts a connection on `host:port` now. */
export function canConnect(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise<boolean>((res) => {
    const s = connect(port, host);
    s.on("connect", () => {
      s.destroy();
      res(true);
    });
    s.on("error", () => res(false));
  });
}

/** Resolves once something accepts connections on `host:port`; throws after `timeoutMs`. */
export async function waitForPort(port: number, host = "127.0.0.1", timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await canConnect(port, host)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
}
