import { describe, expect, it } from "vitest";
import { buildAnswer, DNS_A, parseQuery, RCODE_NXDOMAIN } from "./dns";
import { announcedName } from "./peek";
import { alwaysDenied, compilePolicy, decide, dnsRefusal, ipBytes, parseNetwork } from "./policy";

const pub = compilePolicy("public");

describe("network policy", () => {
  it('"public" reaches public addresses, never the always-denied set', () => {
    expect(decide(pub, "198.18.0.2", 80, []).allowed).toBe(true);
    expect(decide(pub, "2606:4700::1", 443, []).allowed).toBe(true);
    for (const a of [
      "127.0.0.1",
      "127.9.9.9",
      "10.1.2.3",
      "172.16.0.1",
      "192.168.1.1",
      "100.64.0.1",
      "169.254.169.254",
      "0.0.0.0",
      "224.0.0.1",
      "255.255.255.255",
      "::1",
      "fe80::1",
      "fd00::1",
      "::ffff:127.0.0.1",
      "::ffff:10.0.0.1",
      "::127.0.0.1",
      "0:0:0:0:0:ffff:7f00:1",
    ]) {
      expect(decide(pub, a, 80, []).allowed, a).toBe(false);
    }
    expect(decide(pub, "127.0.0.1", 80, []).rule).toBe("always-denied 127.0.0.0/8");
    expect(alwaysDenied("127.0.0.1")).not.toBeNull();
  });

  it('"none" reaches nothing', () => {
    expect(decide(compilePolicy("none"), "198.18.0.2", 80, [])).toEqual({ allowed: false, rule: "none" });
  });

  it("allow lists: CIDR, address, port, names, wildcards; deny wins; names never lift the always-denied set", () => {
    const p = compilePolicy(
      parseNetwork({
        allow: [
          "198.18.0.0/16:80",
          "203.0.113.7",
          "api.example.com",
          "*.pkg.dev:443",
          "[2001:db8::1]:443",
          "10.0.0.5",
        ],
        deny: ["198.18.9.0/24", "bad.pkg.dev"],
      }),
    );
    expect(decide(p, "198.18.1.1", 80, []).allowed).toBe(true);
    expect(decide(p, "198.18.1.1", 81, []).allowed).toBe(false);
    expect(decide(p, "198.18.9.1", 80, []).rule).toBe("deny 198.18.9.0/24");
    expect(decide(p, "203.0.113.7", 22, []).allowed).toBe(true);
    expect(decide(p, "203.0.113.8", 22, []).rule).toBe("not in allow list");
    expect(decide(p, "8.8.8.8", 1, ["API.example.com."]).allowed).toBe(true);
    expect(decide(p, "8.8.8.8", 443, ["x.pkg.dev"]).allowed).toBe(true);
    expect(decide(p, "8.8.8.8", 80, ["x.pkg.dev"]).allowed).toBe(false);
    expect(decide(p, "8.8.8.8", 443, ["pkg.dev"]).allowed).toBe(false);
    expect(decide(p, "8.8.8.8", 443, ["bad.pkg.dev"]).rule).toBe("deny bad.pkg.dev");
    expect(decide(p, "2001:db8::1", 443, []).allowed).toBe(true);
    expect(decide(p, "127.0.0.1", 80, ["api.example.com"]).allowed).toBe(false);
    expect(decide(p, "10.0.0.5", 80, []).allowed).toBe(true); // named explicitly
    expect(decide(p, "10.0.0.6", 80, []).allowed).toBe(false);
    const wide = compilePolicy({ allow: ["0.0.0.0/0"] });
    expect(decide(wide, "127.0.0.1", 80, []).allowed).toBe(false);
    expect(decide(wide, "1.1.1.1", 80, []).allowed).toBe(true);
    expect(decide(compilePolicy({ allow: ["other.smtest"] }), "198.18.0.2", 8080, ["x.smtest"]).allowed).toBe(
      false,
    );
  });

  it("DNS: with an allow list only names it names are resolved (no DNS exfiltration); deny refuses", () => {
    const p = compilePolicy({
      allow: ["pypi.org:443", "*.pythonhosted.org", "198.18.0.0/15"],
      deny: ["evil.org"],
    });
    expect(dnsRefusal(p, "pypi.org")).toBeNull();
    expect(dnsRefusal(p, "files.pythonhosted.org.")).toBeNull();
    expect(dnsRefusal(p, "secret.attacker.example")).toBe("not in allow list");
    expect(dnsRefusal(compilePolicy({ deny: ["evil.org"] }), "evil.org")).toBe("deny evil.org");
    expect(dnsRefusal(compilePolicy({ deny: ["evil.org"] }), "good.org")).toBeNull();
    expect(dnsRefusal(pub, "anything.example")).toBeNull();
    expect(dnsRefusal(compilePolicy("none"), "pypi.org")).toBe("none");
  });

  it("malformed entries are SM_INVALID_OPTIONS naming the entry", () => {
    const bad: [unknown, RegExp][] = [
      [{ allow: ["10.0.0.0/33"] }, /network\.allow\[0\]/],
      [{ allow: ["ok.com", "1.2.3.4:70000"] }, /network\.allow\[1\].*port/],
      [{ deny: [""] }, /network\.deny\[0\]/],
      [{ allow: ["[::1]:0"] }, /network\.allow\[0\]/],
      [{ allow: ["bad name!"] }, /network\.allow\[0\]/],
      [{ allow: ["*."] }, /network\.allow\[0\]/],
      [{ allow: "x" }, /network\.allow/],
      [{ other: [] }, /network\.other/],
      ["open", /network/],
      [{ allow: [42] }, /network\.allow\[0\]/],
    ];
    for (const [v, re] of bad) {
      let err: unknown;
      try {
        parseNetwork(v);
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string })?.code, JSON.stringify(v)).toBe("SM_INVALID_OPTIONS");
      expect((err as Error).message).toMatch(re);
    }
    expect(parseNetwork(undefined)).toBe("public");
  });

  it("parses IPv6 and v4-mapped literals", () => {
    expect([...ipBytes("::ffff:1.2.3.4")!]).toEqual([1, 2, 3, 4]);
    expect(ipBytes("2001:db8::1")!.length).toBe(16);
    expect(ipBytes("nope")).toBeNull();
  });
});

