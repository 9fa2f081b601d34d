/**
 * Test-only FUSE client: hand-encodes requests (struct fuse_in_header + body) and decodes replies,
 * driving a ShareServer through an in-memory duplex exactly like the guest relay would.
 */
import { Duplex, PassThrough } from "node:stream";
import { IN_HEADER_SIZE, Op } from "./proto";
import type { ShareServer } from "./server";

export { Op };

export interface Reply {
  error: number;
  body: Buffer;
}

export interface Attr {
  ino: bigint;
  size: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
}

export function encodeRequest(opcode: number, nodeid: bigint | number, body: Buffer, unique: bigint): Buffer {
  const h = Buffer.alloc(IN_HEADER_SIZE);
  h.writeUInt32LE(IN_HEADER_SIZE + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(unique, 8);
  h.writeBigUInt64LE(BigInt(nodeid), 16);
  return Buffer.concat([h, body]);
}

/** NUL-terminated name(s). */
export function cstr(...names: (string | Buffer)[]): Buffer {
  return Buffer.concat(names.flatMap((n) => [Buffer.isBuffer(n) ? n : Buffer.from(n), Buffer.from([0])]));
}

export function u32s(...v: number[]): Buffer {
  const b = Buffer.alloc(v.length * 4);
  for (const [i, x] of v.entries()) b.writeUInt32LE(x >>> 0, i * 4);
  return b;
}

export function u64s(...v: (bigint | number)[]): Buffer {
  const b = Buffer.alloc(v.length * 8);
  for (const [i, x] of v.entries()) b.writeBigUInt64LE(BigInt(x), i * 8);
  return b;
}

export function decodeAttr(b: Buffer, off: number): Attr {
  return {
    ino: b.readBigUInt64LE(off),
    size: b.readBigUInt64LE(off + 8),
    mode: b.readUInt32LE(off + 60),
    nlink: b.readUInt32LE(off + 64),
    uid: b.readUInt32LE(off + 68),
    gid: b.readUInt32LE(off + 72),
  };
}

export function decodeDirents(b: Buffer): { name: string; off: bigint; type: number }[] {
  const out: { name: string; off: bigint; type: number }[] = [];
  let p = 0;
  while (p + 24 <= b.length) {
    const namelen = b.readUInt32LE(p + 16);
    out.push({
      off: b.readBigUInt64LE(p + 8),
      type: b.readUInt32LE(p + 20),
      name: b.subarray(p + 24, p + 24 + namelen).toString(),
    });
    p += (24 + namelen + 7) & ~7;
  }
  return out;
}

export interface DirentPlus {
  /** Byte offset of the record in the reply (must be 8-aligned). */
  at: number;
  nodeid: bigint;
  entryValid: bigint;
  attrValid: bigint;
  entryValidNsec: number;
  attrValidNsec: number;
  attr: Attr;
  ino: bigint;
  off: bigint;
  type: number;
  name: string;
}

/** Decodes a READDIRPLUS reply: struct fuse_direntplus records (fuse_entry_out + fuse_dirent), 8-aligned. */
export function decodeDirentsPlus(b: Buffer): DirentPlus[] {
  const out: DirentPlus[] = [];
  let p = 0;
  while (p + 152 <= b.length) {
    const namelen = b.readUInt32LE(p + 128 + 16);
    out.push({
      at: p,
      nodeid: b.readBigUInt64LE(p),
      entryValid: b.readBigUInt64LE(p + 16),
      attrValid: b.readBigUInt64LE(p + 24),
      entryValidNsec: b.readUInt32LE(p + 32),
      attrValidNsec: b.readUInt32LE(p + 36),
      attr: decodeAttr(b, p + 40),
      ino: b.readBigUInt64LE(p + 128),
      off: b.readBigUInt64LE(p + 136),
      type: b.readUInt32LE(p + 148),
      name: b.subarray(p + 152, p + 152 + namelen).toString(),
    });
    p += (152 + namelen + 7) & ~7;
  }
  if (p !== b.length) throw new Error(`READDIRPLUS reply has ${b.length - p} trailing bytes`);
  return out;
}

/** A guest kernel stand-in speaking raw FUSE to a ShareServer over a duplex. */
export class FuseTestClient {
  readonly toServer: PassThrough;
  readonly fromServer: PassThrough;
  readonly stream: Duplex;
  readonly serving: Promise<void>;
  private unique = 1n;
  private pending = new Map<bigint, (r: Reply) => void>();
  private buf = Buffer.alloc(0);

  constructor(
    readonly server: ShareServer,
    opts: { replyHighWaterMark?: number; autoRead?: boolean } = {},
  ) {
    this.toServer = new PassThrough();
    this.fromServer = new PassThrough({ highWaterMark: opts.replyHighWaterMark ?? 16384 });
    this.stream = Duplex.from({ readable: this.toServer, writable: this.fromServer });
    // Destroying the duplex aborts both halves (AbortError): expected here, not a test failure.
    for (const s of [this.toServer, this.fromServer, this.stream]) s.on("error", () => {});
    this.serving = server.serve(this.stream);
    if (opts.autoRead !== false) this.startReading();
  }

  startReading(): void {
    this.fromServer.on("data", (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= 16) {
        const len = this.buf.readUInt32LE(0);
        if (this.buf.length < len) break;
        const msg = this.buf.subarray(0, len);
        this.buf = this.buf.subarray(len);
        const unique = msg.readBigUInt64LE(8);
        const cb = this.pending.get(unique);
        this.pending.delete(unique);
        cb?.({ error: msg.readInt32LE(4), body: Buffer.from(msg.subarray(16)) });
      }
    });
  }

  /** Sends a request without waiting; returns the promise of its reply. */
  send(opcode: number, nodeid: bigint | number, body: Buffer = Buffer.alloc(0)): Promise<Reply> {
    const unique = this.unique++;
    const p = new Promise<Reply>((resolve) => this.pending.set(unique, resolve));
    this.toServer.write(encodeRequest(opcode, nodeid, body, unique));
    return p;
  }

  /** Writes raw bytes (hostile framing). */
  raw(b: Buffer): void {
    this.toServer.write(b);
  }

  async init(minor = 36): Promise<Reply> {
    return this.send(Op.INIT, 0, Buffer.concat([u32s(7, minor, 131072, 0xffffffff), Buffer.alloc(48)]));
  }

  async lookup(
    parent: bigint | number,
    name: string | Buffer,
  ): Promise<{ error: number; nodeid: bigint; attr?: Attr }> {
    const r = await this.send(Op.LOOKUP, parent, cstr(name));
    if (r.error) return { error: r.error, nodeid: 0n };
    return { error: 0, nodeid: r.body.readBigUInt64LE(0), attr: decodeAttr(r.body, 40) };
  }

  async getattr(nodeid: bigint | number): Promise<{ error: number; attr?: Attr }> {
    const r = await this.send(Op.GETATTR, nodeid, Buffer.alloc(16));
    return r.error ? { error: r.error } : { error: 0, attr: decodeAttr(r.body, 16) };
  }

  async open(nodeid: bigint | number, flags = 0): Promise<{ error: number; fh: bigint }> {
    const r = await this.send(Op.OPEN, nodeid, u32s(flags, 0));
    return { error: r.error, fh: r.error ? 0n : r.body.readBigUInt64LE(0) };
  }

  async create(parent: bigint | number, name: string, flags: number, mode = 0o644) {
    const r = await this.send(Op.CREATE, parent, Buffer.concat([u32s(flags, mode, 0, 0), cstr(name)]));
    if (r.error) return { error: r.error, nodeid: 0n, fh: 0n };
    return { error: 0, nodeid: r.body.readBigUInt64LE(0), fh: r.body.readBigUInt64LE(128) };
  }

  async read(fh: bigint, offset: number, size: number): Promise<Reply> {
    return this.send(Op.READ, 0, Buffer.concat([u64s(fh, offset), u32s(size, 0), u64s(0), u32s(0, 0)]));
  }

  async write(fh: bigint, offset: number, data: Buffer): Promise<Reply> {
    return this.send(
      Op.WRITE,
      0,
      Buffer.concat([u64s(fh, offset), u32s(data.length, 0), u64s(0), u32s(0, 0), data]),
    );
  }

  async release(fh: bigint, op: number = Op.RELEASE): Promise<Reply> {
    return this.send(op, 0, Buffer.concat([u64s(fh), u32s(0, 0), u64s(0)]));
  }

  async mkdir(parent: bigint | number, name: string | Buffer, mode = 0o755): Promise<Reply> {
    return this.send(Op.MKDIR, parent, Buffer.concat([u32s(mode, 0), cstr(name)]));
  }

  async symlink(parent: bigint | number, name: string | Buffer, target: string): Promise<Reply> {
    return this.send(Op.SYMLINK, parent, cstr(name, target));
  }

  async link(oldNode: bigint | number, newParent: bigint | number, name: string): Promise<Reply> {
    return this.send(Op.LINK, newParent, Buffer.concat([u64s(oldNode), cstr(name)]));
  }

  async rename(parent: bigint | number, oldName: string, newParent: bigint | number, newName: string) {
    return this.send(Op.RENAME, parent, Buffer.concat([u64s(newParent), cstr(oldName, newName)]));
  }

  async readdir(fh: bigint, offset: bigint | number, size: number): Promise<Reply> {
    return this.send(Op.READDIR, 0, Buffer.concat([u64s(fh, offset), u32s(size, 0), u64s(0), u32s(0, 0)]));
  }

  async readdirplus(fh: bigint, offset: bigint | number, size: number): Promise<Reply> {
    return this.send(
      Op.READDIRPLUS,
      0,
      Buffer.concat([u64s(fh, offset), u32s(size, 0), u64s(0), u32s(0, 0)]),
    );
  }

  async opendir(nodeid: bigint | number): Promise<bigint> {
    const r = await this.send(Op.OPENDIR, nodeid, u32s(0, 0));
    if (r.error) throw new Error(`OPENDIR failed: ${r.error}`);
    return r.body.readBigUInt64LE(0);
  }

  /** FORGET (no reply): drops `count` lookups of `nodeid`. */
  forget(nodeid: bigint | number, count: bigint | number): void {
    this.raw(encodeRequest(Op.FORGET, nodeid, u64s(count), 0n));
  }

  /** Ends the guest side and waits for serve() to resolve. */
  async end(): Promise<void> {
    this.toServer.end();
    await this.serving;
  }
}
