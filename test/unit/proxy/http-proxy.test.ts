/**
 * The HTTP proxy end to end: real node:http backends on port 0, real clients
 * (node's http client for well-formed traffic, raw sockets for hostile bytes).
 */
import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
import { connect } from "node:net";
import { Writable } from "node:stream";
import pino from "pino";
import {
  type Backend,
  deadPort,
  eventually,
  get,
  Harness,
  keepAliveAgent,
  raw,
  startBackend,
  startProxy,
  statuses,
  webConfig,
} from "./helpers";
import { startRawBackend } from "./raw-backend";

const h = new Harness();
afterEach(() => h.closeAll());

async function twoBackends(): Promise<[Backend, Backend]> {
  return [h.add(await startBackend("a")), h.add(await startBackend("b"))];
}

describe("forwarding", () => {
  it("balances round robin and rewrites headers: X-Forwarded-*, hop-by-hop removed", async () => {
    const [a, b] = await twoBackends();
    const proxy = h.add(await startProxy(webConfig([a, b])));
    const port = proxy.port("web");
    const bodies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await get(port, `/p${i}?q=1`, {
        headers: {
          "x-forwarded-for": "203.0.113.9",
          connection: "keep-alive, x-hop",
          "x-hop": "secret",
          "keep-alive": "timeout=5",
          "x-end": "kept",
        },
      });
      expect(r.status).toBe(200);
      bodies.push(r.body);
    }
    expect(bodies).toEqual(["a", "b", "a", "b"]);
    const seen = a.seen[0]!;
    expect(seen.url).toBe("/p0?q=1");
    // The client is no trusted proxy: its X-Forwarded-For is replaced, not appended to.
    expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.headers["x-forwarded-proto"]).toBe("http");
    expect(seen.headers["x-forwarded-host"]).toBe(`127.0.0.1:${port}`);
    expect(seen.headers["x-end"]).toBe("kept");
    expect(seen.headers["x-hop"]).toBeUndefined();
    expect(seen.headers["keep-alive"]).toBeUndefined();
  });

  // Rows: the listener's trustedProxies (the client is 127.0.0.1), and the
  // forwarded headers the backend sees for a client that sent its own.
  const spoofed = {
    "x-forwarded-for": "203.0.113.9",
    "x-forwarded-proto": "https",
    "x-forwarded-host": "shop.example",
    "x-forwarded-port": "443",
    "x-real-ip": "203.0.113.9",
    forwarded: "for=203.0.113.9;proto=https",
  };
  const trustRows: [string, string[], Record<string, string | undefined>][] = [
    [
      "no trusted proxies: the proxy's own values replace the client's",
      [],
      { "x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http", "x-forwarded-host": "a.example" },
    ],
    [
      "a trusted peer: its X-Forwarded-For is appended to, its proto and host kept",
      ["10.0.0.0/8", "127.0.0.0/8"],
      {
        "x-forwarded-for": "203.0.113.9, 127.0.0.1",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "shop.example",
      },
    ],
    [
      "a peer outside every trusted block is not trusted",
      ["10.0.0.0/8", "::1/128"],
      { "x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http", "x-forwarded-host": "a.example" },
    ],
  ];
  it.each(trustRows)("forwarded headers, %s", async (_n, trustedProxies, expected) => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a], {}, { listener: { trustedProxies } })));
    await get(proxy.port("web"), "/", { headers: { ...spoofed, host: "a.example" } });
    const seen = a.seen[0]!.headers;
    expect({
      "x-forwarded-for": seen["x-forwarded-for"],
      "x-forwarded-proto": seen["x-forwarded-proto"],
      "x-forwarded-host": seen["x-forwarded-host"],
    }).toEqual(expected);
    // Never the client's: the proxy sets neither, whoever the peer is.
    expect([seen["x-real-ip"], seen.forwarded, seen["x-forwarded-port"]]).toEqual([
      undefined,
      undefined,
      undefined,
    ]);
  });

  it.each([true, false])(
    "serves with client read buffers %s (node's own 'data' path when false)",
    async (readBuffers) => {
      const a = h.add(await startBackend("a"));
      a.handler = (_req, res, body) => res.end(`echo:${body}`);
      const proxy = h.add(await startProxy(webConfig([a]), { readBuffers }));
      const agent = h.add(keepAliveAgent());
      for (let i = 0; i < 3; i++) {
        const r = await get(proxy.port("web"), "/", { method: "POST", body: `n${i}`, agent });
        expect(r.body).toBe(`echo:n${i}`);
      }
    },
  );

  it("reuses backend connections across requests and clients (keep-alive pool)", async () => {
    const a = h.add(await startBackend("a"));
    const sockets = new Set<unknown>();
    a.server.on("connection", (s) => sockets.add(s));
    const proxy = h.add(await startProxy(webConfig([a])));
    for (let i = 0; i < 10; i++) expect((await get(proxy.port("web"))).status).toBe(200);
    expect(sockets.size).toBe(1);
  });

  it("streams request bodies both framings and answers of each framing", async () => {
    const a = h.add(await startBackend("a"));
    a.handler = (req, res, body) => {
      if (req.url === "/chunked") {
        res.write(`got:${body}`);
        res.end(":end");
      } else res.end(`got:${body}`);
    };
    const proxy = h.add(await startProxy(webConfig([a])));
    const port = proxy.port("web");
    const r1 = await get(port, "/len", { method: "POST", body: "x".repeat(100_000) });
    expect(r1.body).toBe(`got:${"x".repeat(100_000)}`);
    const r2 = await raw(
      port,
      "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    expect(r2.text).toMatch(/^HTTP\/1\.1 200/);
    expect(r2.text).toContain("got:abcde");
    expect(r2.text).toContain(":end");
    expect(a.bodies).toEqual([`${"x".repeat(100_000)}`, "abcde"]);
  });

  it("carries large answers intact to a slow reader (backpressure, read buffers reused)", async () => {
    const a = h.add(await startBackend("a"));
    // 6 MiB of varied bytes, as fixed length and as chunked: any overwritten read buffer shows.
    const big = randomBytes(6 * 1024 * 1024);
    a.handler = (req, res) => {
      if (req.url === "/chunked") {
        for (let i = 0; i < big.length; i += 100_000) res.write(big.subarray(i, i + 100_000));
        res.end();
      } else res.end(big);
    };
    const proxy = h.add(await startProxy(webConfig([a])));
    for (const path of ["/length", "/chunked"]) {
      const body = await new Promise<Buffer>((resolve, reject) => {
        const req = request({ host: "127.0.0.1", port: proxy.port("web"), path, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          // Not reading for a while keeps the client's receive window small,
          // so the proxy's writes back up and it must hold on to read buffers.
          res.pause();
          setTimeout(() => res.resume(), 300);
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve(Buffer.concat(chunks)));
        });
        req.on("error", reject);
        req.end();
      });
      expect(createHash("sha256").update(body).digest("hex")).toBe(
        createHash("sha256").update(big).digest("hex"),
      );
    }
  });

  it("carries a large upload intact to a slow backend (backpressure, read buffers reused)", async () => {
    const a = h.add(await startBackend("a"));
    const big = randomBytes(8 * 1024 * 1024);
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    a.server.removeAllListeners("request");
    a.server.on("request", (req, res) => {
      const hash = createHash("sha256");
      // Not reading for a while: the proxy's writes to this backend back up.
      req.pause();
      setTimeout(() => req.resume(), 300);
      req.on("data", (c: Buffer) => hash.update(c));
      req.on("end", () => res.end(hash.digest("hex")));
    });
    const proxy = h.add(await startProxy(webConfig([a])));
    const r = await get(proxy.port("web"), "/upload", { method: "PUT", body: big });
    expect(r.body).toBe(sha(big));
  });

  it("sends an absolute-form target as origin-form, Host from its authority (RFC 9112 3.2.2)", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a])));
    const r = await raw(
      proxy.port("web"),
      "GET http://real.example/x?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );
    expect(statuses(r.text)).toEqual([200]);
    expect(a.seen.map((s) => [s.url, s.headers.host, s.headers["x-forwarded-host"]])).toEqual([
      ["/x?q=1", "real.example", "real.example"],
    ]);
  });

  it("answers pipelined requests in order on one connection", async () => {
    const a = h.add(await startBackend("a"));
    a.handler = (req, res) => res.end(req.url);
    const proxy = h.add(await startProxy(webConfig([a])));
    const r = await raw(
      proxy.port("web"),
      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    expect(statuses(r.text)).toEqual([200, 200, 200]);
    expect(r.text.indexOf("/1")).toBeLessThan(r.text.indexOf("/2"));
    expect(r.text.indexOf("/2")).toBeLessThan(r.text.indexOf("/3"));
    expect(r.closed).toBe(true);
  });

  it("answers HEAD without a body and keeps the connection usable", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a])));
    const r = await raw(
      proxy.port("web"),
      "HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    expect(statuses(r.text)).toEqual([200, 200]);
  });

  it("tunnels a protocol upgrade (101) both ways", async () => {
    const a = h.add(await startBackend("a"));
    a.server.on("upgrade", (_req, socket) => {
      h.add({ close: () => void socket.destroy() }); // upgraded sockets leave the server's books
      socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
      socket.on("data", (d: Buffer) => socket.write(`echo:${d}`));
    });
    const proxy = h.add(await startProxy(webConfig([a])));
    const text = await new Promise<string>((resolve) => {
      const s = connect(proxy.port("web"), "127.0.0.1");
      let got = "";
      s.on("data", (d) => {
        got += d.toString();
        if (got.includes("\r\n\r\n") && !got.includes("echo:")) s.write("ping");
        if (got.includes("echo:ping")) {
          s.destroy();
          resolve(got);
        }
      });
      s.write("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    });
    expect(text).toMatch(/^HTTP\/1\.1 101/);
    expect(text).toContain("echo:ping");
  });
});

describe("balancing through the proxy", () => {
  it("consistent hashing on a header: one user always reaches one backend, users spread over all", async () => {
    const bs = [
      h.add(await startBackend("a")),
      h.add(await startBackend("b")),
      h.add(await startBackend("c")),
    ];
    const proxy = h.add(
      await startProxy(
        webConfig(bs, { algorithm: "consistent-hash", hashKey: { source: "header", name: "X-User" } }),
      ),
    );
    const byUser = new Map<string, Set<string>>();
    for (let u = 0; u < 30; u++) {
      for (let i = 0; i < 3; i++) {
        const r = await get(proxy.port("web"), "/", { headers: { "x-user": `user-${u}` } });
        const seen = byUser.get(`user-${u}`) ?? new Set<string>();
        seen.add(r.body);
        byUser.set(`user-${u}`, seen);
      }
    }
    for (const seen of byUser.values()) expect(seen.size).toBe(1);
    const used = new Set([...byUser.values()].map((s) => [...s][0]));
    expect(used).toEqual(new Set(["a", "b", "c"]));
  });

  it("consistent hashing on a cookie", async () => {
    const bs = [h.add(await startBackend("a")), h.add(await startBackend("b"))];
    const proxy = h.add(
      await startProxy(
        webConfig(bs, { algorithm: "consistent-hash", hashKey: { source: "cookie", name: "uid" } }),
      ),
    );
    const answers = new Set<string>();
    for (let i = 0; i < 5; i++) {
      answers.add((await get(proxy.port("web"), "/", { headers: { cookie: "theme=dark; uid=42" } })).body);
    }
    expect(answers.size).toBe(1);
  });
});

describe("access log", () => {
  // Rows: access log on or off, and the request lines expected.
  it.each([
    [true, 2],
    [false, 0],
  ])("accessLog %s writes %i request lines for 2 requests", async (accessLog, expected) => {
    const a = h.add(await startBackend("a"));
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const l of chunk.toString().split("\n"))
          if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const logger = pino({ level: "info" }, sink);
    const proxy = h.add(await startProxy(webConfig([a]), { logger, accessLog }));
    await get(proxy.port("web"), "/one");
    await get(proxy.port("web"), "/two?x=1", { method: "POST", body: "b" });
    const requests = lines.filter((l) => l.msg === "request");
    expect(requests).toHaveLength(expected);
    if (expected) {
      expect(requests.map((r) => [r.method, r.target, r.status, r.listener])).toEqual([
        ["GET", "/one", 200, "web"],
        ["POST", "/two?x=1", 200, "web"],
      ]);
    }
  });
});

