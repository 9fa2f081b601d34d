/**
 * A small strict CBOR codec for the subset of SPEC §2.
 *
 * Why not cbor-x: cbor-x is a fast general decoder, but it accepts (and cannot be told to reject)
 * most of what the spec forbids — tags, floats, indefinite lengths, duplicate map keys, non-text
 * keys, `undefined` — it decodes maps into ordinary objects or Maps without a duplicate-key check,
 * and its allocation for declared lengths is not tied to our frame bounds. Validating its output
 * afterwards cannot detect duplicate keys or indefinite-length encodings at all. The subset is tiny,
 * so a purpose-built decoder that checks every rule while it reads is both simpler to audit and as
 * fast for our frame shapes. (cbor-x is still used in the tests as an independent oracle.)
 */
import { MAX_CONTAINER_ITEMS, MAX_DEPTH } from "./constants";
import { violation } from "./errors";

/** A decoded map: a null-prototype object (no prototype pollution, `__proto__` is an ordinary key). */
export interface CborMap {
  [key: string]: CborValue;
}
export type CborValue = number | bigint | string | boolean | null | Buffer | CborValue[] | CborMap;

const TWO_POW_32 = 4_294_967_296;
const INT64_MIN_MAGNITUDE = 9_223_372_036_854_775_807n; // largest n with -1-n >= -2^63
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function bad(message: string) {
  return violation("SM_BAD_CBOR", message);
}

class Reader {
  buf: Buffer;
  pos: number;
  end: number;
  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** Reads the argument of an initial byte; returns a number when safe, else a bigint. */
  arg(ai: number): number | bigint {
    const { buf } = this;
    if (ai < 24) return ai;
    let p = this.pos;
    switch (ai) {
      case 24:
        if (p + 1 > this.end) throw bad("truncated");
        this.pos = p + 1;
        return buf[p]!;
      case 25:
        if (p + 2 > this.end) throw bad("truncated");
        this.pos = p + 2;
        return (buf[p]! << 8) | buf[p + 1]!;
      case 26:
        if (p + 4 > this.end) throw bad("truncated");
        this.pos = p + 4;
        return buf.readUInt32BE(p);
      case 27: {
        if (p + 8 > this.end) throw bad("truncated");
        const hi = buf.readUInt32BE(p);
        const lo = buf.readUInt32BE(p + 4);
        p += 8;
        this.pos = p;
        if (hi < 0x200000) return hi * TWO_POW_32 + lo;
        return (BigInt(hi) << 32n) | BigInt(lo);
      }
      case 31:
        throw bad("indefinite-length items are not allowed");
      default:
        throw bad(`reserved additional information ${ai}`);
    }
  }

  /** A length or count that must fit in the remaining bytes (`unit` bytes per entry at least). */
  len(ai: number, unit: number, what: string): number {
    const n = this.arg(ai);
    const remaining = this.end - this.pos;
    if (typeof n === "bigint" || n * unit > remaining)
      throw bad(`${what} length ${n} exceeds the frame (truncated)`);
    return n;
  }

