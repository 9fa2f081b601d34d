/**
 * Op handlers on names and inodes: LOOKUP, GETATTR, SETATTR, READLINK, SYMLINK, MKNOD, MKDIR,
 * UNLINK, RMDIR, RENAME(2), LINK, ACCESS. Every host path is a name relative to a leased directory
 * fd (see dir-cache.ts); the node table follows what they change.
 */
import * as fs from "node:fs";
import { type ShareContext, writable } from "./context";
import {
  at,
  closeFd,
  cStrings,
  E,
  fail,
  fstatFd,
  ftruncateFd,
  MODE_MASK,
  nameAfter,
  O,
  openFd,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  self,
  statAt,
  validateName,
} from "./host-fs";
import type { Node } from "./nodes";
import { Fattr, FUSE_GETATTR_FH, FUSE_ROOT_ID, RENAME_NOREPLACE, SYMLINK_MAX } from "./proto";

/** stat of `name` in `pfd` as the policy shows it: a host symlink under "deny" is EACCES. */
async function visibleStat(s: ShareContext, pfd: number, name: Buffer): Promise<fs.BigIntStats> {
  const st = await statAt(pfd, name, s.policy === "follow");
  if (s.policy === "deny" && st.isSymbolicLink()) fail(E.EACCES);
  return st;
}

/** After creating `name` in parent: stat it (never following) and remember the node. */
export async function entryFor(s: ShareContext, parent: Node, dfd: number, name: Buffer): Promise<Buffer> {
  const st = await fs.promises.lstat(at(dfd, name), { bigint: true });
  return s.enc.entryOut(s.nodes.remember(parent, name, st), st);
}

/** Creates `name` in directory node `parentId` with `make(host path)`, then remembers it (SYMLINK, MKNOD, MKDIR). */
async function makeEntry(
  s: ShareContext,
  parentId: bigint,
  name: Buffer,
  make: (path: Buffer) => Promise<unknown>,
): Promise<Buffer> {
  const parent = s.nodes.node(parentId);
  return s.dirs.withDir(parent, async (dfd) => {
    await make(at(dfd, name));
    return entryFor(s, parent, dfd, name);
  });
}

export async function lookup(s: ShareContext, parentId: bigint, body: Buffer): Promise<Buffer> {
  const name = nameAfter(body, 0);
  const parent = s.nodes.node(parentId);
  return s.dirs.withDir(parent, async (dfd) => {
    const st = await visibleStat(s, dfd, name);
    return s.enc.entryOut(s.nodes.remember(parent, name, st), st);
  });
}

export async function getattr(s: ShareContext, nodeid: bigint, body: Buffer): Promise<Buffer> {
  if (body.length >= 16 && body.readUInt32LE(0) & FUSE_GETATTR_FH) {
    const h = s.handles.peek(body.readBigUInt64LE(8));
    if (h) return s.enc.attrOut(await fstatFd(h.fd));
  }
  const n = s.nodes.node(nodeid);
  if (n.id === FUSE_ROOT_ID) return s.enc.attrOut(await fstatFd(s.dirs.rootFd));
  return s.dirs.withParent(n, async (pfd, name) => {
    const st = await visibleStat(s, pfd, name);
    if (st.ino !== n.ino) fail(E.ESTALE);
    return s.enc.attrOut(st);
  });
}

/** A SETATTR time in seconds: now, the one the guest sent, or the current one (as `valid` says). */
function newTime(
  valid: number,
  nowBit: number,
  setBit: number,
  now: number,
  sec: bigint,
  nsec: number,
  curNs: bigint,
): number {
  return valid & nowBit ? now : valid & setBit ? Number(sec) + nsec / 1e9 : Number(curNs) / 1e9;
}

