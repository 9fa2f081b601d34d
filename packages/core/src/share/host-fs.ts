/**
 * Host-side primitives of the share server: errno answers (FsError/fail), raw-fd promise wrappers
 * (no FileHandle objects), `/proc/self/fd` paths, policy-aware open/stat of one name relative to a
 * directory fd, and validation of what the (hostile) guest sends as names.
 */
import * as fs from "node:fs";
import { constants as osConstants } from "node:os";
import { NAME_MAX } from "./proto";

export const E = osConstants.errno;
export const O = fs.constants;
/** O_PATH (Linux): a handle on the inode without opening it; needs no permission, no side effects. */
export const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
export const O_ACCMODE = 3;
export const EMPTY = Buffer.alloc(0);
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
/** The guest may set permission bits and the sticky bit, never set-uid/set-gid on host files. */
export const MODE_MASK = 0o1777;
const FD_DIR = "/proc/self/fd/";

/** An errno to answer with (positive). */
export class FsError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

export function fail(errno: number): never {
  throw new FsError(errno);
}

/** The errno an error stands for (FsError or a Node fs error), or null for anything else. */
export function errnoOf(e: unknown): number | null {
  if (e instanceof FsError) return e.errno;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof code === "string") {
    const n = (E as Record<string, number>)[code];
    if (typeof n === "number") return n;
  }
  return null;
}

// --- small promise wrappers around fd-based fs calls (no FileHandle objects, raw fds) ---------------

export function openFd(p: Buffer | string, flags: number, mode = 0o666): Promise<number> {
  return new Promise((res, rej) => fs.open(p, flags | O_CLOEXEC, mode, (e, fd) => (e ? rej(e) : res(fd))));
}
export function closeFd(fd: number): Promise<void> {
  return new Promise((res) => fs.close(fd, () => res()));
}
/** Closes an O_PATH fd without waiting for it (saves a thread-pool round trip per path component). */
let closing = 0;
let closeWaiters: (() => void)[] = [];
export function closeSoon(fd: number): void {
  closing++;
  fs.close(fd, () => {
    if (--closing > 0) return;
    const w = closeWaiters;
    closeWaiters = [];
    for (const f of w) f();
  });
}
/** Resolves once every closeSoon() issued so far has completed. */
export function closesDrained(): Promise<void> {
  return closing === 0 ? Promise.resolve() : new Promise((r) => closeWaiters.push(r));
}
export function fstatFd(fd: number): Promise<fs.BigIntStats> {
  return new Promise((res, rej) => fs.fstat(fd, { bigint: true }, (e, st) => (e ? rej(e) : res(st))));
}
export function readFd(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.read(fd, buf, 0, buf.length, pos, (e, n) => (e ? rej(e) : res(n))));
}
export function writeFd(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.write(fd, buf, 0, buf.length, pos, (e, n) => (e ? rej(e) : res(n))));
}
export function ftruncateFd(fd: number, len: number): Promise<void> {
  return new Promise((res, rej) => fs.ftruncate(fd, len, (e) => (e ? rej(e) : res())));
}
export function fsyncFd(fd: number, dataOnly: boolean): Promise<void> {
  return new Promise((res, rej) => (dataOnly ? fs.fdatasync : fs.fsync)(fd, (e) => (e ? rej(e) : res())));
}

/** `/proc/self/fd/<fd>/<name>` as bytes: the kernel resolves the fd part to the open directory itself. */
export function at(dirfd: number, name: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${FD_DIR}${dirfd}/`), name]);
}
/** `/proc/self/fd/<fd>`: the object the fd refers to (a "magic link", never re-resolved by path). */
export function self(fd: number): string {
  return `${FD_DIR}${fd}`;
}

/**
 * An O_PATH fd on `name` in directory `pfd`: the object itself when `nofollow` (policies "deny" and
 * "opaque"), else what it points to ("follow"; a dangling symlink is still an object: the symlink).
 */
export async function openObject(pfd: number, name: Buffer, nofollow: boolean): Promise<number> {
  if (nofollow) return openFd(at(pfd, name), O_PATH | O.O_NOFOLLOW);
  try {
    return await openFd(at(pfd, name), O_PATH);
  } catch (e) {
    if (errnoOf(e) === E.ENOENT) return openFd(at(pfd, name), O_PATH | O.O_NOFOLLOW);
    throw e;
  }
}

/** lstat of `name` in `pfd`, or (when `follow`) stat unless the link is dangling or loops. */
export async function statAt(pfd: number, name: Buffer, follow: boolean): Promise<fs.BigIntStats> {
  const p = at(pfd, name);
  if (!follow) return fs.promises.lstat(p, { bigint: true });
  try {
    return await fs.promises.stat(p, { bigint: true });
  } catch (e) {
    if (errnoOf(e) === E.ENOENT || errnoOf(e) === E.ELOOP) return fs.promises.lstat(p, { bigint: true });
    throw e;
  }
}

export function isDotName(name: Buffer): boolean {
  return name.length <= 2 && name.every((c) => c === 0x2e);
}

/** Validates one path component from the guest: 1..255 bytes, no "/", no NUL, not "." or "..". */
export function validateName(name: Buffer): Buffer {
  if (name.length === 0 || name.length > NAME_MAX) fail(name.length === 0 ? E.EINVAL : E.ENAMETOOLONG);
  if (name.includes(0x2f) || name.includes(0)) fail(E.EINVAL);
  if (isDotName(name)) fail(E.EINVAL);
  return name;
}

/**
 * Splits a body holding exactly `count` NUL-terminated strings (nothing after the last NUL).
 * Anything else is a malformed (hostile) request → EINVAL.
 */
export function cStrings(body: Buffer, count: number): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const nul = body.indexOf(0, pos);
    if (nul < 0) fail(E.EINVAL);
    out.push(body.subarray(pos, nul));
    pos = nul + 1;
  }
  if (pos !== body.length) fail(E.EINVAL);
  return out;
}

/** The one validated name of a body `<fixed struct of skip bytes><name>\0` (LOOKUP, MKDIR, MKNOD...). */
export function nameAfter(body: Buffer, skip: number): Buffer {
  return validateName(cStrings(body.subarray(skip), 1)[0]!);
}