  text(ai: number): string {
    const n = this.len(ai, 1, "text");
    const start = this.pos;
    const end = start + n;
    this.pos = end;
    const buf = this.buf;
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (buf[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return buf.toString("latin1", start, end);
    try {
      return utf8.decode(buf.subarray(start, end));
    } catch {
      throw bad("invalid UTF-8 in text string");
    }
  }

  item(depth: number): CborValue {
    if (this.pos >= this.end) throw bad("truncated");
    const ib = this.buf[this.pos++]!;
    const major = ib >> 5;
    const ai = ib & 31;
    switch (major) {
      case 0:
        return this.arg(ai);
      case 1: {
        const n = this.arg(ai);
        if (typeof n === "number") return -1 - n;
        if (n > INT64_MIN_MAGNITUDE) throw bad("negative integer below -2^63");
        const v = -1n - n;
        return v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      case 2: {
        const n = this.len(ai, 1, "byte string");
        const start = this.pos;
        this.pos = start + n;
        return this.buf.subarray(start, start + n);
      }
      case 3:
        return this.text(ai);
      case 4: {
        if (depth > MAX_DEPTH) throw bad(`nesting deeper than ${MAX_DEPTH} levels`);
        const n = this.len(ai, 1, "array");
        if (n > MAX_CONTAINER_ITEMS) throw bad(`array of ${n} items exceeds ${MAX_CONTAINER_ITEMS}`);
        const out: CborValue[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.item(depth + 1);
        return out;
      }
      case 5: {
        if (depth > MAX_DEPTH) throw bad(`nesting deeper than ${MAX_DEPTH} levels`);
        const n = this.len(ai, 2, "map");
        if (n > MAX_CONTAINER_ITEMS) throw bad(`map of ${n} pairs exceeds ${MAX_CONTAINER_ITEMS}`);
        const out = Object.create(null) as CborMap;
        for (let i = 0; i < n; i++) {
          if (this.pos >= this.end) throw bad("truncated");
          const kb = this.buf[this.pos++]!;
          if (kb >> 5 !== 3) throw bad("map key is not a text string");
          const key = this.text(kb & 31);
          if (key in out) throw bad(`duplicate map key "${key.slice(0, 64)}"`);
          out[key] = this.item(depth + 1);
        }
        return out;
      }
      case 6:
        throw bad("tags are not allowed");
      default:
        switch (ai) {
          case 20:
            return false;
          case 21:
            return true;
          case 22:
            return null;
          case 23:
            return bad_("undefined is not allowed");
          case 25:
          case 26:
          case 27:
            return bad_("floating-point numbers are not allowed");
          case 31:
            return bad_("unexpected break byte (indefinite-length items are not allowed)");
          case 28:
          case 29:
          case 30:
            return bad_(`reserved additional information ${ai}`);
          default:
            return bad_("simple values other than false/true/null are not allowed");
        }
    }
  }
}

function bad_(message: string): never {
  throw bad(message);
}

/**
 * Decodes exactly one CBOR item of the SPEC §2 subset from `buf[start, end)`.
 * Byte strings in the result are views into `buf` (no copy). Throws AgentError SM_AGENT_PROTOCOL
 * with reason SM_BAD_CBOR on anything outside the subset, on truncation and on trailing bytes.
 */
export function decodeCbor(buf: Buffer, start = 0, end = buf.length): CborValue {
  const r = new Reader(buf, start, end);
  const v = r.item(1);
  if (r.pos !== end) throw bad(`${end - r.pos} trailing bytes after the CBOR item`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Encoder

/** Values the encoder accepts. Object properties whose value is `undefined` are omitted. */
export type EncodableValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | Uint8Array
  | readonly EncodableValue[]
  | { readonly [key: string]: EncodableValue | undefined };

const SCRATCH_KEEP = 256 * 1024;
let scratch = Buffer.allocUnsafe(64 * 1024);
let wpos = 0;

function ensure(n: number) {
  if (wpos + n <= scratch.length) return;
  let size = scratch.length * 2;
  while (size < wpos + n) size *= 2;
  const next = Buffer.allocUnsafe(size);
  scratch.copy(next, 0, 0, wpos);
  scratch = next;
}

function writeHead(major: number, n: number) {
  const m = major << 5;
  ensure(9);
  const b = scratch;
  if (n < 24) b[wpos++] = m | n;
  else if (n < 0x100) {
    b[wpos++] = m | 24;
    b[wpos++] = n;
  } else if (n < 0x10000) {
    b[wpos++] = m | 25;
    b[wpos++] = n >> 8;
    b[wpos++] = n & 0xff;
  } else if (n < TWO_POW_32) {
    b[wpos++] = m | 26;
    b.writeUInt32BE(n, wpos);
    wpos += 4;
  } else {
    b[wpos++] = m | 27;
    b.writeUInt32BE(Math.floor(n / TWO_POW_32), wpos);
    b.writeUInt32BE(n % TWO_POW_32, wpos + 4);
    wpos += 8;
  }
}

function writeHeadBig(major: number, n: bigint) {
  if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return writeHead(major, Number(n));
  ensure(9);
  scratch[wpos++] = (major << 5) | 27;
  scratch.writeBigUInt64BE(n, wpos);
  wpos += 8;
}

function writeValue(v: EncodableValue | undefined): void {
  if (v === null) {
    ensure(1);
    scratch[wpos++] = 0xf6;
    return;
  }
  switch (typeof v) {
    case "boolean":
      ensure(1);
      scratch[wpos++] = v ? 0xf5 : 0xf4;
      return;
    case "number":
      if (!Number.isSafeInteger(v)) throw new TypeError(`cannot encode ${v}: only safe integers (no floats)`);
      if (v >= 0) writeHead(0, v);
      else writeHead(1, -1 - v);
      return;
    case "bigint":
      if (v >= 0n) {
        if (v > 0xffff_ffff_ffff_ffffn) throw new TypeError("integer above 2^64-1");
        writeHeadBig(0, v);
      } else {
        if (v < -0x8000_0000_0000_0000n) throw new TypeError("integer below -2^63");
        writeHeadBig(1, -1n - v);
      }
      return;
    case "string": {
      const n = Buffer.byteLength(v);
      writeHead(3, n);
      ensure(n);
      if (n === v.length && n < 64) {
        for (let i = 0; i < n; i++) scratch[wpos + i] = v.charCodeAt(i);
      } else scratch.write(v, wpos, n, "utf8");
      wpos += n;
      return;
    }
    case "object": {
      if (v instanceof Uint8Array) {
        writeHead(2, v.length);
        ensure(v.length);
        scratch.set(v, wpos);
        wpos += v.length;
        return;
      }
      if (Array.isArray(v)) {
        writeHead(4, v.length);
        for (const x of v) writeValue(x);
        return;
      }
      const obj = v as { readonly [key: string]: EncodableValue | undefined };
      let count = 0;
      for (const k in obj) if (obj[k] !== undefined) count++;
      writeHead(5, count);
      for (const k in obj) {
        const x = obj[k];
        if (x === undefined) continue;
        writeValue(k);
        writeValue(x);
      }
      return;
    }
    default:
      throw new TypeError(`cannot encode a value of type ${typeof v}`);
  }
}

function takeScratch(): Buffer {
  const out = Buffer.allocUnsafe(wpos);
  scratch.copy(out, 0, 0, wpos);
  if (scratch.length > SCRATCH_KEEP) scratch = Buffer.allocUnsafe(64 * 1024);
  return out;
}

/** Encodes one value (no length prefix). Map keys are written in property order. */
export function encodeCbor(v: EncodableValue): Buffer {
  wpos = 0;
  writeValue(v);
  return takeScratch();
}

/** Encodes one value as a complete frame: 4-byte big-endian length + the CBOR item (SPEC §1). */
export function encodeFrameBytes(v: EncodableValue): Buffer {
  wpos = 4;
  writeValue(v);
  scratch.writeUInt32BE(wpos - 4, 0);
  return takeScratch();
}

// `{ "t": "data", "ch": <ch>, "d": <bytes header> }` — the constant part, pre-encoded.
const DATA_PREFIX = Buffer.from([0xa3, 0x61, 0x74, 0x64, 0x64, 0x61, 0x74, 0x61, 0x62, 0x63, 0x68]);

/**
 * The frame bytes of a `data` frame up to (not including) the payload: send it followed by the
 * payload itself, so payloads are never copied.
 */
export function encodeDataHeader(ch: number, payloadLength: number): Buffer {
  wpos = 4;
  ensure(32);
  DATA_PREFIX.copy(scratch, wpos);
  wpos += DATA_PREFIX.length;
  writeHead(0, ch);
  writeValue("d");
  writeHead(2, payloadLength);
  scratch.writeUInt32BE(wpos - 4 + payloadLength, 0);
  return takeScratch();
}
