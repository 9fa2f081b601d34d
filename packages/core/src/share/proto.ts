/**
 * FUSE wire protocol constants and layouts (Linux <linux/fuse.h>, protocol 7.x), the subset the
 * share server speaks. All integers are little-endian (the guest is x86_64 or aarch64).
 */

export const FUSE_KERNEL_VERSION = 7;
/** The minor version we speak at most (feature set of 7.31); we answer min(kernel minor, this). */
export const FUSE_MAX_MINOR = 31;
export const FUSE_ROOT_ID = 1;

/** sizeof(struct fuse_in_header) */
export const IN_HEADER_SIZE = 40;
/** sizeof(struct fuse_out_header) */
export const OUT_HEADER_SIZE = 16;
/** Largest request the guest relay reads in one go (128 KiB + 4 KiB); bigger `len` = hostile guest. */
export const MAX_REQUEST_SIZE = 135168;
/** max_write announced in INIT; the relay's buffer holds one such WRITE plus headers. */
export const MAX_WRITE = 131072;
/** Largest READ/READDIR reply body we produce. */
export const MAX_READ = 131072;
export const NAME_MAX = 255;
export const SYMLINK_MAX = 4095;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SYNCFS: 50,
  TMPFILE: 51,
} as const;

/** INIT flags (fuse_init_in/out.flags). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  INIT_EXT: 1 << 30,
} as const;

/** fuse_setattr_in.valid bits */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

export const FUSE_GETATTR_FH = 1;
export const FUSE_FSYNC_FDATASYNC = 1;
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const RENAME_WHITEOUT = 4;

/** sizeof(struct fuse_attr) */
export const ATTR_SIZE = 88;
/** sizeof(struct fuse_entry_out) */
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
/** sizeof(struct fuse_attr_out) */
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
/** sizeof(struct fuse_open_out) */
export const OPEN_OUT_SIZE = 16;
/** sizeof(struct fuse_init_out) for minor >= 23 */
export const INIT_OUT_SIZE = 64;
/** sizeof(struct fuse_statfs_out) */
export const STATFS_OUT_SIZE = 80;
/** offsetof(struct fuse_dirent, name) */
export const DIRENT_NAME_OFFSET = 24;
/** offsetof(struct fuse_direntplus, dirent.name): fuse_entry_out (128) + fuse_dirent header (24). */
export const DIRENTPLUS_NAME_OFFSET = ENTRY_OUT_SIZE + DIRENT_NAME_OFFSET;

/** d_type values used in fuse_dirent.type */
export const DT = { UNKNOWN: 0, FIFO: 1, CHR: 2, DIR: 4, BLK: 6, REG: 8, LNK: 10, SOCK: 12 } as const;

/** Decoded struct fuse_in_header. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export function readInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: b.readBigUInt64LE(16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
  };
}

/** Encodes one reply: fuse_out_header (+ body when error is 0). `error` is 0 or a negative errno. */
export function encodeReply(unique: bigint, error: number, body?: Buffer | readonly Buffer[]): Buffer {
  const parts: Buffer[] = body === undefined || error !== 0 ? [] : Buffer.isBuffer(body) ? [body] : [...body];
  let bodyLen = 0;
  for (const p of parts) bodyLen += p.length;
  const h = Buffer.alloc(OUT_HEADER_SIZE);
  h.writeUInt32LE(OUT_HEADER_SIZE + bodyLen, 0);
  h.writeInt32LE(error, 4);
  h.writeBigUInt64LE(unique, 8);
  return parts.length === 0 ? h : Buffer.concat([h, ...parts], OUT_HEADER_SIZE + bodyLen);
}

/** Pads to the 8-byte alignment FUSE uses for dirent records. */
export function align8(n: number): number {
  return (n + 7) & ~7;
}