export async function setattr(s: ShareContext, nodeid: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 88) fail(E.EINVAL);
  writable(s);
  const valid = body.readUInt32LE(0);
  const fh = body.readBigUInt64LE(8);
  const size = body.readBigUInt64LE(16);
  const atime = body.readBigUInt64LE(32);
  const mtime = body.readBigUInt64LE(40);
  const atimensec = body.readUInt32LE(56);
  const mtimensec = body.readUInt32LE(60);
  const mode = body.readUInt32LE(68);
  const uid = body.readUInt32LE(76);
  const gid = body.readUInt32LE(80);
  const handle = valid & Fattr.FH ? s.handles.peek(fh) : undefined;

  return s.dirs.withObject(s.nodes.node(nodeid), async (ofd, st, pfd, name) => {
    const isLink = st.isSymbolicLink();
    if (valid & (Fattr.UID | Fattr.GID)) {
      // The guest sees host-owned files as 0:0 and everything else as 65534; it may only "change"
      // ownership to what it already is (cp -p, tar do that). Real chown on the host: EPERM.
      const curUid = s.enc.guestUid(st);
      const curGid = s.enc.guestGid(st);
      if ((valid & Fattr.UID && uid !== curUid) || (valid & Fattr.GID && gid !== curGid)) fail(E.EPERM);
    }
    if (valid & Fattr.MODE) {
      if (isLink) fail(E.EOPNOTSUPP);
      await fs.promises.chmod(self(ofd), mode & MODE_MASK);
    }
    if (valid & Fattr.SIZE) {
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) fail(E.EFBIG);
      if (handle?.kind === "file" && handle.accmode !== O.O_RDONLY) {
        await ftruncateFd(handle.fd, Number(size));
      } else {
        if ((Number(st.mode) & S_IFMT) === S_IFDIR) fail(E.EISDIR);
        if ((Number(st.mode) & S_IFMT) !== S_IFREG) fail(E.EINVAL);
        const wfd = await openFd(self(ofd), O.O_WRONLY | O.O_NONBLOCK);
        try {
          await ftruncateFd(wfd, Number(size));
        } finally {
          await closeFd(wfd);
        }
      }
    }
    if (valid & (Fattr.ATIME | Fattr.MTIME | Fattr.ATIME_NOW | Fattr.MTIME_NOW)) {
      const now = Date.now() / 1000;
      const a = newTime(valid, Fattr.ATIME_NOW, Fattr.ATIME, now, atime, atimensec, st.atimeNs);
      const m = newTime(valid, Fattr.MTIME_NOW, Fattr.MTIME, now, mtime, mtimensec, st.mtimeNs);
      if (isLink) {
        if (pfd < 0) fail(E.EINVAL);
        await fs.promises.lutimes(at(pfd, name), a, m);
      } else {
        await fs.promises.utimes(self(ofd), a, m);
      }
    }
    return s.enc.attrOut(await fstatFd(ofd));
  });
}

export async function readlink(s: ShareContext, nodeid: bigint): Promise<Buffer> {
  if (s.policy === "deny") fail(E.EACCES);
  const n = s.nodes.node(nodeid);
  if (n.id === FUSE_ROOT_ID) fail(E.EINVAL);
  return s.dirs.withParent(n, (pfd, name) => fs.promises.readlink(at(pfd, name), { encoding: "buffer" }));
}

export async function symlink(s: ShareContext, parentId: bigint, body: Buffer): Promise<Buffer> {
  const [rawName, target] = cStrings(body, 2) as [Buffer, Buffer];
  const name = validateName(rawName);
  if (s.policy === "deny") fail(E.EPERM);
  writable(s);
  if (target.length === 0 || target.length > SYMLINK_MAX) fail(E.EINVAL);
  // The target is stored verbatim; the host never resolves it ("opaque").
  return makeEntry(s, parentId, name, (p) => fs.promises.symlink(target, p));
}

export async function mknod(s: ShareContext, parentId: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 16) fail(E.EINVAL);
  const mode = body.readUInt32LE(0);
  const name = nameAfter(body, 16);
  if ((mode & S_IFMT) !== S_IFREG) fail(E.EPERM);
  writable(s);
  return makeEntry(s, parentId, name, async (p) => {
    const fd = await openFd(
      p,
      O.O_CREAT | O.O_EXCL | O.O_WRONLY | O.O_NOFOLLOW | O.O_NONBLOCK,
      mode & MODE_MASK,
    );
    await closeFd(fd);
  });
}

