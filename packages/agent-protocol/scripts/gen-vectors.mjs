// Generates test-vectors/vectors.json (SPEC.md section 13). Self-contained on purpose:
// its tiny CBOR encoder is independent of the package's codec, so the vectors test the codec.
// Run: node packages/agent-protocol/scripts/gen-vectors.mjs
import { writeFileSync } from "node:fs";

class Raw {
  constructor(hex) {
    this.hex = hex;
  }
}

function head(major, n) {
  const m = major << 5;
  if (typeof n === "bigint") {
    const b = Buffer.alloc(9);
    b[0] = m | 27;
    b.writeBigUInt64BE(n, 1);
    return b;
  }
  if (n < 24) return Buffer.from([m | n]);
  if (n < 0x100) return Buffer.from([m | 24, n]);
  if (n < 0x10000) return Buffer.from([m | 25, n >> 8, n & 0xff]);
  if (n < 0x100000000) {
    const b = Buffer.alloc(5);
    b[0] = m | 26;
    b.writeUInt32BE(n, 1);
    return b;
  }
  return head(major, BigInt(n));
}

function enc(v) {
  if (v instanceof Raw) return Buffer.from(v.hex, "hex");
  if (v === null) return Buffer.from([0xf6]);
  if (v === true) return Buffer.from([0xf5]);
  if (v === false) return Buffer.from([0xf4]);
  if (typeof v === "bigint") return v >= 0n ? head(0, v) : head(1, -1n - v);
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new Error("no floats");
    return v >= 0 ? head(0, v) : head(1, -1 - v);
  }
  if (typeof v === "string") {
    const b = Buffer.from(v, "utf8");
    return Buffer.concat([head(3, b.length), b]);
  }
  if (Buffer.isBuffer(v)) return Buffer.concat([head(2, v.length), v]);
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map(enc)]);
  if (v instanceof Map) {
    const parts = [head(5, v.size)];
    for (const [k, x] of v) parts.push(enc(k), enc(x));
    return Buffer.concat(parts);
  }
  const keys = Object.keys(v);
  const parts = [head(5, keys.length)];
  for (const k of keys) parts.push(enc(k), enc(v[k]));
  return Buffer.concat(parts);
}

function frameHex(body) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]).toString("hex");
}

/** JSON form of a value: bytes → {$bytes}, unsafe ints → {$int}. Maps → plain objects. */
function meaning(v) {
  if (v instanceof Raw) throw new Error("raw has no meaning");
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "bigint") {
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : { $int: v.toString() };
  }
  if (typeof v === "number") return v;
  if (Buffer.isBuffer(v)) return { $bytes: v.toString("hex") };
  if (Array.isArray(v)) return v.map(meaning);
  const out = {};
  const entries = v instanceof Map ? [...v] : Object.entries(v);
  for (const [k, x] of entries) out[k] = meaning(x);
  return out;
}

const vectors = [];
const H2A = "host-to-agent";
const A2H = "agent-to-host";

function valid(name, value, extra = {}) {
  vectors.push({ name, hex: frameHex(enc(value)), valid: true, ...extra, meaning: meaning(value) });
}
/** A valid frame whose bytes are not what the reference encoder would produce (given as raw hex body). */
function validRaw(name, bodyHex, value, extra = {}) {
  vectors.push({
    name,
    hex: frameHex(Buffer.from(bodyHex.replace(/\s+/g, ""), "hex")),
    valid: true,
    canonical: false,
    ...extra,
    meaning: meaning(value),
  });
}
function invalid(name, value, error, extra = {}) {
  vectors.push({ name, hex: frameHex(enc(value)), valid: false, ...extra, error });
}
function invalidBody(name, bodyHex, error, extra = {}) {
  vectors.push({
    name,
    hex: frameHex(Buffer.from(bodyHex.replace(/\s+/g, ""), "hex")),
    valid: false,
    ...extra,
    error,
  });
}
function invalidHex(name, hex, error, extra = {}) {
  vectors.push({ name, hex, valid: false, ...extra, error });
}

const bytes = (s) => Buffer.from(s);
const hexb = (h) => Buffer.from(h, "hex");

// ---------- valid: handshake ----------
valid(
  "hello-host",
  { t: "hello", v: 1, host: "0.1.0", maxFrame: 5242880, window: 262144, nonce: 305419896 },
  { direction: H2A, canonical: true },
);
valid(
  "hello-host-no-nonce",
  { t: "hello", v: 1, host: "0.1.0", maxFrame: 1048576, window: 65536 },
  {
    direction: H2A,
    canonical: true,
  },
);
valid(
  "hello-agent-booting",
  {
    t: "hello",
    v: 1,
    agent: "0.1.0",
    caps: ["exec", "spawn", "signal", "resize", "close-stdin", "write-file", "read-file", "tty", "chain"],
    maxFrame: 5242880,
    window: 262144,
    ready: false,
    listening: null,
    bootMs: 12,
    nonce: 305419896,
  },
  { direction: A2H, canonical: true },
);
valid(
  "hello-agent-ready-listening",
  {
    t: "hello",
    v: 1,
    agent: "0.1.0",
    caps: [],
    maxFrame: 5242880,
    window: 16777216,
    ready: true,
    listening: 80,
    bootMs: 4321,
  },
  { direction: A2H, canonical: true },
);

