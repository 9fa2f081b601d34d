import { Duplex } from "node:stream";
import { decode as cborxDecode } from "cbor-x";
import { describe, expect, it } from "vitest";
import { type CborValue, decodeCbor, encodeCbor } from "./cbor";
import { AgentClient } from "./client";
import { isAgentError } from "./errors";
import { decodeFrame, encodeFrame, validateResult } from "./frames";
import { OPS, parseRequestArgs, RequestError } from "./ops";
import { FrameReader } from "./reader";
import { loadVectors } from "./test-helpers";

/** Deterministic PRNG (mulberry32) so a failure is reproducible from the seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const vectors = loadVectors();
const seeds = vectors.filter((v) => !v.incomplete).map((v) => Buffer.from(v.hex, "hex"));

function mutate(r: () => number, src: Buffer): Buffer {
  let b = Buffer.from(src);
  const n = 1 + Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const op = Math.floor(r() * 6);
    const pos = Math.floor(r() * Math.max(1, b.length));
    if (op === 0 && b.length > 0) b[pos] = Math.floor(r() * 256);
    else if (op === 1 && b.length > 0) b[pos] = b[pos]! ^ (1 << Math.floor(r() * 8));
    else if (op === 2)
      b = Buffer.concat([b.subarray(0, pos), Buffer.from([Math.floor(r() * 256)]), b.subarray(pos)]);
    else if (op === 3) b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + 1)]);
    else if (op === 4) b = b.subarray(0, pos);
    else if (b.length >= 4) b.writeUInt32BE(Math.max(0, b.length - 4 + Math.floor(r() * 9) - 4), 0); // fix up or skew the prefix
  }
  return b;
}

/** Runs one input through the reader, the frame decoder, result and args schemas. */
function exercise(input: Buffer): void {
  const bodies: Buffer[] = [];
  const reader = new FrameReader({ onFrame: (b) => bodies.push(b), onError: () => {} });
  reader.push(input);
  for (const body of bodies) {
    for (const dir of ["host-to-agent", "agent-to-host"] as const) {
      try {
        const f = decodeFrame(body, dir);
        if (f.t === "res" && f.result !== undefined)
          for (const op of OPS) tryOnly(() => validateResult(op, f.result!));
        if (f.t === "req") tryOnly(() => parseRequestArgs(f.op, f.args));
      } catch (e) {
        if (!isAgentError(e)) throw e;
        expect(e.code).toBe("SM_AGENT_PROTOCOL");
      }
    }
  }
}
function tryOnly(fn: () => void) {
  try {
    fn();
  } catch (e) {
    if (!isAgentError(e) && !(e instanceof RequestError)) throw e;
  }
}

function randomValue(r: () => number, depth: number): CborValue {
  const k = Math.floor(r() * (depth > 4 ? 6 : 9));
  switch (k) {
    case 0:
      return Math.floor(r() * 2 ** Math.floor(r() * 53));
    case 1:
      return -Math.floor(r() * 2 ** Math.floor(r() * 53)) - 1;
    case 2:
      return String.fromCodePoint(
        ...Array.from({ length: Math.floor(r() * 8) }, () => Math.floor(r() * 0xd7ff) + 1),
      );
    case 3:
      return Buffer.from(Array.from({ length: Math.floor(r() * 16) }, () => Math.floor(r() * 256)));
    case 4:
      return r() < 0.5;
    case 5:
      return null;
    case 6:
    case 7:
      return Array.from({ length: Math.floor(r() * 5) }, () => randomValue(r, depth + 1));
    default: {
      const o: Record<string, CborValue> = {};
      for (let i = Math.floor(r() * 5); i > 0; i--)
        o[`k${Math.floor(r() * 100)}`] = randomValue(r, depth + 1);
      return o as CborValue;
    }
  }
}

