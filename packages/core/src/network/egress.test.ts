import { createServer, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EGRESS_LIMITS, Egress, type EgressPort } from "./egress";
import { compilePolicy } from "./policy";

// A real TCP server on the host's loopback (named explicitly by the policy) holding every connection.
const held: Socket[] = [];
const server = createServer((s) => held.push(s));
let port = 0;
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  port = (server.address() as { port: number }).port;
});
afterAll(() => {
  for (const s of held) s.destroy();
  server.close();
});

function fakeAgent() {
  let dial: ((d: { id: number; addr: string; port: number }) => void) | undefined;
  let dns: ((q: { id: number; q: Buffer }) => void) | undefined;
  const refused: string[] = [];
  const answers: Buffer[] = [];
  let accepted = 0;
  const port_: EgressPort = {
    onDial: (cb) => {
      dial = cb;
    },
    onDns: (cb) => {
      dns = cb;
    },
    accept: async () => {
      accepted++;
      return new Duplex({
        read() {},
        write(_c, _e, cb) {
          cb();
        },
      });
    },
    refuse: async (_id, code) => {
      refused.push(code);
    },
    dnsAnswer: async (_id, a) => {
      answers.push(a);
    },
  };
  return {
    port: port_,
    dial: (...a: [number, string, number]) => dial!({ id: a[0], addr: a[1], port: a[2] }),
    dns: (id: number, q: Buffer) => dns!({ id, q }),
    refused,
    answers,
    get accepted() {
      return accepted;
    },
  };
}

const until = async (f: () => boolean) => {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 20));
};

describe("Egress limits (per VM)", () => {
  it("a guest opening 400 connections gets at most maxConnections host sockets; the rest are refused", async () => {
    const a = fakeAgent();
    const e = new Egress(a.port, compilePolicy({ allow: ["127.0.0.1"] }), 1);
    for (let i = 1; i <= 400; i++) a.dial(i, "127.0.0.1", port);
    await until(() => a.accepted + a.refused.length >= 400);
    expect(a.accepted).toBeLessThanOrEqual(EGRESS_LIMITS.maxConnections);
    expect(a.refused.length).toBeGreaterThanOrEqual(400 - EGRESS_LIMITS.maxConnections);
    expect(a.refused.every((c) => c === "ECONNREFUSED")).toBe(true);
    e.close();
  });

  it("the host's loopback is refused unless named; a DNS flood is dropped beyond the rate", async () => {
    const a = fakeAgent();
    const e = new Egress(a.port, compilePolicy("public"), 2);
    a.dial(1, "127.0.0.1", port);
    await until(() => a.refused.length === 1);
    expect(a.refused).toEqual(["ECONNREFUSED"]);
    const q = Buffer.from("123401000001000000000000096c6f63616c686f73740000010001", "hex"); // localhost A
    for (let i = 1; i <= 500; i++) a.dns(i, q);
    expect(e.counts.dnsDropped).toBeGreaterThanOrEqual(500 - 2 * EGRESS_LIMITS.dnsPerSecond);
    await until(() => a.answers.length > 0);
    expect(a.answers.length).toBeLessThanOrEqual(2 * EGRESS_LIMITS.dnsPerSecond);
    e.close();
  });
});
