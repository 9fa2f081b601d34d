import { describe, expect, it } from "vitest";
import { decodeCbor, encodeCbor, encodeDataHeader } from "./cbor";
import { decodeFrame, encodeFrame, type Frame, validateResult } from "./frames";
import { parseRequestArgs } from "./ops";

const b = (s: string) => Buffer.from(s);

/** One frame of every kind, with every op's request and result. */
const hostFrames: Frame[] = [
  { t: "hello", v: 1, host: "0.1.0", maxFrame: 5242880, window: 262144, nonce: 7 },
  { t: "req", id: 1, op: "ping", args: {} },
  {
    t: "req",
    id: 2,
    op: "exec",
    args: {
      argv: ["ls", "-l"],
      env: { A: "1" },
      cwd: "/",
      stage: [{ path: "/a", data: b("x"), mode: 420 }],
      timeoutMs: 5,
      chain: { argv: ["true"] },
      tty: false,
      cols: 80,
      rows: 24,
      chOut: 1,
      chErr: 2,
    },
  },
  { t: "req", id: 3, op: "spawn", args: { argv: ["sh"], tty: true, cols: 100, rows: 40, chOut: 3, chIn: 4 } },
  { t: "req", id: 4, op: "signal", args: { pid: 9, signum: 2 } },
  { t: "req", id: 5, op: "resize", args: { pid: 9, cols: 1, rows: 65535 } },
  { t: "req", id: 6, op: "close-stdin", args: { pid: 9 } },
  { t: "req", id: 7, op: "write-file", args: { path: "/f", data: b("data"), mode: 0o600, mkdirs: false } },
  { t: "req", id: 8, op: "read-file", args: { path: "/f" } },
  { t: "req", id: 9, op: "workload-signal", args: { signum: 15 } },
  { t: "req", id: 10, op: "tcp-connect", args: { port: 80, ch: 5 } },
  {
    t: "req",
    id: 11,
    op: "resume",
    args: { timeNs: 18_446_744_073_709_551_615n, entropy: Buffer.alloc(512, 1) },
  },
  { t: "req", id: 12, op: "shutdown", args: {} },
  { t: "req", id: 4294967295, op: "stats", args: {} },
];
const agentFrames: Frame[] = [
  {
    t: "hello",
    v: 1,
    agent: "a",
    caps: ["exec"],
    maxFrame: 1048576,
    window: 65536,
    ready: false,
    listening: 8080,
    bootMs: 3,
    nonce: 7,
  },
  { t: "res", id: 1, result: {} },
  { t: "res", id: 2, error: { code: "ENOENT", message: "nope" } },
  { t: "evt", ev: "ready", data: { bootMs: 1 } },
  { t: "evt", ev: "listening", data: { port: 80 } },
  { t: "evt", ev: "exit", data: { pid: 1, exitCode: -1, signal: 9, timedOut: false, peakRssKib: 10 } },
  { t: "evt", ev: "workload-exit", data: { exitCode: 255, signal: null } },
];
const both: Frame[] = [
  { t: "data", ch: 1, d: b("payload") },
  { t: "credit", ch: 4294967295, n: 131072 },
  { t: "eof", ch: 2 },
  { t: "close", ch: 3 },
  { t: "fatal", code: "SM_BAD_CBOR", message: "m" },
];

const results: Record<string, Record<string, unknown>> = {
  exec: { exitCode: 0, signal: null, timedOut: false, peakRssKib: 1, stdout: b("o"), stderr: b("") },
  spawn: { pid: 77 },
  "read-file": { data: b("x"), mode: 0o755 },
  stats: { memTotalKib: 1, memAvailKib: 1, uptimeMs: 1, loadAvg1Milli: 0 },
};

describe("every message round-trips", () => {
  const cases: Array<[Frame, "host-to-agent" | "agent-to-host"]> = [
    ...hostFrames.map((f) => [f, "host-to-agent"] as [Frame, "host-to-agent"]),
    ...agentFrames.map((f) => [f, "agent-to-host"] as [Frame, "agent-to-host"]),
    ...both.flatMap((f) => [
      [f, "host-to-agent"] as [Frame, "host-to-agent"],
      [f, "agent-to-host"] as [Frame, "agent-to-host"],
    ]),
  ];
  for (const [frame, dir] of cases) {
    it(`${frame.t}${"op" in frame ? ` ${frame.op}` : ""}${"ev" in frame ? ` ${frame.ev}` : ""} (${dir})`, () => {
      const bytes = encodeFrame(frame);
      expect(bytes.readUInt32BE(0)).toBe(bytes.length - 4);
      expect(bytes.subarray(5, 7).toString("hex")).toBe("6174"); // map header, then the key "t" first
      const back = decodeFrame(bytes.subarray(4), dir);
      expect(back).toEqual(Object.fromEntries(Object.entries(frame).filter(([, v]) => v !== undefined)));
      if (back.t === "req") expect(() => parseRequestArgs(back.op, back.args)).not.toThrow();
    });
  }

  for (const [op, result] of Object.entries(results)) {
    it(`res ${op} result validates`, () => {
      const back = decodeFrame(
        encodeFrame({ t: "res", id: 1, result: result as never }).subarray(4),
        "agent-to-host",
      );
      expect(back.t === "res" && back.result).toEqual(result);
      validateResult(op, (back as unknown as { result: never }).result);
    });
  }

  it("the data header + payload equals the generic encoding", () => {
    const payload = Buffer.alloc(70_000, 3);
    const split = Buffer.concat([encodeDataHeader(4_000_000_000, payload.length), payload]);
    expect(split.equals(encodeFrame({ t: "data", ch: 4_000_000_000, d: payload }))).toBe(true);
  });

  it("integers at the edges of the subset", () => {
    for (const v of [
      0,
      23,
      24,
      255,
      256,
      65535,
      65536,
      2 ** 32 - 1,
      2 ** 32,
      Number.MAX_SAFE_INTEGER,
      -1,
      -24,
      -25,
      -(2 ** 32),
      Number.MIN_SAFE_INTEGER,
    ]) {
      expect(decodeCbor(encodeCbor(v))).toBe(v);
    }
    for (const v of [2n ** 64n - 1n, 2n ** 53n, -(2n ** 63n), -(2n ** 53n) - 1n])
      expect(decodeCbor(encodeCbor(v))).toBe(v);
    expect(() => encodeCbor(1.5)).toThrowError(/no floats/);
    expect(() => encodeCbor(2n ** 64n)).toThrowError(/2\^64/);
    expect(encodeCbor("\u00e9").toString("hex")).toBe("62c3a9");
    expect(decodeCbor(Buffer.from("63efbbbf", "hex"))).toBe("\ufeff"); // a BOM is kept, not stripped
  });
});