describe("fuzz (bounded)", () => {
  it("random bytes never crash or hang the decoder", () => {
    const r = rng(1);
    const deadline = Date.now() + 2500;
    let n = 0;
    for (; n < 30_000 && Date.now() < deadline; n++) {
      const len = Math.floor(r() * 96);
      const body = Buffer.from(Array.from({ length: len }, () => Math.floor(r() * 256)));
      try {
        decodeCbor(body);
      } catch (e) {
        expect(isAgentError(e)).toBe(true);
      }
      const framed = Buffer.alloc(4 + len);
      framed.writeUInt32BE(len, 0);
      body.copy(framed, 4);
      exercise(framed);
    }
    expect(n).toBeGreaterThan(1000);
  });

  it("mutated vectors never crash or hang the reader, decoder or schemas", () => {
    const r = rng(2);
    const deadline = Date.now() + 3000;
    let n = 0;
    for (; n < 40_000 && Date.now() < deadline; n++)
      exercise(mutate(r, seeds[Math.floor(r() * seeds.length)]!));
    expect(n).toBeGreaterThan(1000);
  });

  it("huge declared lengths fail fast without allocating", () => {
    for (const hex of [
      "9bffffffffffffffff",
      "bbffffffffffffffff",
      "5bffffffffffffffff",
      "7b00000000ffffffff",
      "9a7fffffff00",
    ]) {
      const t0 = performance.now();
      expect(() => decodeCbor(Buffer.from(hex, "hex"))).toThrowError(/exceeds the frame|truncated/);
      expect(performance.now() - t0).toBeLessThan(50);
    }
  });

  it("random values round-trip and agree with cbor-x (differential)", () => {
    const r = rng(3);
    for (let i = 0; i < 3000; i++) {
      const v = randomValue(r, 0);
      const bytes = encodeCbor(v as never);
      const back = decodeCbor(bytes);
      expect(back).toEqual(v);
      const other = cborxDecode(bytes);
      expect(normalize(other)).toEqual(normalize(back));
    }
  });

  it("an AgentClient fed random and mutated agent frames never throws: it stays connected or fails cleanly", async () => {
    const r = rng(4);
    const agentSeeds = vectors
      .filter((v) => !v.incomplete && v.direction !== "host-to-agent")
      .map((v) => Buffer.from(v.hex, "hex"));
    let failed = 0;
    for (let session = 0; session < 120; session++) {
      const [hostSide, agentSide] = duplexPair();
      const client = new AgentClient(hostSide, { helloTimeoutMs: 2000 });
      const states: string[] = [];
      client.on("failed", (e) => states.push(e.code));
      // answer the hello like an agent, then send garbage
      const reader = new FrameReader({
        onFrame: (b) => {
          try {
            const f = decodeFrame(b, "host-to-agent");
            if (f.t === "hello" && "host" in f && states.length === 0) {
              agentSide.write(
                encodeFrame({
                  t: "hello",
                  v: 1,
                  agent: "fuzz",
                  caps: [],
                  maxFrame: 5242880,
                  window: 65536,
                  ready: true,
                  listening: null,
                  bootMs: 0,
                  nonce: f.nonce,
                }),
              );
            }
          } catch {}
        },
        onError: () => {},
      });
      agentSide.on("data", (c: Buffer) => reader.push(c));
      await client.connect();
      const ping = client.ping().catch((e: unknown) => e);
      for (let k = 0; k < 5; k++) {
        agentSide.write(
          r() < 0.8
            ? mutate(r, agentSeeds[Math.floor(r() * agentSeeds.length)]!)
            : Buffer.from([Math.floor(r() * 256)]),
        );
      }
      await new Promise((res) => setImmediate(res));
      expect(["connected", "failed"]).toContain(client.state);
      if (client.state === "failed") {
        failed++;
        const e = await ping;
        expect(isAgentError(e)).toBe(true);
        expect(["SM_AGENT_PROTOCOL", "SM_AGENT_LOST"]).toContain((e as { code: string }).code);
      }
      client.close();
      agentSide.destroy();
    }
    expect(failed).toBeGreaterThan(10);
  });
});

function normalize(v: unknown): unknown {
  // cbor-x returns bigint for every 8-byte integer; ours only above 2^53
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER))
    return Number(v);
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString("hex") };
  if (Array.isArray(v)) return v.map(normalize);
  if (v instanceof Map) return normalize(Object.fromEntries(v));
  if (typeof v === "object" && v !== null) {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v)) o[k] = normalize((v as Record<string, unknown>)[k]);
    return o;
  }
  return v;
}

/** Two in-memory Duplex ends connected to each other. */
function duplexPair(): [Duplex, Duplex] {
  let a: Duplex | null = null;
  let b: Duplex | null = null;
  const make = (other: () => Duplex | null) =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        const o = other();
        if (o !== null && !o.destroyed) o.push(chunk);
        cb();
      },
      final(cb) {
        other()?.push(null);
        cb();
      },
    });
  a = make(() => b);
  b = make(() => a);
  return [a, b];
}
