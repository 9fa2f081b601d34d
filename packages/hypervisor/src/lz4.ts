/**
 * LZ4 decoding: the raw block format and the "legacy" frame used by the Linux kernel
 * (magic 0x184C2102, then blocks prefixed by a 4-byte little-endian compressed size,
 * each decoding to at most 8 MiB). Spec: lz4_Block_format.md / lz4_Frame_format.md ("Legacy frame").
 */

/** Magic number of the LZ4 legacy frame (little-endian on disk: 02 21 4C 18). */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** Upper bound of one legacy block's decoded size. */
const LEGACY_BLOCK_MAX_BYTES = 8 * 1024 * 1024;

class Output {
  buf: Buffer;
  len = 0;
  constructor(initial: number) {
    this.buf = Buffer.allocUnsafe(Math.max(initial, 1024));
  }
  reserve(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + extra) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
}

function fail(msg: string): never {
  throw new Error(`LZ4: ${msg}`);
}

/** Decode one LZ4 block `src[start, end)` appending to `out`. Matches may reference earlier blocks. */
function decodeBlock(src: Uint8Array, start: number, end: number, out: Output): void {
  let ip = start;
  out.reserve(LEGACY_BLOCK_MAX_BYTES);
  while (ip < end) {
    const token = src[ip++] as number;
    // literals
    let litLen = token >>> 4;
    if (litLen === 15) {
      let b: number;
      do {
        if (ip >= end) fail("truncated literal length");
        b = src[ip++] as number;
        litLen += b;
      } while (b === 255);
    }
    if (ip + litLen > end) fail("literals run past the block end");
    out.reserve(litLen);
    out.buf.set(src.subarray(ip, ip + litLen), out.len);
    out.len += litLen;
    ip += litLen;
    if (ip >= end) break; // last sequence has literals only
    // match
    if (ip + 2 > end) fail("truncated match offset");
    const offset = (src[ip] as number) | ((src[ip + 1] as number) << 8);
    ip += 2;
    if (offset === 0 || offset > out.len) fail(`invalid match offset ${offset}`);
    let matchLen = token & 15;
    if (matchLen === 15) {
      let b: number;
      do {
        if (ip >= end) fail("truncated match length");
        b = src[ip++] as number;
        matchLen += b;
      } while (b === 255);
    }
    matchLen += 4;
    out.reserve(matchLen);
    const buf = out.buf;
    let op = out.len;
    let from = op - offset;
    if (offset >= matchLen) {
      buf.copyWithin(op, from, from + matchLen);
      op += matchLen;
    } else {
      // overlapping copy: byte by byte semantics
      for (let i = 0; i < matchLen; i++) buf[op++] = buf[from++] as number;
    }
    out.len = op;
  }
}

/** Decode a single raw LZ4 block (no frame). */
export function lz4DecodeBlock(src: Uint8Array, sizeHint = src.length * 3): Buffer {
  const out = new Output(sizeHint);
  decodeBlock(src, 0, src.length, out);
  return out.buf.subarray(0, out.len);
}

/**
 * Decode an LZ4 legacy frame. Trailing bytes that cannot be a block (the kernel appends the
 * 4-byte decompressed size) end the stream; a repeated magic starts a new frame.
 */
export function lz4DecodeLegacy(src: Uint8Array, sizeHint?: number): Buffer {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (src.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC)
    fail("not an LZ4 legacy frame (bad magic)");
  const out = new Output(sizeHint ?? src.length * 3);
  let pos = 4;
  let blocks = 0;
  while (pos + 4 <= src.length) {
    const size = view.getUint32(pos, true);
    if (size === LZ4_LEGACY_MAGIC) {
      pos += 4;
      continue;
    }
    if (size === 0 || pos + 4 + size > src.length) break; // trailer (e.g. appended size) or end
    decodeBlock(src, pos + 4, pos + 4 + size, out);
    pos += 4 + size;
    blocks++;
  }
  if (blocks === 0) fail("legacy frame holds no block");
  return out.buf.subarray(0, out.len);
}
