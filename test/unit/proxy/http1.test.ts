import {
  ChunkScanner,
  cookieValue,
  Framing,
  findHeadEnd,
  MALFORMED,
  NEED_MORE,
  parseRequestHead,
  parseResponseHead,
} from "../../../proxy/http1";

const head = (...lines: string[]) => `${lines.join("\r\n")}\r\n\r\n`;

describe("parseRequestHead", () => {
  // Each row: a head that two parsers could read differently, or that is malformed.
  const refused: [string, string, number][] = [
    [
      "repeated Content-Length (equal)",
      head("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 5"),
      400,
    ],
    [
      "conflicting Content-Length",
      head("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Content-Length: 6"),
      400,
    ],
    ["Content-Length list", head("POST / HTTP/1.1", "Host: a", "Content-Length: 5, 5"), 400],
    ["signed Content-Length", head("POST / HTTP/1.1", "Host: a", "Content-Length: +5"), 400],
    // OWS to RFC 9110, but llhttp refuses an HTAB after these two values: found by the differential fuzz.
    ["HTAB after Content-Length", head("POST / HTTP/1.1", "Host: a", "Content-Length: 5\t"), 400],
    ["SP HTAB after Content-Length", head("POST / HTTP/1.1", "Host: a", "Content-Length: 5 \t"), 400],
    ["HTAB after Transfer-Encoding", head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked\t"), 400],
    [
      "Transfer-Encoding with Content-Length",
      head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 5"),
      400,
    ],
    [
      "Content-Length then Transfer-Encoding",
      head("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"),
      400,
    ],
    ["Transfer-Encoding not chunked", head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"), 400],
    [
      "Transfer-Encoding chunked, identity",
      head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, identity"),
      400,
    ],
    ["Transfer-Encoding xchunked", head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"), 400],
    [
      "repeated Transfer-Encoding",
      head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
      400,
    ],
    ["Transfer-Encoding in HTTP/1.0", head("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400],
    ["obs-fold", head("GET / HTTP/1.1", "Host: a", "X-A: b", " folded"), 400],
    ["space before colon", head("GET / HTTP/1.1", "Host: a", "Content-Length : 5"), 400],
    ["tab in name", head("GET / HTTP/1.1", "Host: a", "X\tA: b"), 400],
    ["NUL in value", head("GET / HTTP/1.1", "Host: a", "X-A: b\u0000c"), 400],
    ["bare CR in value", head("GET / HTTP/1.1", "Host: a", "X-A: b\rc"), 400],
    ["bare LF line end", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400],
    ["missing colon", head("GET / HTTP/1.1", "Host: a", "garbage"), 400],
    ["missing Host in HTTP/1.1", head("GET / HTTP/1.1"), 400],
    ["repeated Host", head("GET / HTTP/1.1", "Host: a", "Host: b"), 400],
    ["space in target", head("GET /a b HTTP/1.1", "Host: a"), 400],
    // RFC 3986: a target is ASCII (llhttp refuses other bytes, so a node backend would).
    ["high byte in target", head("GET /caf\u00e9 HTTP/1.1", "Host: a"), 400],
    ["lower-case version", head("GET / http/1.1", "Host: a"), 400],
    ["HTTP/2.0 request line", head("GET / HTTP/2.0", "Host: a"), 505],
    ["no method", head(" / HTTP/1.1", "Host: a"), 400],
  ];
  it.each(refused)("refuses %s", (_name, text, status) => {
    const r = parseRequestHead(text);
    expect(r.error).toBe(true);
    if (r.error) expect(r.status).toBe(status);
  });

  it("keeps end-to-end headers and removes hop-by-hop ones, including those Connection names", () => {
    const r = parseRequestHead(
      head(
        "GET /x?y=1 HTTP/1.1",
        "Host: example.com",
        "Connection: keep-alive, X-Secret",
        "Keep-Alive: timeout=5",
        "X-Secret: 1",
        "TE: trailers",
        "Proxy-Authorization: Basic Zm9v",
        "Accept: */*",
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-Proto: https",
      ),
    );
    if (r.error) throw new Error(r.reason);
    expect(r.forwardLines).toBe("Host: example.com\r\nAccept: */*\r\n");
    expect(r.forwardedFor).toBe("10.0.0.1");
    expect(r.keepAlive).toBe(true);
    expect(r.host).toBe("example.com");
  });

  // Connection names hop-by-hop headers, but never the framing or Host: the
  // message goes on with the framing it was parsed with.
  const protectedByName: [string, string, string][] = [
    [
      "content-length",
      head("POST / HTTP/1.1", "Host: a", "Connection: content-length", "Content-Length: 3"),
      "Host: a\r\nContent-Length: 3\r\n",
    ],
    [
      "transfer-encoding",
      head("POST / HTTP/1.1", "Host: a", "Connection: Transfer-Encoding", "Transfer-Encoding: chunked"),
      "Host: a\r\ntransfer-encoding: chunked\r\n",
    ],
    ["host", head("GET / HTTP/1.1", "Host: a", "Connection: close, HOST"), "Host: a\r\n"],
  ];
  it.each(protectedByName)("keeps %s when Connection names it", (_name, text, lines) => {
    const r = parseRequestHead(text);
    if (r.error) throw new Error(r.reason);
    expect(r.forwardLines).toBe(lines);
  });

  // RFC 9112 3.2.2: a proxy must ignore Host when the target is absolute-form
  // and send Host from the target's authority; the backend gets origin-form.
  const targets: [string, string, string, string][] = [
    [
      "absolute-form",
      head("GET http://b.example/x?y=1 HTTP/1.1", "Host: a"),
      "/x?y=1",
      "host: b.example\r\n",
    ],
    [
      "upper-case scheme, port, no path",
      head("GET HTTP://B:8080 HTTP/1.1", "Host: a"),
      "/",
      "host: B:8080\r\n",
    ],
    ["query without a path", head("GET http://b?q HTTP/1.1", "Host: b"), "/?q", "host: b\r\n"],
    [
      "https and an IPv6 literal",
      head("GET https://[::1]:8443/p HTTP/1.1", "Host: a"),
      "/p",
      "host: [::1]:8443\r\n",
    ],
    ["HTTP/1.0 without Host", head("GET http://b/x HTTP/1.0"), "/x", "host: b\r\n"],
    ["asterisk-form with OPTIONS", head("OPTIONS * HTTP/1.1", "Host: a"), "*", "Host: a\r\n"],
    ["origin-form", head("GET /p HTTP/1.1", "Host: a"), "/p", "Host: a\r\n"],
  ];
  it.each(targets)("forwards %s as origin-form with Host from the authority", (_n, text, target, lines) => {
    const r = parseRequestHead(text);
    if (r.error) throw new Error(r.reason);
    expect(r.target).toBe(target);
    expect(r.forwardLines).toBe(lines);
    expect(r.host).toBe(/host: (.*)\r\n/i.exec(lines)![1]);
  });

  it.each([
    ["userinfo", "http://u:p@b/x"],
    ["an empty authority", "http:///x"],
    ["another scheme", "ftp://b/x"],
    ["a relative target", "b/x"],
    ["a query alone", "?x"],
    ["a bad port", "http://b:8x/"],
    ["a bad authority byte", 'http://b"c/'],
    ["asterisk-form with GET", "*"],
    ["one slash after the scheme", "http:/b"],
  ])("refuses a target with %s", (_n, target) => {
    const r = parseRequestHead(head(`GET ${target} HTTP/1.1`, "Host: b"));
    expect(r.error && r.status).toBe(400);
  });

  it("takes out the forwarded headers a client may not set, keeping the values for a trusted peer", () => {
    const r = parseRequestHead(
      head(
        "GET / HTTP/1.1",
        "Host: a",
        "X-Real-IP: 10.9.9.9",
        "Forwarded: for=10.9.9.9;proto=https",
        "X-Forwarded-For: 10.9.9.9",
        "X-Forwarded-Host: evil.example",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Port: 443",
        "X-Forwarded-For: 10.8.8.8",
        "Accept: */*",
      ),
    );
    if (r.error) throw new Error(r.reason);
    expect(r.forwardLines).toBe("Host: a\r\nAccept: */*\r\n");
    expect([r.forwardedFor, r.forwardedHost, r.forwardedProto]).toEqual([
      "10.9.9.9, 10.8.8.8",
      "evil.example",
      "https",
    ]);
  });

  const framing: [string, string, Framing, number, boolean][] = [
    ["no body", head("GET / HTTP/1.1", "Host: a"), Framing.None, 0, true],
    ["Content-Length", head("POST / HTTP/1.1", "Host: a", "Content-Length: 12"), Framing.Length, 12, true],
    ["chunked", head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: Chunked"), Framing.Chunked, 0, true],
    ["Connection: close", head("GET / HTTP/1.1", "Host: a", "Connection: close"), Framing.None, 0, false],
    ["HTTP/1.0 default close", head("GET / HTTP/1.0"), Framing.None, 0, false],
    ["HTTP/1.0 keep-alive", head("GET / HTTP/1.0", "Connection: Keep-Alive"), Framing.None, 0, true],
  ];
  it.each(framing)("frames %s", (_name, text, expected, length, keepAlive) => {
    const r = parseRequestHead(text);
    if (r.error) throw new Error(r.reason);
    expect(r.framing).toBe(expected);
    expect(r.contentLength).toBe(length);
    expect(r.keepAlive).toBe(keepAlive);
  });

  it("re-emits chunked framing for the backend and returns the hash header's value", () => {
    const r = parseRequestHead(
      head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "X-User: u1"),
      "x-user",
    );
    if (r.error) throw new Error(r.reason);
    expect(r.forwardLines).toBe("Host: a\r\nX-User: u1\r\ntransfer-encoding: chunked\r\n");
    expect(r.hashValue).toBe("u1");
  });
});

describe("parseResponseHead", () => {
  const rows: [string, string, boolean, Framing, boolean][] = [
    ["length", head("HTTP/1.1 200 OK", "Content-Length: 3"), false, Framing.Length, true],
    ["chunked", head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), false, Framing.Chunked, true],
    ["until close", head("HTTP/1.1 200 OK"), false, Framing.UntilClose, false],
    ["204", head("HTTP/1.1 204 No Content"), false, Framing.None, true],
    ["304 with length", head("HTTP/1.1 304 Not Modified", "Content-Length: 10"), false, Framing.None, true],
    ["HEAD answer", head("HTTP/1.1 200 OK", "Content-Length: 10"), true, Framing.None, true],
    [
      "close",
      head("HTTP/1.1 200 OK", "Content-Length: 1", "Connection: close"),
      false,
      Framing.Length,
      false,
    ],
    ["1.0 without keep-alive", head("HTTP/1.0 200 OK", "Content-Length: 1"), false, Framing.Length, false],
    [
      "1.0 keep-alive",
      head("HTTP/1.0 200 OK", "Content-Length: 1", "Connection: keep-alive"),
      false,
      Framing.Length,
      true,
    ],
  ];
  it.each(rows)("frames %s", (_n, text, noBody, framing, reusable) => {
    const r = parseResponseHead(text, noBody);
    if (r.error) throw new Error(r.reason);
    expect(r.framing).toBe(framing);
    expect(r.reusable).toBe(reusable);
  });

  it("removes hop-by-hop headers from the answer", () => {
    const r = parseResponseHead(
      head(
        "HTTP/1.1 200 OK",
        "Connection: keep-alive",
        "Keep-Alive: timeout=5",
        "Content-Length: 2",
        "X-A: 1",
      ),
      false,
    );
    if (r.error) throw new Error(r.reason);
    expect(r.forwardHead).toBe("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n");
  });

  it.each([
    ["content-length", head("HTTP/1.1 200 OK", "Connection: content-length", "Content-Length: 2")],
    [
      "transfer-encoding",
      head("HTTP/1.1 200 OK", "Connection: transfer-encoding", "Transfer-Encoding: chunked"),
    ],
  ])("keeps %s in the answer when Connection names it", (name, text) => {
    const r = parseResponseHead(text, false);
    if (r.error) throw new Error(r.reason);
    expect(r.forwardHead.toLowerCase()).toContain(`\r\n${name}: `);
    expect(r.reusable).toBe(true);
  });

  it("forwards one Content-Length when a backend repeats the same one (a strict client refuses two)", () => {
    const r = parseResponseHead(
      head("HTTP/1.1 200 OK", "Content-Length: 2", "X-A: 1", "content-length: 2"),
      false,
    );
    if (r.error) throw new Error(r.reason);
    expect(r.forwardHead).toBe("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n");
    expect(r.contentLength).toBe(2);
  });

  it.each([
    ["bad status line", head("HTTP/1.1 20 OK")],
    ["conflicting lengths", head("HTTP/1.1 200 OK", "Content-Length: 1", "Content-Length: 2")],
    ["chunked with length", head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: 2")],
    ["header injection", head("HTTP/1.1 200 OK", "X-A: a\rb")],
    ["HTAB after Content-Length", head("HTTP/1.1 200 OK", "Content-Length: 2\t")],
    ["HTAB after Transfer-Encoding", head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked \t")],
  ])("answers 502 to a backend's %s", (_n, text) => {
    const r = parseResponseHead(text, false);
    expect(r.error && r.status).toBe(502);
  });
});

describe("findHeadEnd", () => {
  // Rows: bytes so far, where scanning may start, and the answer: the offset
  // past the blank line, NEED_MORE, or MALFORMED at once (never a wait for a
  // CRLFCRLF that a head with bare line ends will not send).
  const rows: [string, string, number, number][] = [
    ["a complete head", "GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT", 0, 27],
    ["an incomplete head", "GET / HTTP/1.1\r\nHost: a\r\n", 0, NEED_MORE],
    ["a CR at the end, LF still to come", "GET / HTTP/1.1\r", 0, NEED_MORE],
    ["LF LF", "GET / HTTP/1.1\nHost: a\n\n", 0, MALFORMED],
    ["CRLF LF", "GET / HTTP/1.1\r\nHost: a\r\n\n", 0, MALFORMED],
    ["LF CRLF", "GET / HTTP/1.1\r\nHost: a\n\r\n", 0, MALFORMED],
    ["a bare LF, more to come", "GET / HTTP/1.1\nHost", 0, MALFORMED],
    ["a leading LF", "\nGET / HTTP/1.1", 0, MALFORMED],
    ["a bare CR", "GET / HTTP/1.1\rHost: a", 0, MALFORMED],
    ["a bare LF after where scanning starts", "GET / HTTP/1.1\r\nHost: a\n", 20, MALFORMED],
    ["a CRLF split at where scanning starts", "GET / HTTP/1.1\r\nHost", 15, NEED_MORE],
    ["a CR ending the last read, no LF in this one", "GET / HTTP/1.1\rX", 15, MALFORMED],
  ];
  it.each(rows)("%s", (_n, text, from, expected) => {
    expect(findHeadEnd(Buffer.from(text, "latin1"), from)).toBe(expected);
  });
});

describe("ChunkScanner", () => {
  const feedAll = (text: string, split = 1, max?: number) => {
    const s = new ChunkScanner(max);
    const buf = Buffer.from(text, "latin1");
    for (let i = 0; i < buf.length; i += split) {
      const end = Math.min(buf.length, i + split);
      const r = s.feed(buf, i, end);
      if (r !== NEED_MORE) return { r, error: s.error, bytes: s.bodyBytes };
    }
    return { r: NEED_MORE, error: s.error, bytes: s.bodyBytes };
  };

  it.each([1, 3, 1000])("finds the end of a valid body fed %i bytes at a time", (split) => {
    const body = "5\r\nhello\r\nA;ext=1\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
    const out = feedAll(`${body}NEXT`, split);
    expect(out.r).toBe(body.length);
    expect(out.bytes).toBe(15);
  });

  const bad: [string, string][] = [
    ["non-hex size", "g\r\nx\r\n0\r\n\r\n"],
    ["negative size", "-1\r\nx\r\n0\r\n\r\n"],
    ["oversized size (overflow)", "fffffffffffffffff\r\n"],
    ["data longer than size", "1\r\nab\r\n0\r\n\r\n"],
    ["missing CRLF after data", "1\r\naXY0\r\n\r\n"],
    ["bare LF after size", "1\na\r\n0\r\n\r\n"],
    ["empty size line", "\r\n"],
    ["space before size", " 1\r\na\r\n0\r\n\r\n"],
    // Chunk extensions: ";" token ["=" (token / quoted-string)], repeated, and
    // no whitespace (RFC 9112 7.1.1 allows BWS; llhttp refuses it).
    ["a space after the size", "1 \r\na\r\n0\r\n\r\n"],
    ["a tab after the size", "1\t\r\na\r\n0\r\n\r\n"],
    ["a space before ';'", "1 ;a=b\r\na\r\n0\r\n\r\n"],
    ["a space after ';'", "1; a=b\r\na\r\n0\r\n\r\n"],
    ["a space around '='", "1;a =b\r\na\r\n0\r\n\r\n"],
    ["an empty extension", "1;\r\na\r\n0\r\n\r\n"],
    ["an empty extension name", "1;=b\r\na\r\n0\r\n\r\n"],
    ["an empty extension value", "1;a=\r\na\r\n0\r\n\r\n"],
    ["a value that is no token", "1;a=b@c\r\na\r\n0\r\n\r\n"],
    ["an unterminated quoted value", '1;a="b\r\na\r\n0\r\n\r\n'],
    ["bytes after a quoted value", '1;a="b"c\r\na\r\n0\r\n\r\n'],
    ["a control byte in a quoted value", '1;a="b\u0001"\r\na\r\n0\r\n\r\n'],
    ["a bare CR in an extension", "1;a\rb\r\na\r\n0\r\n\r\n"],
    // After the last chunk, each line is a field (token ":" value) or the end.
    ["request line as a trailer", "1\r\na\r\n0\r\nGET /admin HTTP/1.1\r\n\r\n"],
    ["trailer without a colon", "0\r\nX-T\r\n\r\n"],
    ["trailer with an empty name", "0\r\n: v\r\n\r\n"],
    ["trailer with space before the colon", "0\r\nX-T : v\r\n\r\n"],
    ["trailer name with a slash", "0\r\nX/T: v\r\n\r\n"],
    ["folded trailer", "0\r\nX-T: v\r\n w\r\n\r\n"],
    ["Transfer-Encoding as a trailer", "0\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["Content-Length as a trailer", "0\r\ncontent-length: 5\r\n\r\n"],
    ["Host as a trailer", "0\r\nHOST: b\r\n\r\n"],
    ["bare LF ending a trailer", "0\r\nX-T: v\n\r\n"],
  ];
  it.each(bad)("refuses %s", (_n, text) => {
    expect(feedAll(text).r).toBe(MALFORMED);
  });

  it.each([
    ["extensions with and without values", '1;a;b=c;d="e f"\r\nx\r\n0;z\r\n\r\n'],
    ["a quoted pair and obs-text in a quoted value", '1;a="\\"\tb\u00ff"\r\nx\r\n0\r\n\r\n'],
    ["token characters in an extension", "1;!#$%&'*+.^_`|~=!#$%&'*+.^_`|~\r\nx\r\n0\r\n\r\n"],
    ["a plain trailer", "0\r\nX-T: v\r\n\r\n"],
    ["an empty value", "0\r\nX-T:\r\n\r\n"],
    ["obs-text and HTAB in a value", "0\r\nX-T: a\tb\xff\r\n\r\n"],
    ["two trailers", "0\r\nA: 1\r\nContent-Type-X: 2\r\n\r\n"],
  ])("accepts %s", (_n, text) => {
    expect(feedAll(text, 1).r).toBe(text.length);
  });

  it("refuses a body over the limit", () => {
    const out = feedAll("a\r\n0123456789\r\n0\r\n\r\n", 100, 9);
    expect(out.r).toBe(MALFORMED);
    expect(out.error).toBe("too large");
  });
});

describe("cookieValue", () => {
  it("finds a cookie among others", () => {
    expect(cookieValue("a=1; HAFLEET=abc; b=2", "HAFLEET")).toBe("abc");
    expect(cookieValue("a=1", "HAFLEET")).toBeUndefined();
    expect(cookieValue(undefined, "HAFLEET")).toBeUndefined();
  });
});
