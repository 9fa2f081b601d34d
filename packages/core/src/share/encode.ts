/**
 * Reply encoders of the share server: struct fuse_attr (host owner mapped to the guest's 0:0,
 * everyone else to nobody), fuse_entry_out / fuse_attr_out with the announced cache lifetime, and
 * the dirent records of READDIR/READDIRPLUS.
 */
import type * as fs from "node:fs";
import type { Node } from "./nodes";
import { ATTR_OUT_SIZE, DIRENT_NAME_OFFSET, ENTRY_OUT_SIZE } from "./proto";

const NOBODY = 65534;

export interface DirEntry {
  name: Buffer;
  type: number;
}

function splitNs(ns: bigint): [bigint, number] {
  let s = ns / 1_000_000_000n;
  let n = ns % 1_000_000_000n;
  if (n < 0n) {
    n += 1_000_000_000n;
    s -= 1n;
  }
  return [BigInt.asUintN(64, s), Number(n)];
}

/** A stable non-zero inode number for a directory entry (readdir does not stat; LOOKUP gives the real one). */
export function fakeIno(name: Buffer): number {
  let h = 0x811c9dc5;
  for (const c of name) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return h === 0 ? 1 : h;
}

/** struct fuse_dirent at `off` (also the tail of a fuse_direntplus); `next` is the entry's offset cookie. */
export function writeDirent(
  out: Buffer,
  off: number,
  ino: bigint,
  next: number,
  e: DirEntry,
  type: number,
): void {
  out.writeBigUInt64LE(ino, off);
  out.writeBigUInt64LE(BigInt(next), off + 8);
  out.writeUInt32LE(e.name.length, off + 16);
  out.writeUInt32LE(type, off + 20);
  e.name.copy(out, off + DIRENT_NAME_OFFSET);
}

export class AttrEncoder {
  private readonly ttlSec: bigint;
  private readonly ttlNsec: number;
  private readonly hostUid = process.getuid?.() ?? 0;
  private readonly hostGid = process.getgid?.() ?? 0;

  /** @param ttlMs entry/attribute cache lifetime announced to the guest kernel */
  constructor(ttlMs: number) {
    this.ttlSec = BigInt(Math.floor(ttlMs / 1000));
    this.ttlNsec = (ttlMs % 1000) * 1_000_000;
  }

  /** The owner the guest sees: 0 for the host user, nobody for anyone else (same for the group). */
  guestUid(st: fs.BigIntStats): number {
    return Number(st.uid) === this.hostUid ? 0 : NOBODY;
  }
  guestGid(st: fs.BigIntStats): number {
    return Number(st.gid) === this.hostGid ? 0 : NOBODY;
  }

  private attr(out: Buffer, off: number, st: fs.BigIntStats): void {
    const [as, an] = splitNs(st.atimeNs);
    const [ms, mn] = splitNs(st.mtimeNs);
    const [cs, cn] = splitNs(st.ctimeNs);
    out.writeBigUInt64LE(BigInt.asUintN(64, st.ino), off);
    out.writeBigUInt64LE(BigInt.asUintN(64, st.size), off + 8);
    out.writeBigUInt64LE(BigInt.asUintN(64, st.blocks), off + 16);
    out.writeBigUInt64LE(as, off + 24);
    out.writeBigUInt64LE(ms, off + 32);
    out.writeBigUInt64LE(cs, off + 40);
    out.writeUInt32LE(an, off + 48);
    out.writeUInt32LE(mn, off + 52);
    out.writeUInt32LE(cn, off + 56);
    out.writeUInt32LE(Number(st.mode) >>> 0, off + 60);
    out.writeUInt32LE(Number(BigInt.asUintN(32, st.nlink)), off + 64);
    out.writeUInt32LE(this.guestUid(st), off + 68);
    out.writeUInt32LE(this.guestGid(st), off + 72);
    out.writeUInt32LE(Number(BigInt.asUintN(32, st.rdev)), off + 76);
    out.writeUInt32LE(Number(BigInt.asUintN(32, st.blksize)), off + 80);
    out.writeUInt32LE(0, off + 84);
  }

  entryOut(n: Node, st: fs.BigIntStats): Buffer {
    const out = Buffer.alloc(ENTRY_OUT_SIZE);
    this.writeEntry(out, 0, n, st);
    return out;
  }

  /** struct fuse_entry_out at `off` (LOOKUP replies and READDIRPLUS entries alike). */
  writeEntry(out: Buffer, off: number, n: Node, st: fs.BigIntStats): void {
    out.writeBigUInt64LE(BigInt(n.id), off);
    out.writeBigUInt64LE(0n, off + 8); // generation: node ids are never reused
    out.writeBigUInt64LE(this.ttlSec, off + 16);
    out.writeBigUInt64LE(this.ttlSec, off + 24);
    out.writeUInt32LE(this.ttlNsec, off + 32);
    out.writeUInt32LE(this.ttlNsec, off + 36);
    this.attr(out, off + 40, st);
  }

  attrOut(st: fs.BigIntStats): Buffer {
    const out = Buffer.alloc(ATTR_OUT_SIZE);
    out.writeBigUInt64LE(this.ttlSec, 0);
    out.writeUInt32LE(this.ttlNsec, 8);
    this.attr(out, 16, st);
    return out;
  }
}
