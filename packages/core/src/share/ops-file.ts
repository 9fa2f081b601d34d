/**
 * Op handlers on open files: OPEN, CREATE, READ, WRITE, FLUSH, RELEASE(DIR), FSYNC. Only regular
 * files are ever opened for the guest, through the magic link of an O_PATH fd on the node itself.
 */
import type * as fs from "node:fs";
import { type ShareContext, writable } from "./context";
import {
  at,
  closeFd,
  E,
  errnoOf,
  fail,
  fstatFd,
  fsyncFd,
  MODE_MASK,
  nameAfter,
  O,
  O_ACCMODE,
  openFd,
  openObject,
  readFd,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  self,
  writeFd,
} from "./host-fs";
import { entryFor } from "./ops-node";
import { FUSE_FSYNC_FDATASYNC, MAX_READ } from "./proto";

/** Open flags passed through from the guest; everything else (O_CREAT, O_DIRECT, O_PATH...) is dropped. */
const OPEN_FLAG_MASK = O_ACCMODE | O.O_APPEND | O.O_TRUNC | O.O_SYNC | O.O_DSYNC | O.O_NOATIME;

function openFlags(s: ShareContext, flags: number): number {
  const f = flags & OPEN_FLAG_MASK;
  if (s.readOnly && ((f & O_ACCMODE) !== O.O_RDONLY || f & O.O_TRUNC)) fail(E.EROFS);
  return f;
}

/** Opens the regular file the O_PATH fd `ofd` refers to; anything else → EISDIR / ELOOP / EACCES. */
async function reopen(s: ShareContext, ofd: number, st: fs.BigIntStats, flags: number): Promise<Buffer> {
  const type = Number(st.mode) & S_IFMT;
  if (type === S_IFDIR) fail(E.EISDIR);
  if (type === S_IFLNK) fail(E.ELOOP);
  // FIFOs, sockets and device nodes on the host are never opened on the guest's behalf.
  if (type !== S_IFREG) fail(E.EACCES);
  s.handles.checkCap();
  const fd = await openFd(self(ofd), flags | O.O_NONBLOCK);
  return s.handles.add({ kind: "file", fd, accmode: flags & O_ACCMODE });
}

export async function open(s: ShareContext, nodeid: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 8) fail(E.EINVAL);
  const flags = openFlags(s, body.readUInt32LE(0));
  s.handles.checkCap();
  return s.dirs.withObject(s.nodes.node(nodeid), (ofd, st) => reopen(s, ofd, st, flags));
}

export async function create(s: ShareContext, parentId: bigint, body: Buffer): Promise<Buffer[]> {
  if (body.length < 16) fail(E.EINVAL);
  const rawFlags = body.readUInt32LE(0);
  const mode = body.readUInt32LE(4);
  const name = nameAfter(body, 16);
  writable(s);
  const flags = openFlags(s, rawFlags);
  s.handles.checkCap();
  const parent = s.nodes.node(parentId);
  return s.dirs.withDir(parent, async (dfd) => {
    let fh: Buffer;
    try {
      const fd = await openFd(
        at(dfd, name),
        flags | O.O_CREAT | O.O_EXCL | O.O_NOFOLLOW | O.O_NONBLOCK,
        mode & MODE_MASK,
      );
      fh = s.handles.add({ kind: "file", fd, accmode: flags & O_ACCMODE });
    } catch (e) {
      if (errnoOf(e) !== E.EEXIST || rawFlags & O.O_EXCL) throw e;
      // Exists and the guest did not ask for O_EXCL: open the existing object like OPEN does.
      const ofd = await openObject(dfd, name, s.policy !== "follow");
      try {
        fh = await reopen(s, ofd, await fstatFd(ofd), flags);
      } finally {
        await closeFd(ofd);
      }
    }
    try {
      return [await entryFor(s, parent, dfd, name), fh];
    } catch (e) {
      await s.handles.close(fh.readBigUInt64LE(0));
      throw e;
    }
  });
}

export async function read(s: ShareContext, _nodeid: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 24) fail(E.EINVAL);
  const h = s.handles.fromBody(body);
  const offset = body.readBigUInt64LE(8);
  const size = Math.min(body.readUInt32LE(16), MAX_READ);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) fail(E.EINVAL);
  const buf = Buffer.allocUnsafe(size);
  const n = await readFd(h.fd, buf, Number(offset));
  return buf.subarray(0, n);
}

export async function write(s: ShareContext, _nodeid: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 40) fail(E.EINVAL);
  const h = s.handles.fromBody(body);
  writable(s);
  const offset = body.readBigUInt64LE(8);
  const size = body.readUInt32LE(16);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER) || 40 + size > body.length) fail(E.EINVAL);
  const data = body.subarray(40, 40 + size);
  let done = 0;
  while (done < data.length) {
    const n = await writeFd(h.fd, data.subarray(done), Number(offset) + done);
    if (n <= 0) break;
    done += n;
  }
  const out = Buffer.alloc(8);
  out.writeUInt32LE(done, 0);
  return out;
}

export function flush(s: ShareContext, _nodeid: bigint, body: Buffer): undefined {
  s.handles.fromBody(body);
  return undefined;
}

/** RELEASE and RELEASEDIR: closes the handle (an unknown one is fine). */
export async function release(s: ShareContext, _nodeid: bigint, body: Buffer): Promise<undefined> {
  if (body.length < 8) fail(E.EINVAL);
  await s.handles.close(body.readBigUInt64LE(0));
  return undefined;
}

export async function fsync(s: ShareContext, _nodeid: bigint, body: Buffer): Promise<undefined> {
  const h = s.handles.fromBody(body);
  const flags = body.length >= 12 ? body.readUInt32LE(8) : 0;
  await fsyncFd(h.fd, (flags & FUSE_FSYNC_FDATASYNC) !== 0);
  return undefined;
}