describe("smuggling and limits: refused with a status and the connection closed", () => {
  // Each row: what the client sends, the status, and that the backend saw nothing.
  const cases: [string, string, number][] = [
    [
      "repeated Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
      400,
    ],
    [
      "conflicting Content-Length",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      400,
    ],
    [
      "TE + CL",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
      400,
    ],
    [
      "TE other than chunked",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
      400,
    ],
    [
      "bad chunk size",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
      400,
    ],
    [
      "chunk size overflow",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\na\r\n",
      400,
    ],
    [
      "chunk data without CRLF",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
      400,
    ],
    [
      "request line as a chunked trailer",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /admin HTTP/1.1\r\n\r\n",
      400,
    ],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n", 400],
    ["bad header byte", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\u00012\r\n\r\n", 400],
    ["space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n", 400],
    ["bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400],
    ["head too large", `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(3000)}\r\n\r\n`, 431],
    ["head too large, never ending", `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"a".repeat(3000)}`, 431],
    ["Content-Length over the body limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2001\r\n\r\n", 413],
    ["CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501],
  ];
  it.each(cases)("%s", async (_name, request, status) => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(
      await startProxy(webConfig([a], {}, { limits: { maxHeaderBytes: 2048, maxBodyBytes: 2000 } })),
    );
    const r = await raw(proxy.port("web"), request);
    expect(statuses(r.text)).toEqual([status]);
    expect(r.closed).toBe(true);
    expect(a.seen).toHaveLength(0);
  });

  // A head with bare LF line ends never sends the CRLFCRLF a strict reader
  // waits for: refused at once, not by the head timeout (60 s here).
  it.each([
    ["LF LF", "GET / HTTP/1.1\nHost: a\n\n"],
    ["CRLF LF", "GET / HTTP/1.1\r\nHost: a\r\n\n"],
    ["LF CRLF", "GET / HTTP/1.1\r\nHost: a\n\r\n"],
    ["a bare CR ending a line", "GET / HTTP/1.1\r\nHost: a\r\rX: b"],
  ])("a head ended by %s is refused with 400 at once", async (_n, request) => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a], {}, { timeouts: { headMs: 60_000 } })));
    const r = await raw(proxy.port("web"), request, 15_000);
    expect(statuses(r.text)).toEqual([400]);
    expect(r.closed).toBe(true);
    expect(a.seen).toHaveLength(0);
  });

  it("a chunked body over the limit is cut with 413 and the connection closed", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a], {}, { limits: { maxBodyBytes: 10 } })));
    const r = await raw(
      proxy.port("web"),
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n0123456789a\r\n0\r\n\r\n",
    );
    expect(statuses(r.text)).toEqual([413]);
    expect(r.closed).toBe(true);
  });

  it("a smuggled second request hidden in a body is never parsed as a request", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a])));
    // CL says the whole "GET /admin" text is body: the backend must see one POST with that body.
    const smuggled = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    const r = await raw(
      proxy.port("web"),
      `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${smuggled.length}\r\nConnection: close\r\n\r\n${smuggled}`,
    );
    expect(statuses(r.text)).toEqual([200]);
    expect(a.seen.map((s) => s.url)).toEqual(["/"]);
    expect(a.bodies).toEqual([smuggled]);
  });

  it("a body behind `Connection: content-length` never captures the next client's request", async () => {
    // The attack: Connection names Content-Length, so a proxy that drops the
    // named header forwards a body the backend reads as a second request, a
    // POST whose own length swallows the next request on that pooled
    // connection: the victim's head, cookie and all, and the victim is
    // answered with the attacker's response.
    const a = h.add(await startBackend("a"));
    a.handler = (req, res) => res.end(`url=${req.url}`);
    const proxy = h.add(await startProxy(webConfig([a])));
    const port = proxy.port("web");
    const smuggled = "POST /capture HTTP/1.1\r\nHost: a\r\nContent-Length: 90\r\n\r\n";
    const attack = await raw(
      port,
      "POST /attack HTTP/1.1\r\nHost: a\r\nConnection: close, content-length\r\n" +
        `Content-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    );
    expect(statuses(attack.text)).toEqual([200]);
    const victim = await get(port, "/victim", { headers: { cookie: "session=VICTIM-SECRET" } });
    expect(victim.body).toBe("url=/victim");
    // The backend saw the two requests the clients sent, and nothing else.
    expect(a.seen.map((s) => s.url)).toEqual(["/attack", "/victim"]);
    expect(a.bodies).toEqual([smuggled, ""]);
    for (const [i, s] of a.seen.entries()) {
      if (s.url === "/victim") continue;
      expect(`${JSON.stringify(s.headers)}${a.bodies[i]}`).not.toContain("VICTIM-SECRET");
    }
  });

  it("a slow client (slowloris) is cut off by the head timeout with 408", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a], {}, { timeouts: { headMs: 300 } })));
    const s = connect(proxy.port("web"), "127.0.0.1");
    let got = "";
    s.on("data", (d) => {
      got += d.toString();
    });
    s.on("error", () => {});
    const closed = new Promise<void>((r) => s.on("close", () => r()));
    s.write("GET / HTTP/1.1\r\n");
    // One header byte at a time, far slower than a head should take.
    const drip = setInterval(() => !s.destroyed && s.write("X"), 50);
    await closed;
    clearInterval(drip);
    expect(statuses(got)).toEqual([408]);
    expect(a.seen).toHaveLength(0);
  });

  it("a connection that never sends a byte is closed by the head timeout", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a], {}, { timeouts: { headMs: 200 } })));
    const r = await raw(proxy.port("web"), []);
    expect(r.closed).toBe(true);
  });

  it("refuses connections over limits.maxConnections with 503", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a], {}, { limits: { maxConnections: 1 } })));
    const first = connect(proxy.port("web"), "127.0.0.1");
    h.add({ close: () => void first.destroy() });
    await new Promise((r) => first.on("connect", r));
    await eventually(() => proxy.gate.open === 1);
    const r = await raw(proxy.port("web"), "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(statuses(r.text)).toEqual([503]);
  });
});

describe("backend failures", () => {
  it("answers 502 to a response head over the limit, even when it ends in the read that crosses it", async () => {
    // 64 KiB is the response head limit; this head ends 2 KiB past it.
    const big = `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(66 * 1024)}\r\ncontent-length: 2\r\n\r\nok`;
    const b = h.add(await startRawBackend([big]));
    const proxy = h.add(await startProxy(webConfig([b])));
    const r = await raw(proxy.port("web"), "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(statuses(r.text)).toEqual([502]);
  });

  it("answers 502 to a 101 the request did not ask for (nothing was sent, so no reset)", async () => {
    const b = h.add(
      await startRawBackend([
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n",
      ]),
    );
    const proxy = h.add(await startProxy(webConfig([b])));
    const r = await raw(proxy.port("web"), "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(statuses(r.text)).toEqual([502]);
  });

  it("sends no 1xx to an HTTP/1.0 client (RFC 9110 15.2)", async () => {
    const b = h.add(
      await startRawBackend(["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]),
    );
    const proxy = h.add(await startProxy(webConfig([b])));
    const r = await raw(proxy.port("web"), "GET / HTTP/1.0\r\n\r\n");
    expect(r.text).toBe("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
  });

  it("answers 502 at once to a response head with bare LF line ends", async () => {
    const b = h.add(await startRawBackend(["HTTP/1.1 200 OK\ncontent-length: 2\n\nok"]));
    const proxy = h.add(await startProxy(webConfig([b], {}, { timeouts: { requestMs: 60_000 } })));
    const r = await raw(proxy.port("web"), "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 15_000);
    expect(statuses(r.text)).toEqual([502]);
  });

  // Scenario rows: backends (live or dead, in order), method, expected status and answering backend.
  const rows: [string, ("a" | "dead")[], string, number, string | undefined, number][] = [
    ["GET retried on the live backend", ["dead", "a"], "GET", 200, "a", 1],
    ["PUT (idempotent) retried", ["dead", "a"], "PUT", 200, "a", 1],
    ["POST not retried", ["dead", "a"], "POST", 502, undefined, 0],
    ["no live backend: 502 after the retry", ["dead", "dead"], "GET", 502, undefined, 1],
  ];
  it.each(rows)("%s", async (_name, layout, method, status, body, retries) => {
    const a = h.add(await startBackend("a"));
    const backends = await Promise.all(
      layout.map(async (x, i) => ({ id: `${x}${i}`, port: x === "a" ? a.port : await deadPort() })),
    );
    const proxy = h.add(
      await startProxy(webConfig(backends, {}, { retries: { attempts: 1, budgetPercent: 100 } })),
    );
    const r = await get(proxy.port("web"), "/", { method });
    expect(r.status).toBe(status);
    if (body) expect(r.body).toBe(body);
    expect(proxy.pools.get("web")!.pool.retriesTotal).toBe(retries);
  });

  it("a retry budget of 0 means no retries", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(
      await startProxy(
        webConfig(
          [{ id: "dead", port: await deadPort() }, a],
          {},
          { retries: { attempts: 1, budgetPercent: 0 } },
        ),
      ),
    );
    expect((await get(proxy.port("web"))).status).toBe(502);
  });

  it("answers 502 when the backend closes without answering, 504 when it is too slow", async () => {
    const a = h.add(await startBackend("a"));
    a.handler = (req, res) => {
      if (req.url === "/close") req.socket.destroy();
      else if (req.url === "/slow") setTimeout(() => !res.destroyed && res.end("late"), 3000);
      else res.end("ok");
    };
    const proxy = h.add(await startProxy(webConfig([a], {}, { timeouts: { serverMs: 300 } })));
    expect((await get(proxy.port("web"), "/close", { method: "POST" })).status).toBe(502);
    expect((await get(proxy.port("web"), "/slow")).status).toBe(504);
    expect((await get(proxy.port("web"), "/")).status).toBe(200);
  });

  it("retries a GET on a fresh connection when a kept-alive backend connection went stale", async () => {
    const a = h.add(await startBackend("a"));
    const proxy = h.add(await startProxy(webConfig([a])));
    const agent = h.add(keepAliveAgent());
    expect((await get(proxy.port("web"), "/", { agent })).status).toBe(200);
    // The backend drops every idle connection, as one restarting would.
    a.server.closeIdleConnections();
    expect((await get(proxy.port("web"), "/", { agent })).status).toBe(200);
  });
});