export async function mkdir(s: ShareContext, parentId: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 8) fail(E.EINVAL);
  const mode = body.readUInt32LE(0);
  const name = nameAfter(body, 8);
  writable(s);
  return makeEntry(s, parentId, name, (p) => fs.promises.mkdir(p, { mode: mode & MODE_MASK }));
}

/** UNLINK (dir false) and RMDIR (dir true). */
async function remove(s: ShareContext, parentId: bigint, body: Buffer, dir: boolean): Promise<undefined> {
  const name = nameAfter(body, 0);
  writable(s);
  const parent = s.nodes.node(parentId);
  await s.dirs.withDir(parent, async (dfd) => {
    // unlink/rmdir act on the final component itself, never through a symlink.
    if (dir) await fs.promises.rmdir(at(dfd, name));
    else await fs.promises.unlink(at(dfd, name));
  });
  s.nodes.removed(parent, name);
  return undefined;
}
export const unlink = (s: ShareContext, parentId: bigint, body: Buffer) => remove(s, parentId, body, false);
export const rmdir = (s: ShareContext, parentId: bigint, body: Buffer) => remove(s, parentId, body, true);

/** RENAME (fuse_rename_in: 8 bytes) and RENAME2 (fuse_rename2_in: 16 bytes, with flags). */
async function rename(
  s: ShareContext,
  parentId: bigint,
  body: Buffer,
  skip: number,
  flags: number,
): Promise<undefined> {
  if (body.length < skip) fail(E.EINVAL);
  const newParentId = body.readBigUInt64LE(0);
  const [rawOld, rawNew] = cStrings(body.subarray(skip), 2) as [Buffer, Buffer];
  const oldName = validateName(rawOld);
  const newName = validateName(rawNew);
  if (flags & ~RENAME_NOREPLACE) fail(E.EINVAL); // RENAME_EXCHANGE / WHITEOUT unsupported
  writable(s);
  const oldParent = s.nodes.node(parentId);
  const newParent = s.nodes.node(newParentId);
  await s.dirs.withDir(oldParent, (ofd) =>
    s.dirs.withDir(newParent, async (nfd) => {
      if (flags & RENAME_NOREPLACE) {
        // Node has no renameat2: check then rename (a host-side race can still replace; documented).
        const exists = await fs.promises.lstat(at(nfd, newName)).then(
          () => true,
          () => false,
        );
        if (exists) fail(E.EEXIST);
      }
      await fs.promises.rename(at(ofd, oldName), at(nfd, newName));
    }),
  );
  s.nodes.renamed(oldParent, oldName, newParent, newName);
  return undefined;
}
export const rename1 = (s: ShareContext, parentId: bigint, body: Buffer) => rename(s, parentId, body, 8, 0);
export function rename2(s: ShareContext, parentId: bigint, body: Buffer): Promise<undefined> {
  if (body.length < 16) fail(E.EINVAL);
  return rename(s, parentId, body, 16, body.readUInt32LE(8));
}

export async function link(s: ShareContext, newParentId: bigint, body: Buffer): Promise<Buffer> {
  if (body.length < 8) fail(E.EINVAL);
  const oldId = body.readBigUInt64LE(0);
  const name = nameAfter(body, 8);
  if (s.policy === "deny") fail(E.EPERM);
  writable(s);
  const old = s.nodes.node(oldId);
  if (old.id === FUSE_ROOT_ID) fail(E.EPERM);
  const newParent = s.nodes.node(newParentId);
  // Both ends are nodes inside the share (by construction); link(2) never follows the source.
  return s.dirs.withParent(old, (opfd, oname) =>
    s.dirs.withDir(newParent, async (nfd) => {
      await fs.promises.link(at(opfd, oname), at(nfd, name));
      return entryFor(s, newParent, nfd, name);
    }),
  );
}

export async function access(s: ShareContext, nodeid: bigint, body: Buffer): Promise<undefined> {
  if (body.length < 8) fail(E.EINVAL);
  const mask = body.readUInt32LE(0) & 7;
  if (s.readOnly && mask & 2) fail(E.EROFS);
  await s.dirs.withObject(s.nodes.node(nodeid), async (ofd, st) => {
    if (st.isSymbolicLink()) return;
    await fs.promises.access(self(ofd), mask);
  });
  return undefined;
}