// ---------- valid: requests ----------
valid("req-ping", { t: "req", id: 1, op: "ping", args: {} }, { direction: H2A, canonical: true });
valid(
  "req-exec-full",
  {
    t: "req",
    id: 4294967295,
    op: "exec",
    args: {
      argv: ["sh", "-c", "echo hi; echo err >&2"],
      env: { FOO: "bar", LANG: "C.UTF-8" },
      cwd: "/tmp",
      user: "1000:1000",
      stage: [{ path: "/tmp/in.txt", data: bytes("payload"), mode: 420 }],
      timeoutMs: 60000,
      chain: { argv: ["cat", "/tmp/in.txt"], env: { X: "1" }, cwd: "/" },
      tty: false,
      cols: 80,
      rows: 24,
      chOut: 1,
      chErr: 2,
    },
  },
  { direction: H2A, canonical: true },
);
valid(
  "req-exec-minimal",
  { t: "req", id: 2, op: "exec", args: { argv: ["true"], chOut: 3, chErr: 4 } },
  { direction: H2A, canonical: true },
);
valid(
  "req-spawn-tty",
  {
    t: "req",
    id: 3,
    op: "spawn",
    args: {
      argv: ["/bin/sh"],
      env: {},
      cwd: "/",
      tty: true,
      cols: 132,
      rows: 43,
      chOut: 5,
      chIn: 6,
      chain: null,
    },
  },
  { direction: H2A, canonical: true },
);
valid(
  "req-spawn-pipes",
  { t: "req", id: 4, op: "spawn", args: { argv: ["cat"], chOut: 7, chErr: 8, chIn: 9 } },
  { direction: H2A, canonical: true },
);
valid(
  "req-signal",
  { t: "req", id: 5, op: "signal", args: { pid: 42, signum: 15 } },
  { direction: H2A, canonical: true },
);
valid(
  "req-resize",
  { t: "req", id: 6, op: "resize", args: { pid: 42, cols: 100, rows: 30 } },
  {
    direction: H2A,
    canonical: true,
  },
);
valid(
  "req-close-stdin",
  { t: "req", id: 7, op: "close-stdin", args: { pid: 42 } },
  { direction: H2A, canonical: true },
);
valid(
  "req-write-file",
  {
    t: "req",
    id: 8,
    op: "write-file",
    args: { path: "/etc/motd", data: bytes("hello\n"), mode: 384, mkdirs: true },
  },
  { direction: H2A, canonical: true },
);
valid(
  "req-read-file",
  { t: "req", id: 9, op: "read-file", args: { path: "/etc/hostname" } },
  {
    direction: H2A,
    canonical: true,
  },
);
valid(
  "req-workload-signal",
  { t: "req", id: 10, op: "workload-signal", args: { signum: 1 } },
  {
    direction: H2A,
    canonical: true,
  },
);
valid(
  "req-tcp-connect",
  { t: "req", id: 11, op: "tcp-connect", args: { port: 8080, ch: 10 } },
  {
    direction: H2A,
    canonical: true,
  },
);
valid(
  "req-resume",
  {
    t: "req",
    id: 12,
    op: "resume",
    args: {
      timeNs: 1795420800123456789n,
      entropy: hexb("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
    },
  },
  { direction: H2A, canonical: true },
);
valid("req-shutdown", { t: "req", id: 13, op: "shutdown", args: {} }, { direction: H2A, canonical: true });
// egress (SPEC 6.5, since 1.4.0)
valid(
  "req-dial-answer-accept",
  { t: "req", id: 40, op: "dial-answer", args: { id: 7, ch: 30 } },
  { direction: H2A, canonical: true },
);
valid(
  "req-dial-answer-refuse",
  { t: "req", id: 41, op: "dial-answer", args: { id: 8, error: "ECONNREFUSED" } },
  { direction: H2A, canonical: true },
);
valid(
  "req-dial-answer-both",
  { t: "req", id: 42, op: "dial-answer", args: { id: 8, ch: 31, error: "EACCES" } },
  { direction: H2A, canonical: true, resError: "EINVAL", note: "exactly one of ch and error" },
);
valid(
  "req-dial-answer-neither",
  { t: "req", id: 43, op: "dial-answer", args: { id: 8 } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid(
  "req-dns-answer",
  { t: "req", id: 44, op: "dns-answer", args: { id: 3, a: hexb("123481800001000000000000") } },
  { direction: H2A, canonical: true },
);
valid(
  "req-dns-answer-too-short",
  { t: "req", id: 45, op: "dns-answer", args: { id: 3, a: hexb("1234") } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid("req-stats", { t: "req", id: 14, op: "stats", args: {} }, { direction: H2A, canonical: true });
valid(
  "req-unknown-op",
  { t: "req", id: 15, op: "frobnicate", args: { x: 1 } },
  {
    direction: H2A,
    canonical: true,
    resError: "SM_UNKNOWN_OP",
    note: "valid frame; the agent answers res error SM_UNKNOWN_OP (not fatal)",
  },
);
valid(
  "req-exec-argv-not-array",
  { t: "req", id: 16, op: "exec", args: { argv: "ls", chOut: 1, chErr: 2 } },
  {
    direction: H2A,
    canonical: true,
    resError: "EINVAL",
    note: "valid frame; bad args → res error EINVAL",
  },
);
valid(
  "req-resume-entropy-too-short",
  { t: "req", id: 17, op: "resume", args: { timeNs: 1, entropy: hexb("0011") } },
  {
    direction: H2A,
    canonical: true,
    resError: "EINVAL",
  },
);
valid(
  "req-exec-missing-chout",
  { t: "req", id: 18, op: "exec", args: { argv: ["true"], chErr: 2 } },
  {
    direction: H2A,
    canonical: true,
    resError: "EINVAL",
  },
);
valid(
  "req-signal-signum-out-of-range",
  { t: "req", id: 19, op: "signal", args: { pid: 1, signum: 65 } },
  {
    direction: H2A,
    canonical: true,
    resError: "EINVAL",
    note: "signum out of 1..64",
  },
);

// fs-attach / fs-detach (SPEC 6.4, since 1.1.0)
valid(
  "req-fs-attach",
  { t: "req", id: 40, op: "fs-attach", args: { tag: "work", ch: 21, path: "/work" } },
  { direction: H2A, canonical: true },
);
valid(
  "req-fs-attach-no-path",
  { t: "req", id: 41, op: "fs-attach", args: { tag: "Proj_1.v-2", ch: 22, path: null } },
  { direction: H2A, canonical: true, note: "path null = absent" },
);
valid(
  "req-fs-detach",
  { t: "req", id: 42, op: "fs-detach", args: { tag: "work" } },
  { direction: H2A, canonical: true },
);
valid(
  "req-fs-attach-tag-too-long",
  { t: "req", id: 43, op: "fs-attach", args: { tag: "a".repeat(36), ch: 23 } },
  { direction: H2A, canonical: true, resError: "EINVAL", note: "tag longer than 35 bytes" },
);
valid(
  "req-fs-attach-tag-max-length",
  { t: "req", id: 44, op: "fs-attach", args: { tag: "b".repeat(35), ch: 24 } },
  { direction: H2A, canonical: true, note: "35 bytes is allowed" },
);
valid(
  "req-fs-attach-tag-bad-chars",
  { t: "req", id: 45, op: "fs-attach", args: { tag: "a/b", ch: 25 } },
  { direction: H2A, canonical: true, resError: "EINVAL", note: "tag outside [A-Za-z0-9._-]" },
);
valid(
  "req-fs-attach-tag-dotdot",
  { t: "req", id: 46, op: "fs-attach", args: { tag: "..", ch: 26 } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid(
  "req-fs-attach-tag-empty",
  { t: "req", id: 47, op: "fs-attach", args: { tag: "", ch: 27 } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid(
  "req-fs-attach-missing-ch",
  { t: "req", id: 48, op: "fs-attach", args: { tag: "work" } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid(
  "req-fs-attach-relative-path",
  { t: "req", id: 49, op: "fs-attach", args: { tag: "work", ch: 28, path: "work" } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid(
  "req-fs-detach-tag-not-text",
  { t: "req", id: 50, op: "fs-detach", args: { tag: 7 } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);
valid(
  "req-fs-detach-tag-space",
  { t: "req", id: 51, op: "fs-detach", args: { tag: "my share" } },
  { direction: H2A, canonical: true, resError: "EINVAL" },
);

// ---------- valid: responses ----------
valid("res-ping", { t: "res", id: 1, result: {} }, { direction: A2H, canonical: true, op: "ping" });
valid(
  "res-fs-attach",
  { t: "res", id: 40, result: {} },
  { direction: A2H, canonical: true, op: "fs-attach" },
);
valid(
  "res-exec-ok",
  {
    t: "res",
    id: 2,
    result: {
      exitCode: 0,
      signal: null,
      timedOut: false,
      peakRssKib: 1234,
      stdout: bytes("hi\n"),
      stderr: bytes(""),
    },
  },
  { direction: A2H, canonical: true, op: "exec" },
);
valid(
  "res-exec-timeout",
  {
    t: "res",
    id: 3,
    result: { exitCode: -1, signal: 9, timedOut: true, peakRssKib: 0, stdout: bytes(""), stderr: bytes("") },
  },
  { direction: A2H, canonical: true, op: "exec" },
);
valid(
  "res-exec-not-found",
  {
    t: "res",
    id: 4,
    result: {
      exitCode: 127,
      signal: null,
      timedOut: false,
      peakRssKib: 0,
      stdout: bytes(""),
      stderr: bytes("sm-agent: nope: command not found\n"),
    },
  },
  { direction: A2H, canonical: true, op: "exec" },
);
valid(
  "res-spawn",
  { t: "res", id: 5, result: { pid: 77 } },
  { direction: A2H, canonical: true, op: "spawn" },
);
valid(
  "res-read-file",
  { t: "res", id: 6, result: { data: bytes("sm-1\n"), mode: 420 } },
  {
    direction: A2H,
    canonical: true,
    op: "read-file",
  },
);
valid(
  "res-stats",
  {
    t: "res",
    id: 7,
    result: { memTotalKib: 245760, memAvailKib: 200000, uptimeMs: 5000, loadAvg1Milli: 130 },
  },
  { direction: A2H, canonical: true, op: "stats" },
);
valid(
  "res-error-enoent",
  { t: "res", id: 8, error: { code: "ENOENT", message: "/nope: no such file" } },
  {
    direction: A2H,
    canonical: true,
    op: "read-file",
  },
);
valid(
  "res-error-file-too-large",
  { t: "res", id: 9, error: { code: "SM_FILE_TOO_LARGE", message: "5000000 > 4194304" } },
  {
    direction: A2H,
    canonical: true,
    op: "read-file",
  },
);
valid(
  "res-error-unknown-errno",
  { t: "res", id: 10, error: { code: "ENOSPC", message: "disk full" } },
  {
    direction: A2H,
    canonical: true,
    op: "write-file",
  },
);

// ---------- valid: events ----------
valid("evt-ready", { t: "evt", ev: "ready", data: { bootMs: 850 } }, { direction: A2H, canonical: true });
valid(
  "evt-listening",
  { t: "evt", ev: "listening", data: { port: 80 } },
  { direction: A2H, canonical: true },
);
valid(
  "evt-exit-signal",
  { t: "evt", ev: "exit", data: { pid: 77, exitCode: -1, signal: 15, timedOut: false, peakRssKib: 512 } },
  { direction: A2H, canonical: true },
);
valid(
  "evt-exit-code",
  { t: "evt", ev: "exit", data: { pid: 78, exitCode: 3, signal: null, timedOut: false, peakRssKib: 512 } },
  { direction: A2H, canonical: true },
);
valid(
  "evt-workload-exit",
  { t: "evt", ev: "workload-exit", data: { exitCode: 0, signal: null } },
  {
    direction: A2H,
    canonical: true,
  },
);
valid(
  "evt-unknown-ignored",
  { t: "evt", ev: "future-thing", data: { anything: [1, "x"] } },
  {
    direction: A2H,
    canonical: true,
    note: "unknown ev: ignored",
  },
);

// ---------- valid: channels, fatal ----------
valid("data", { t: "data", ch: 1, d: bytes("hello world\n") }, { canonical: true });
valid("data-binary", { t: "data", ch: 4294967295, d: hexb("00ff10fe") }, { canonical: true });
valid("credit", { t: "credit", ch: 1, n: 131072 }, { canonical: true });
valid("eof", { t: "eof", ch: 2 }, { canonical: true });
valid("close", { t: "close", ch: 3 }, { canonical: true });
valid("fatal", { t: "fatal", code: "SM_BAD_CBOR", message: "duplicate map key" }, { canonical: true });

// ---------- valid: decoder leniency that the spec requires ----------
validRaw(
  "non-preferred-integer-widths",
  "a2 61 74 63 656f66 62 6368 1a 00000001",
  { t: "eof", ch: 1 },
  {
    note: "ch encoded as a 4-byte uint; decoders must accept non-shortest forms",
  },
);
validRaw(
  "non-preferred-length",
  "a2 61 74 78 03 656f66 62 6368 01",
  { t: "eof", ch: 1 },
  {
    note: "text length with a 1-byte argument",
  },
);
validRaw(
  "t-not-first-key",
  "a2 62 6368 01 61 74 63 656f66",
  { t: "eof", ch: 1 },
  {
    note: "senders put t first; receivers must not depend on it",
  },
);
valid(
  "unknown-keys-ignored",
  {
    t: "credit",
    ch: 1,
    n: 10,
    extra: [1, 2, { deep: null }],
    big: 18446744073709551615n,
    neg: -9223372036854775808n,
  },
  {
    canonical: true,
    note: "unknown keys are ignored; uint up to 2^64-1 and nint down to -2^63 are valid CBOR",
  },
);
valid(
  "proto-key-ignored",
  { t: "eof", ch: 5, __proto__x: 1, constructor: { prototype: 1 } },
  {
    canonical: true,
    note: "keys like constructor must not affect the decoder's objects",
  },
);
vectors.push({
  name: "proto-key-literal",
  hex: frameHex(
    enc(
      new Map([
        ["t", "eof"],
        ["ch", 6],
        ["__proto__", { polluted: true }],
      ]),
    ),
  ),
  valid: true,
  canonical: true,
  meaning: JSON.parse('{"t":"eof","ch":6,"__proto__":{"polluted":true}}'),
  note: "a key named __proto__ is just an (unknown, ignored) key; it must not change any prototype",
});
{
  // depth exactly 16: top map (1) > args map (2) > x: 14 nested arrays (3..16)
  let inner = [];
  for (let i = 0; i < 13; i++) inner = [inner];
  valid(
    "nesting-depth-16",
    { t: "req", id: 20, op: "ping", args: { x: inner } },
    {
      direction: H2A,
      canonical: true,
      note: "16 levels is the maximum",
    },
  );
}

// ---------- invalid: framing ----------
invalidHex("length-zero", "00000000", "SM_FRAME_EMPTY");
invalidHex("length-too-large", "00500001", "SM_FRAME_TOO_LARGE", {
  note: "5242881 > 5 MiB; rejected from the prefix alone, before any body byte arrives",
});
invalidHex("length-max-uint32", "ffffffff", "SM_FRAME_TOO_LARGE");
vectors.push({
  name: "incomplete-frame",
  hex: "0000000aa2617463656f66",
  valid: false,
  incomplete: true,
  note: "prefix says 10 bytes, only 7 follow: the receiver waits for more; if the stream ends here the session ends without fatal",
});
invalidBody("cbor-truncated-item", "a2 61 74 63 656f66 62 6368", "SM_BAD_CBOR", {
  note: "map declares 2 pairs, value missing",
});
invalidBody("cbor-trailing-bytes", "a2 61 74 63 656f66 62 6368 01 00", "SM_BAD_CBOR");
invalidBody("cbor-two-items", "a1 61 74 63 656f66 a1 61 74 63 656f66", "SM_BAD_CBOR");
invalidBody("bytes-length-beyond-frame", "a3 61 74 64 64617461 62 6368 01 61 64 5a 7fffffff", "SM_BAD_CBOR");
invalidBody("array-count-beyond-frame", "a2 61 74 63 656f66 61 78 9b 00000000ffffffff", "SM_BAD_CBOR");
invalidBody("map-count-beyond-frame", "bb 00000001 00000000", "SM_BAD_CBOR");

// ---------- invalid: not a frame ----------
invalid("not-a-map-array", [1, 2], "SM_BAD_FRAME");
invalid("not-a-map-text", "hello", "SM_BAD_FRAME");
invalid("not-a-map-uint", 7, "SM_BAD_FRAME");
invalid("not-a-map-null", null, "SM_BAD_FRAME");
invalid("missing-t", { ch: 1 }, "SM_BAD_FRAME");
invalid("t-not-text", { t: 1, ch: 1 }, "SM_BAD_FRAME");
invalid("t-bytes", { t: bytes("eof"), ch: 1 }, "SM_BAD_FRAME");
invalid("unknown-t", { t: "bogus", ch: 1 }, "SM_UNKNOWN_FRAME");
invalid("req-from-agent", { t: "req", id: 1, op: "ping", args: {} }, "SM_UNKNOWN_FRAME", { direction: A2H });
invalid("res-from-host", { t: "res", id: 1, result: {} }, "SM_UNKNOWN_FRAME", { direction: H2A });
invalid("evt-from-host", { t: "evt", ev: "ready", data: { bootMs: 1 } }, "SM_UNKNOWN_FRAME", {
  direction: H2A,
});

// ---------- invalid: wrong field types / ranges ----------
invalid("credit-ch-text", { t: "credit", ch: "1", n: 10 }, "SM_BAD_FRAME");
invalid("credit-n-zero", { t: "credit", ch: 1, n: 0 }, "SM_BAD_FRAME");
invalid("credit-n-negative", { t: "credit", ch: 1, n: -5 }, "SM_BAD_FRAME");
invalid("credit-missing-n", { t: "credit", ch: 1 }, "SM_BAD_FRAME");
invalid("data-d-text", { t: "data", ch: 1, d: "text" }, "SM_BAD_FRAME");
invalid("data-d-empty", { t: "data", ch: 1, d: bytes("") }, "SM_BAD_FRAME");
invalid("data-missing-ch", { t: "data", d: bytes("x") }, "SM_BAD_FRAME");
invalid("ch-zero", { t: "eof", ch: 0 }, "SM_BAD_FRAME");
invalid("ch-negative", { t: "eof", ch: -1 }, "SM_BAD_FRAME");
invalid("ch-too-large", { t: "close", ch: 4294967296 }, "SM_BAD_FRAME");
invalid("ch-bool", { t: "close", ch: true }, "SM_BAD_FRAME");
invalid("req-id-too-large", { t: "req", id: 4294967296, op: "ping", args: {} }, "SM_BAD_FRAME", {
  direction: H2A,
});
invalid("req-id-negative", { t: "req", id: -1, op: "ping", args: {} }, "SM_BAD_FRAME", { direction: H2A });
invalid("req-op-not-text", { t: "req", id: 1, op: 5, args: {} }, "SM_BAD_FRAME", { direction: H2A });
invalid("req-args-not-map", { t: "req", id: 1, op: "ping", args: [] }, "SM_BAD_FRAME", { direction: H2A });
invalid("req-missing-args", { t: "req", id: 1, op: "ping" }, "SM_BAD_FRAME", { direction: H2A });
invalid(
  "res-both-result-and-error",
  { t: "res", id: 1, result: {}, error: { code: "EIO", message: "x" } },
  "SM_BAD_FRAME",
  {
    direction: A2H,
  },
);
invalid("res-neither", { t: "res", id: 1 }, "SM_BAD_FRAME", { direction: A2H });
invalid("res-error-missing-message", { t: "res", id: 1, error: { code: "EIO" } }, "SM_BAD_FRAME", {
  direction: A2H,
});
invalid("res-error-code-empty", { t: "res", id: 1, error: { code: "", message: "x" } }, "SM_BAD_FRAME", {
  direction: A2H,
});
invalid("res-result-not-map", { t: "res", id: 1, result: 0 }, "SM_BAD_FRAME", { direction: A2H });
invalid(
  "res-exec-exitcode-text",
  {
    t: "res",
    id: 2,
    result: {
      exitCode: "0",
      signal: null,
      timedOut: false,
      peakRssKib: 0,
      stdout: bytes(""),
      stderr: bytes(""),
    },
  },
  "SM_BAD_FRAME",
  { direction: A2H, op: "exec" },
);
invalid(
  "res-exec-stdout-text",
  {
    t: "res",
    id: 2,
    result: { exitCode: 0, signal: null, timedOut: false, peakRssKib: 0, stdout: "hi", stderr: bytes("") },
  },
  "SM_BAD_FRAME",
  { direction: A2H, op: "exec" },
);
invalid(
  "res-exec-exitcode-out-of-range",
  {
    t: "res",
    id: 2,
    result: {
      exitCode: -2,
      signal: null,
      timedOut: false,
      peakRssKib: 0,
      stdout: bytes(""),
      stderr: bytes(""),
    },
  },
  "SM_BAD_FRAME",
  { direction: A2H, op: "exec" },
);
invalid("res-spawn-missing-pid", { t: "res", id: 5, result: {} }, "SM_BAD_FRAME", {
  direction: A2H,
  op: "spawn",
});
invalid("res-read-file-data-text", { t: "res", id: 6, result: { data: "x", mode: 420 } }, "SM_BAD_FRAME", {
  direction: A2H,
  op: "read-file",
});
invalid(
  "evt-exit-pid-text",
  { t: "evt", ev: "exit", data: { pid: "1", exitCode: 0, signal: null, timedOut: false, peakRssKib: 0 } },
  "SM_BAD_FRAME",
  {
    direction: A2H,
  },
);
invalid("evt-data-not-map", { t: "evt", ev: "ready", data: null }, "SM_BAD_FRAME", { direction: A2H });
valid(
  "evt-dial",
  { t: "evt", ev: "dial", data: { id: 7, addr: "198.18.0.2", port: 443 } },
  { direction: A2H, canonical: true },
);
valid(
  "evt-dial-v6",
  { t: "evt", ev: "dial", data: { id: 9, addr: "2001:db8::1", port: 80 } },
  { direction: A2H, canonical: true },
);
invalid(
  "evt-dial-addr-not-ip",
  { t: "evt", ev: "dial", data: { id: 7, addr: "example.com", port: 443 } },
  "SM_BAD_FRAME",
  { direction: A2H },
);
invalid(
  "evt-dial-port-zero",
  { t: "evt", ev: "dial", data: { id: 7, addr: "1.2.3.4", port: 0 } },
  "SM_BAD_FRAME",
  {
    direction: A2H,
  },
);
valid(
  "evt-dns",
  {
    t: "evt",
    ev: "dns",
    data: { id: 3, q: hexb("12340100000100000000000003777777076578616d706c6503636f6d0000010001") },
  },
  { direction: A2H, canonical: true },
);
invalid(
  "evt-dns-query-too-short",
  { t: "evt", ev: "dns", data: { id: 3, q: hexb("1234") } },
  "SM_BAD_FRAME",
  {
    direction: A2H,
  },
);
invalid(
  "evt-listening-port-too-large",
  { t: "evt", ev: "listening", data: { port: 65536 } },
  "SM_BAD_FRAME",
  { direction: A2H },
);
invalid(
  "hello-agent-window-too-small",
  {
    t: "hello",
    v: 1,
    agent: "x",
    caps: [],
    maxFrame: 5242880,
    window: 1000,
    ready: true,
    listening: null,
    bootMs: 1,
  },
  "SM_BAD_FRAME",
  { direction: A2H },
);
invalid(
  "hello-agent-maxframe-too-small",
  {
    t: "hello",
    v: 1,
    agent: "x",
    caps: [],
    maxFrame: 1000,
    window: 262144,
    ready: true,
    listening: null,
    bootMs: 1,
  },
  "SM_BAD_FRAME",
  { direction: A2H },
);
invalid(
  "hello-agent-missing-caps",
  {
    t: "hello",
    v: 1,
    agent: "x",
    maxFrame: 5242880,
    window: 262144,
    ready: true,
    listening: null,
    bootMs: 1,
  },
  "SM_BAD_FRAME",
  { direction: A2H },
);
invalid(
  "hello-agent-caps-not-text",
  {
    t: "hello",
    v: 1,
    agent: "x",
    caps: [1],
    maxFrame: 5242880,
    window: 262144,
    ready: true,
    listening: null,
    bootMs: 1,
  },
  "SM_BAD_FRAME",
  { direction: A2H },
);
invalid("hello-host-missing-window", { t: "hello", v: 1, host: "x", maxFrame: 5242880 }, "SM_BAD_FRAME", {
  direction: H2A,
});
invalid("fatal-missing-message", { t: "fatal", code: "SM_BAD_CBOR" }, "SM_BAD_FRAME");

// ---------- invalid: outside the CBOR subset ----------
invalidBody("indefinite-map", "bf 61 74 63 656f66 62 6368 01 ff", "SM_BAD_CBOR");
invalidBody("indefinite-bytes", "a3 61 74 64 64617461 62 6368 01 61 64 5f 41 78 ff", "SM_BAD_CBOR");
invalidBody("indefinite-text", "a2 61 74 7f 63 656f66 ff 62 6368 01", "SM_BAD_CBOR");
invalidBody("indefinite-array", "a3 61 74 63 656f66 62 6368 01 61 78 9f ff", "SM_BAD_CBOR");
invalidBody("break-byte", "ff", "SM_BAD_CBOR");
invalidBody("tag", "a2 61 74 63 656f66 62 6368 c2 41 01", "SM_BAD_CBOR");
invalidBody("tag-self-describe", "d9d9f7 a2 61 74 63 656f66 62 6368 01", "SM_BAD_CBOR");
invalidBody("float16", "a2 61 74 63 656f66 62 6368 f9 3c00", "SM_BAD_CBOR");
invalidBody("float64", "a2 61 74 63 656f66 62 6368 fb 3ff0000000000000", "SM_BAD_CBOR");
invalidBody("undefined", "a2 61 74 63 656f66 62 6368 f7", "SM_BAD_CBOR");
invalidBody("simple-value-32", "a2 61 74 63 656f66 62 6368 f8 20", "SM_BAD_CBOR");
invalidBody("simple-value-16", "a2 61 74 63 656f66 62 6368 f0", "SM_BAD_CBOR");
invalidBody("reserved-additional-info", "a2 61 74 63 656f66 62 6368 1c", "SM_BAD_CBOR");
invalidBody("nint-below-int64", "a3 61 74 63 656f66 62 6368 01 61 78 3b ffffffffffffffff", "SM_BAD_CBOR");
invalidBody("duplicate-key", "a3 61 74 63 656f66 62 6368 01 62 6368 02", "SM_BAD_CBOR");
invalidBody("duplicate-t", "a3 61 74 63 656f66 62 6368 01 61 74 65 636c6f7365", "SM_BAD_CBOR");
invalidBody(
  "duplicate-key-nested",
  "a4 61 74 63 726571 62 6964 01 62 6f70 64 70696e67 64 61726773 a2 61 61 01 61 61 02",
  "SM_BAD_CBOR",
  {
    direction: H2A,
  },
);
invalidBody("integer-key", "a2 61 74 63 656f66 01 02", "SM_BAD_CBOR");
invalidBody("bytes-key", "a2 61 74 63 656f66 41 78 02", "SM_BAD_CBOR");
invalidBody(
  "nested-integer-key",
  "a4 61 74 63 726571 62 6964 01 62 6f70 64 70696e67 64 61726773 a1 01 02",
  "SM_BAD_CBOR",
  {
    direction: H2A,
  },
);
invalidBody("utf8-invalid-byte", "a2 61 74 63 ff fe fd 62 6368 01", "SM_BAD_CBOR");
invalidBody("utf8-overlong", "a3 61 74 63 656f66 62 6368 01 61 78 62 c0af", "SM_BAD_CBOR");
invalidBody("utf8-surrogate", "a3 61 74 63 656f66 62 6368 01 61 78 63 eda080", "SM_BAD_CBOR");
invalidBody("utf8-truncated-sequence", "a3 61 74 63 656f66 62 6368 01 61 78 62 e282", "SM_BAD_CBOR");
invalidBody("utf8-key-invalid", "a3 61 74 63 656f66 62 6368 01 61 ff 01", "SM_BAD_CBOR");
{
  let inner = [];
  for (let i = 0; i < 14; i++) inner = [inner];
  invalid("nesting-depth-17", { t: "req", id: 21, op: "ping", args: { x: inner } }, "SM_BAD_CBOR", {
    direction: H2A,
  });
}
{
  // array of 65537 zeros inside an unknown key: over MAX_CONTAINER_ITEMS
  const body = Buffer.concat([
    enc({ t: "eof", ch: 1 }).subarray(0, 0),
    Buffer.from("a3617463656f666263680161789a00010001", "hex"),
    Buffer.alloc(65537),
  ]);
  invalidBody("array-too-many-items", body.toString("hex"), "SM_BAD_CBOR", {
    note: "65537 entries > MAX_CONTAINER_ITEMS",
  });
}

const names = new Set();
for (const v of vectors) {
  if (names.has(v.name)) throw new Error(`duplicate vector name ${v.name}`);
  names.add(v.name);
}
const out = new URL("../test-vectors/vectors.json", import.meta.url);
writeFileSync(out, `${JSON.stringify(vectors, null, 1)}\n`);
console.log(`wrote ${vectors.length} vectors to ${out.pathname}`);

// ---------------------------------------------------------------------------------------------
// Boot configuration vectors (SPEC §12): the file bytes (no length prefix), and for valid ones the
// configuration with every default filled in; for invalid ones the offending key.
const configVectors = [];
const DEFAULTS = {
  v: 1,
  hostname: "supermachine",
  rootDevice: "/dev/vda",
  tmpfsMib: 0,
  workload: null,
  startWorkload: "boot",
  guestPort: 0,
  listenerRequired: false,
  volumes: [],
  network: null,
};
function configValid(name, value, resolved) {
  configVectors.push({
    name,
    hex: enc(value).toString("hex"),
    valid: true,
    meaning: meaning({ ...DEFAULTS, ...resolved }),
  });
}
function configInvalid(name, value, key) {
  configVectors.push({
    name,
    hex: (value instanceof Raw ? Buffer.from(value.hex, "hex") : enc(value)).toString("hex"),
    valid: false,
    key,
  });
}
configValid("minimal", { v: 1 }, {});
const full = {
  v: 1,
  hostname: "sm-1",
  rootDevice: "/dev/vda",
  tmpfsMib: 64,
  workload: {
    argv: ["/bin/sh", "-c", "httpd -f"],
    env: ["PATH=/bin", "A=b=c"],
    cwd: "/www",
    user: "app:staff",
  },
  startWorkload: "resume",
  guestPort: 80,
  listenerRequired: true,
  volumes: [{ device: "/dev/vdb", path: "/data", format: true }],
  network: { ip: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" },
};
configValid("full", full, full);
configValid(
  "workload-defaults",
  { v: 1, workload: { argv: ["/app"] } },
  { workload: { argv: ["/app"], env: [], cwd: "/", user: "0:0" } },
);
configValid("unknown-keys-ignored", { v: 1, mounts: [], future: { x: 1 } }, {});
configValid("nulls-mean-default", { v: 1, hostname: null, network: null, workload: null }, {});
configValid(
  "volume-format-default",
  { v: 1, volumes: [{ device: "/dev/vdb", path: "/data" }] },
  { volumes: [{ device: "/dev/vdb", path: "/data", format: false }] },
);
configInvalid("missing-v", { hostname: "x" }, "v");
configInvalid("v-2", { v: 2 }, "v");
configInvalid("not-a-map", [1], "config");
configInvalid("hostname-empty", { v: 1, hostname: "" }, "hostname");
configInvalid("hostname-too-long", { v: 1, hostname: "h".repeat(65) }, "hostname");
configInvalid("start-workload-bad", { v: 1, startWorkload: "later" }, "startWorkload");
configInvalid("guest-port-too-large", { v: 1, guestPort: 65536 }, "guestPort");
configInvalid("listener-required-not-bool", { v: 1, listenerRequired: 1 }, "listenerRequired");
configInvalid("workload-argv-empty", { v: 1, workload: { argv: [] } }, "argv");
configInvalid("workload-argv-missing", { v: 1, workload: { cwd: "/" } }, "argv");
configInvalid("workload-env-not-kv", { v: 1, workload: { argv: ["x"], env: ["NOEQUALS"] } }, "env");
configInvalid("volumes-not-array", { v: 1, volumes: { device: "/dev/vdb" } }, "volumes");
configInvalid("volume-missing-path", { v: 1, volumes: [{ device: "/dev/vdb" }] }, "path");
configInvalid(
  "network-missing-gateway",
  { v: 1, network: { ip: "10.0.2.15/24", dns: "10.0.2.3" } },
  "gateway",
);
configInvalid("tmpfs-negative", { v: 1, tmpfsMib: -1 }, "tmpfsMib");
configInvalid(
  "float",
  new Raw("a2 6176 01 68 746d7066734d6962 fb 4050000000000000".replace(/ /g, "")),
  "config",
);
configInvalid("trailing-bytes", new Raw("a1617601 00".replace(/ /g, "")), "config");
configInvalid("duplicate-key", new Raw("a2 6176 01 6176 01".replace(/ /g, "")), "config");
const configOut = new URL("../test-vectors/config-vectors.json", import.meta.url);
writeFileSync(configOut, `${JSON.stringify(configVectors, null, 1)}\n`);
console.log(`wrote ${configVectors.length} config vectors to ${configOut.pathname}`);
