/**
 * The op table of the share server: one row per FUSE opcode it answers (opcode → name, phase,
 * handler). An opcode without a row (LSEEK, FALLOCATE, COPY_FILE_RANGE, locks, ioctl, poll, bmap,
 * syncfs, tmpfile, unknown) is answered ENOSYS. Also the session-level handlers: INIT, DESTROY,
 * FORGET, BATCH_FORGET, STATFS.
 */
import * as fs from "node:fs";
import type { ShareContext } from "./context";
import { E, fail, self } from "./host-fs";
import { opendir, readdir, readdirplus } from "./ops-dir";
import { create, flush, fsync, open, read, release, write } from "./ops-file";
import {
  access,
  getattr,
  link,
  lookup,
  mkdir,
  mknod,
  readlink,
  rename1,
  rename2,
  rmdir,
  setattr,
  symlink,
  unlink,
} from "./ops-node";
import {
  FUSE_KERNEL_VERSION,
  FUSE_MAX_MINOR,
  INIT_OUT_SIZE,
  InitFlag,
  MAX_READ,
  MAX_WRITE,
  NAME_MAX,
  Op,
  STATFS_OUT_SIZE,
} from "./proto";

/** A reply body (several parts are concatenated), or undefined for an empty success reply. */
export type Reply = Buffer | Buffer[] | undefined;

export interface OpRow {
  name: string;
  /**
   * "inline": no reply and no async work, run at once even before INIT, not counted in flight;
   * "init": answered before INIT too (INIT itself); "session": answered after INIT, else EIO.
   */
  phase: "inline" | "init" | "session";
  run(s: ShareContext, nodeid: bigint, body: Buffer): Reply | Promise<Reply>;
}

function init(s: ShareContext, _nodeid: bigint, body: Buffer): Buffer {
  if (body.length < 8) fail(E.EINVAL);
  const major = body.readUInt32LE(0);
  const minor = body.readUInt32LE(4);
  const out = Buffer.alloc(INIT_OUT_SIZE);
  out.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  if (major > FUSE_KERNEL_VERSION) {
    // Newer major: answer with ours only; the kernel retries with our major.
    return out.subarray(0, 8);
  }
  if (major < FUSE_KERNEL_VERSION || minor < 13) fail(E.EPROTO);
  const kernelReadahead = body.length >= 12 ? body.readUInt32LE(8) : 0;
  const kernelFlags = body.length >= 16 ? body.readUInt32LE(12) : 0;
  const nego = Math.min(minor, FUSE_MAX_MINOR);
  let want =
    InitFlag.ASYNC_READ |
    InitFlag.ATOMIC_O_TRUNC |
    InitFlag.BIG_WRITES |
    InitFlag.AUTO_INVAL_DATA |
    InitFlag.PARALLEL_DIROPS |
    InitFlag.MAX_PAGES;
  if (s.readdirPlus !== "off") want |= InitFlag.DO_READDIRPLUS;
  if (s.readdirPlus === "auto") want |= InitFlag.READDIRPLUS_AUTO;
  const flags = (want & kernelFlags) >>> 0;
  out.writeUInt32LE(nego, 4);
  out.writeUInt32LE(Math.min(kernelReadahead, MAX_READ), 8);
  out.writeUInt32LE(flags, 12);
  out.writeUInt16LE(16, 16); // max_background
  out.writeUInt16LE(12, 18); // congestion_threshold
  out.writeUInt32LE(MAX_WRITE, 20);
  out.writeUInt32LE(1, 24); // time_gran (ns)
  out.writeUInt16LE(MAX_WRITE / 4096, 28); // max_pages
  s.minor = nego;
  s.plus = (flags & InitFlag.DO_READDIRPLUS) !== 0;
  return nego >= 23 ? out : out.subarray(0, 24);
}

async function destroy(s: ShareContext): Promise<undefined> {
  await s.handles.closeAll();
  return undefined;
}

function forget(s: ShareContext, nodeid: bigint, body: Buffer): undefined {
  if (body.length >= 8) s.nodes.forget(nodeid, body.readBigUInt64LE(0));
  return undefined;
}

function batchForget(s: ShareContext, _nodeid: bigint, body: Buffer): undefined {
  if (body.length >= 8) {
    const count = body.readUInt32LE(0);
    for (let i = 0; i < count && 8 + i * 16 + 16 <= body.length; i++) {
      s.nodes.forget(body.readBigUInt64LE(8 + i * 16), body.readBigUInt64LE(16 + i * 16));
    }
  }
  return undefined;
}

async function statfs(s: ShareContext): Promise<Buffer> {
  const st = await fs.promises.statfs(self(s.dirs.rootFd), { bigint: true });
  const out = Buffer.alloc(STATFS_OUT_SIZE);
  out.writeBigUInt64LE(st.blocks, 0);
  out.writeBigUInt64LE(st.bfree, 8);
  out.writeBigUInt64LE(st.bavail, 16);
  out.writeBigUInt64LE(st.files, 24);
  out.writeBigUInt64LE(st.ffree, 32);
  out.writeUInt32LE(Number(st.bsize), 40);
  out.writeUInt32LE(NAME_MAX, 44);
  out.writeUInt32LE(Number(st.bsize), 48);
  return out;
}

const nothing = (): undefined => undefined;
/** ENOSYS makes the guest kernel stop asking (for xattrs it then answers EOPNOTSUPP itself). */
const unsupported = (): never => fail(E.ENOSYS);

function row(name: keyof typeof Op, run: OpRow["run"], phase: OpRow["phase"] = "session"): [number, OpRow] {
  return [Op[name], { name, phase, run }];
}

/** The op table: opcode → row. */
export const OPS: ReadonlyMap<number, OpRow> = new Map([
  row("INIT", init, "init"),
  row("DESTROY", destroy),
  row("FORGET", forget, "inline"),
  row("BATCH_FORGET", batchForget, "inline"),
  row("INTERRUPT", nothing, "inline"),
  row("LOOKUP", lookup),
  row("GETATTR", getattr),
  row("SETATTR", setattr),
  row("READLINK", readlink),
  row("SYMLINK", symlink),
  row("MKNOD", mknod),
  row("MKDIR", mkdir),
  row("UNLINK", unlink),
  row("RMDIR", rmdir),
  row("RENAME", rename1),
  row("RENAME2", rename2),
  row("LINK", link),
  row("OPEN", open),
  row("CREATE", create),
  row("READ", read),
  row("WRITE", write),
  row("FLUSH", flush),
  row("RELEASE", release),
  row("RELEASEDIR", release),
  row("FSYNC", fsync),
  row("OPENDIR", opendir),
  row("READDIR", readdir),
  row("READDIRPLUS", readdirplus),
  row("FSYNCDIR", nothing),
  row("STATFS", statfs),
  row("ACCESS", access),
  row("SETXATTR", unsupported),
  row("GETXATTR", unsupported),
  row("LISTXATTR", unsupported),
  row("REMOVEXATTR", unsupported),
]);