describe("DNS and announced names", () => {
  it("parses a query and builds answers", () => {
    const q = Buffer.from("12340100000100000000000003777777076578616d706c6503636f6d0000010001", "hex");
    const pq = parseQuery(q)!;
    expect(pq).toMatchObject({ id: 0x1234, name: "www.example.com", qtype: DNS_A, qclass: 1 });
    const a = buildAnswer(pq, 0, ["198.18.0.2"]);
    expect(a.readUInt16BE(6)).toBe(1);
    expect([...a.subarray(a.length - 4)]).toEqual([198, 18, 0, 2]);
    expect(buildAnswer(pq, RCODE_NXDOMAIN).readUInt16BE(2) & 0xf).toBe(RCODE_NXDOMAIN);
    expect(parseQuery(Buffer.alloc(5))).toBeNull();
    expect(parseQuery(Buffer.concat([q.subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]))).toBeNull();
  });

  it("finds the HTTP Host and the TLS SNI", () => {
    expect(announcedName(Buffer.from("GET / HTTP/1.0\r\nHost: Other.smtest:8080\r\n\r\n"))).toBe(
      "other.smtest",
    );
    expect(announcedName(Buffer.from("GET / HTTP/1.0\r\n"))).toBeUndefined();
    expect(announcedName(Buffer.from("SSH-2.0-x\r\n"))).toBeNull();
    // a minimal ClientHello with server_name "a.example"
    const name = Buffer.from("a.example");
    const sniExt = Buffer.concat([
      Buffer.from([0, 0]),
      u16(name.length + 5),
      u16(name.length + 3),
      Buffer.from([0]),
      u16(name.length),
      name,
    ]);
    const body = Buffer.concat([
      Buffer.from([3, 3]),
      Buffer.alloc(32),
      Buffer.from([0]),
      u16(2),
      Buffer.from([0x13, 0x01]),
      Buffer.from([1, 0]),
      u16(sniExt.length),
      sniExt,
    ]);
    const hs = Buffer.concat([Buffer.from([1, 0]), u16(body.length), body]);
    const rec = Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
    expect(announcedName(rec)).toBe("a.example");
    expect(announcedName(rec.subarray(0, 20))).toBeUndefined();
  });
});

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

describe("CLI flags", async () => {
  const { networkFromFlags } = await import("./cli-flags");
  it("maps --network/--allow/--deny to the option, errors name the flag entry", () => {
    expect(networkFromFlags({})).toBeUndefined();
    expect(networkFromFlags({ network: "none" })).toBe("none");
    expect(networkFromFlags({ allow: ["pypi.org:443"], deny: ["10.0.0.0/8"] })).toEqual({
      allow: ["pypi.org:443"],
      deny: ["10.0.0.0/8"],
    });
    expect(networkFromFlags({ network: "public", deny: ["x.com"] })).toEqual({ deny: ["x.com"] });
    expect(() => networkFromFlags({ allow: ["ok.com", "1.2.3.4/40"] })).toThrow(/--allow\[1\]/);
    expect(() => networkFromFlags({ network: "none", allow: ["ok.com"] })).toThrow(/--network/);
    expect(() => networkFromFlags({ network: "open" })).toThrow(/--network/);
  });
});
