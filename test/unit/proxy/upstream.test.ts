/**
 * The backend connection's read buffer contract: it is reused while the
 * owner holds no reference to the last chunk, and replaced when it does.
 */
import { createServer, type Socket } from "node:net";
import { Pool } from "../../../proxy/pool";
import { UpstreamConnection, type UpstreamOwner } from "../../../proxy/upstream";
import { config } from "./helpers";

async function chunksFrom(retain: boolean): Promise<{ chunks: Buffer[]; buffers: Set<ArrayBufferLike> }> {
  // A backend that sends 20 distinct messages, each after the previous was read.
  const sockets = new Set<Socket>();
  const srv = createServer((s) => {
    sockets.add(s);
    let i = 0;
    const next = () => {
      if (i === 20) return s.end();
      s.write(`message-${String(i++).padStart(2, "0")};`);
      setTimeout(next, 5);
    };
    next();
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  const pool = new Pool(
    "p",
    config({
      listeners: [{ name: "l", protocol: "tcp", port: 1, pool: "p" }],
      pools: { p: { backends: [{ host: "127.0.0.1", port }] } },
    }).pools.p!,
  );
  const chunks: Buffer[] = [];
  const buffers = new Set<ArrayBufferLike>();
  await new Promise<void>((resolve) => {
    const owner: UpstreamOwner = {
      onUpstreamConnect: () => {},
      onUpstreamData: (_c, chunk) => {
        chunks.push(chunk);
        buffers.add(chunk.buffer);
        return retain;
      },
      onUpstreamClose: () => resolve(),
      onUpstreamDrain: () => {},
      onUpstreamEnd: (c) => c.socket.destroy(),
    };
    new UpstreamConnection(pool.backends[0]!, owner, 1000);
  });
  await new Promise<void>((r) => srv.close(() => r()));
  return { chunks, buffers };
}

const expected = Array.from({ length: 20 }, (_, i) => `message-${String(i).padStart(2, "0")};`).join("");

describe("upstream read buffers", () => {
  it("gives a new buffer after a chunk the owner keeps: kept chunks are never overwritten", async () => {
    const { chunks, buffers } = await chunksFrom(true);
    expect(Buffer.concat(chunks).toString()).toBe(expected);
    expect(buffers.size).toBe(chunks.length);
  });

  it("reuses one buffer while the owner keeps nothing", async () => {
    const { chunks, buffers } = await chunksFrom(false);
    expect(chunks.length).toBeGreaterThan(1);
    expect(buffers.size).toBe(1);
  });
});
