import { deflateSync } from "node:zlib";
import { METADATA_BYTES, METADATA_UNCOMPRESSED } from "./constants";

/** A position inside a metadata table: start of the (compressed) block relative to the table, and offset in it. */
export interface MetaRef {
  block: number;
  offset: number;
}

export function packRef(r: MetaRef): bigint {
  return (BigInt(r.block) << 16n) | BigInt(r.offset);
}

/**
 * Builds a metadata table: a sequence of blocks, each a 2-byte header (size | 0x8000 if stored) plus up to
 * 8 KiB of data. Blocks are compressed as soon as they fill, so the position of every byte is known when it
 * is written (needed for inode and directory references).
 */
export class MetadataWriter {
  private readonly cur = Buffer.alloc(METADATA_BYTES);
  private fill = 0;
  /** Encoded blocks (header + payload). */
  readonly blocks: Buffer[] = [];
  /** Bytes of encoded blocks emitted so far. */
  encodedBytes = 0;
  /** Total uncompressed bytes written. */
  totalBytes = 0;

  constructor(private readonly level: number | null) {}

  /** Where the next byte goes. */
  ref(): MetaRef {
    return { block: this.encodedBytes, offset: this.fill };
  }

  write(data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const n = Math.min(METADATA_BYTES - this.fill, data.length - done);
      this.cur.set(data.subarray(done, done + n), this.fill);
      this.fill += n;
      done += n;
      this.totalBytes += n;
      if (this.fill === METADATA_BYTES) this.flush();
    }
  }

  private flush(): void {
    if (this.fill === 0) return;
    const raw = this.cur.subarray(0, this.fill);
    let payload: Buffer = raw;
    let header = raw.length | METADATA_UNCOMPRESSED;
    if (this.level !== null) {
      const z = deflateSync(raw, { level: this.level });
      if (z.length < raw.length) {
        payload = z;
        header = z.length;
      }
    }
    const block = Buffer.allocUnsafe(2 + payload.length);
    block.writeUInt16LE(header, 0);
    payload.copy(block, 2);
    this.blocks.push(block);
    this.encodedBytes += block.length;
    this.fill = 0;
  }

  /** Flushes the partial last block; returns the encoded table and the start offset of each block. */
  finish(): { data: Buffer; blockStarts: number[] } {
    this.flush();
    const blockStarts: number[] = [];
    let pos = 0;
    for (const b of this.blocks) {
      blockStarts.push(pos);
      pos += b.length;
    }
    return { data: Buffer.concat(this.blocks), blockStarts };
  }
}

/** Little-endian byte builder for inode / directory records. */
export class Bytes {
  private buf = Buffer.alloc(256);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
    return this;
  }
  i16(v: number): this {
    this.ensure(2);
    this.buf.writeInt16LE(v, this.length);
    this.length += 2;
    return this;
  }
  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.length);
    this.length += 4;
    return this;
  }
  u64(v: number | bigint): this {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
    return this;
  }
  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.length));
    this.length = 0;
    return out;
  }
}
