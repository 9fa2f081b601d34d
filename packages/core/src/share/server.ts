/**
 * ShareServer: a FUSE file server that serves one host directory over a byte stream carrying raw
 * FUSE requests (struct fuse_in_header + body, as read from /dev/fuse by the guest relay) and
 * receiving raw replies. The guest is treated as hostile: every name is validated, every host path
 * is resolved component by component through real directory fds (`/proc/self/fd/<dirfd>/<name>`,
 * O_NOFOLLOW), so neither a guest-created nor a concurrently swapped-in host symlink can redirect an
 * operation outside the share (policies "deny" and "opaque"). See README.md in this directory.
 */
import * as fs from "node:fs";
import { constants as osConstants } from "node:os";
import type { Duplex } from "node:stream";
import { invalidOption, SupermachineError } from "../errors";
import {
  ATTR_OUT_SIZE,
  align8,
  DIRENT_NAME_OFFSET,
  DIRENTPLUS_NAME_OFFSET,
  DT,
  ENTRY_OUT_SIZE,
  encodeReply,
  Fattr,
  FUSE_FSYNC_FDATASYNC,
  FUSE_GETATTR_FH,
  FUSE_KERNEL_VERSION,
  FUSE_MAX_MINOR,
  FUSE_ROOT_ID,
  IN_HEADER_SIZE,
  INIT_OUT_SIZE,
  type InHeader,
  InitFlag,
  MAX_READ,
  MAX_REQUEST_SIZE,
  MAX_WRITE,
  NAME_MAX,
  OPEN_OUT_SIZE,
  Op,
  RENAME_NOREPLACE,
  readInHeader,
  STATFS_OUT_SIZE,
  SYMLINK_MAX,
} from "./proto";

export type SymlinkPolicy = "deny" | "opaque" | "follow";
export type ReaddirPlusMode = "off" | "auto" | "always";

export interface ShareServerOptions {
  /** Host directory to serve (trusted: resolved once, following symlinks, when serve() starts). */
  root: string;
  /** Symlink policy, see README.md. */
  policy: SymlinkPolicy;
  /** Share tag (informational: used in error messages). */
  tag: string;
  /** At most this many requests are handled concurrently; the stream is paused beyond. Default 64. */
  maxInFlight?: number;
  /** At most this many open files/directories (OPEN/CREATE/OPENDIR); beyond → ENFILE. Default 1024. */
  maxOpenHandles?: number;
  /** At most this many remembered nodes (LOOKUP results); beyond → ENFILE. Default 100000. */
  maxNodes?: number;
  /**
   * Directory O_PATH fds kept open (LRU) to avoid re-walking from the root. Default 256; 0 = walk
   * every path from the root each time.
   */
  dirFdCache?: number;
  /** Refuse every modifying operation with EROFS. */
  readOnly?: boolean;
  /**
   * Entry/attribute cache lifetime announced to the guest kernel, in ms. Default 0: host edits are
   * visible at once at the cost of one LOOKUP/GETATTR round trip per path component (see README).
   */
  cacheTtlMs?: number;
  /**
   * FUSE_READDIRPLUS (a listing that carries each entry's LOOKUP reply, saving one round trip per
   * entry): "off", "auto" (the kernel uses it for the first page of a listing and when it saw
   * LOOKUPs in that directory) or "always". Default: "auto" when cacheTtlMs > 0, else "off" (with
   * zero entry timeouts the kernel re-LOOKUPs every entry anyway; measured in README.md).
   */
  readdirPlus?: ReaddirPlusMode;
  /** Called for unexpected internal errors and protocol violations (the stream is never thrown at). */
  onError?: (e: Error) => void;
}

export interface ShareServerStats {
  /** Requests parsed since construction. */
  requests: number;
  /** Handlers running now. */
  inFlight: number;
  /** Highest number of handlers running at once. */
  peakInFlight: number;
  /** Nodes (inodes known to the guest kernel) remembered now. */
  nodes: number;
  /** Open file/directory handles now. */
  openHandles: number;
  /** Replies that carried an error. */
  errorReplies: number;
  /** Times the input stream was paused for back-pressure. */
  pauses: number;
  /** Protocol version negotiated by INIT ("7.31"), or null before INIT. */
  protocol: string | null;
}

const E = osConstants.errno;
const O = fs.constants;
/** O_PATH (Linux): a handle on the inode without opening it; needs no permission, no side effects. */
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
const O_ACCMODE = 3;
const EMPTY = Buffer.alloc(0);
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** The guest may set permission bits and the sticky bit, never set-uid/set-gid on host files. */
const MODE_MASK = 0o1777;
/** Open flags passed through from the guest; everything else (O_CREAT, O_DIRECT, O_PATH...) is dropped. */
const OPEN_FLAG_MASK = O_ACCMODE | O.O_APPEND | O.O_TRUNC | O.O_SYNC | O.O_DSYNC | O.O_NOATIME;
const MAX_DEPTH = 4096;
const NOBODY = 65534;
const FD_DIR = "/proc/self/fd/";

/** An errno to answer with (positive). */
class FsError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

function fail(errno: number): never {
  throw new FsError(errno);
}

interface Node {
  id: number;
  parent: number;
  name: Buffer;
  /** Map key `${parent}/${name(latin1)}`, or null when detached (unlinked/replaced: stale). */
  key: string | null;
  nlookup: number;
  /** Child nodes still referencing this one as parent. */
  children: number;
  ino: bigint;
}

interface CachedDir {
  fd: number;
  refs: number;
  dead: boolean;
}

interface DirLease {
  fd: number;
  release(): void;
}

interface Handle {
  kind: "file" | "dir";
  fd: number;
  /** Access mode the file was opened with (O_RDONLY/O_WRONLY/O_RDWR). */
  accmode: number;
  /** The directory node a "dir" handle was opened on (READDIRPLUS remembers entries under it). */
  node?: Node;
  /** Directory listing snapshot (taken at offset 0) so that offsets stay stable. */
  entries?: DirEntry[];
}

interface DirEntry {
  name: Buffer;
  type: number;
}

// --- small promise wrappers around fd-based fs calls (no FileHandle objects, raw fds) ---------------

function openFd(p: Buffer | string, flags: number, mode = 0o666): Promise<number> {
  return new Promise((res, rej) => fs.open(p, flags | O_CLOEXEC, mode, (e, fd) => (e ? rej(e) : res(fd))));
}
function closeFd(fd: number): Promise<void> {
  return new Promise((res) => fs.close(fd, () => res()));
}
const noop = () => {};
/** Closes an O_PATH fd without waiting for it (saves a thread-pool round trip per path component). */
let closing = 0;
let closeWaiters: (() => void)[] = [];
function closeSoon(fd: number): void {
  closing++;
  fs.close(fd, () => {
    if (--closing > 0) return;
    const w = closeWaiters;
    closeWaiters = [];
    for (const f of w) f();
  });
}
/** Resolves once every closeSoon() issued so far has completed. */
function closesDrained(): Promise<void> {
  return closing === 0 ? Promise.resolve() : new Promise((r) => closeWaiters.push(r));
}
function fstatFd(fd: number): Promise<fs.BigIntStats> {
  return new Promise((res, rej) => fs.fstat(fd, { bigint: true }, (e, st) => (e ? rej(e) : res(st))));
}
function readFd(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.read(fd, buf, 0, buf.length, pos, (e, n) => (e ? rej(e) : res(n))));
}
function writeFd(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.write(fd, buf, 0, buf.length, pos, (e, n) => (e ? rej(e) : res(n))));
}
function ftruncateFd(fd: number, len: number): Promise<void> {
  return new Promise((res, rej) => fs.ftruncate(fd, len, (e) => (e ? rej(e) : res())));
}
function fsyncFd(fd: number, dataOnly: boolean): Promise<void> {
  return new Promise((res, rej) => (dataOnly ? fs.fdatasync : fs.fsync)(fd, (e) => (e ? rej(e) : res())));
}

/** `/proc/self/fd/<fd>/<name>` as bytes: the kernel resolves the fd part to the open directory itself. */
function at(dirfd: number, name: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${FD_DIR}${dirfd}/`), name]);
}
/** `/proc/self/fd/<fd>`: the object the fd refers to (a "magic link", never re-resolved by path). */
function self(fd: number): string {
  return `${FD_DIR}${fd}`;
}

function errnoOf(e: unknown): number | null {
  if (e instanceof FsError) return e.errno;
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof code === "string") {
    const n = (E as Record<string, number>)[code];
    if (typeof n === "number") return n;
  }
  return null;
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

/** Validates one path component from the guest: 1..255 bytes, no "/", no NUL, not "." or "..". */
export function validateName(name: Buffer): Buffer {
  if (name.length === 0 || name.length > NAME_MAX) fail(name.length === 0 ? E.EINVAL : E.ENAMETOOLONG);
  if (name.includes(0x2f) || name.includes(0)) fail(E.EINVAL);
  if (name.length <= 2 && name.every((c) => c === 0x2e)) fail(E.EINVAL);
  return name;
}

/**
 * Splits a body holding exactly `count` NUL-terminated strings (nothing after the last NUL).
 * Anything else is a malformed (hostile) request → EINVAL.
 */
function cStrings(body: Buffer, count: number): Buffer[] {
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

export class ShareServer {
  readonly root: string;
  readonly policy: SymlinkPolicy;
  readonly tag: string;
  private readonly maxInFlight: number;
  private readonly maxOpenHandles: number;
  private readonly maxNodes: number;
  private readonly readOnly: boolean;
  private readonly ttlSec: bigint;
  private readonly ttlNsec: number;
  private readonly readdirPlus: ReaddirPlusMode;
  private readonly onError: (e: Error) => void;
  /** O_NOFOLLOW unless policy "follow". */
  private readonly nofollow: number;
  private readonly hostUid = process.getuid?.() ?? 0;
  private readonly hostGid = process.getgid?.() ?? 0;

  private rootFd = -1;
  private nodes = new Map<number, Node>();
  private byKey = new Map<string, Node>();
  private nextNodeId = FUSE_ROOT_ID + 1;
  private handles = new Map<number, Handle>();
  private dirCache = new Map<number, CachedDir>();
  private readonly maxCachedDirs: number;
  private nextFh = 1;
  private inFlight = 0;
  private peakInFlight = 0;
  private requests = 0;
  private errorReplies = 0;
  private pauses = 0;
  private minor = 0;
  /** READDIRPLUS negotiated by the last INIT. */
  private plus = false;
  private stream: Duplex | null = null;
  private serving: Promise<void> | null = null;

  constructor(opts: ShareServerOptions) {
    if (opts.policy !== "deny" && opts.policy !== "opaque" && opts.policy !== "follow") {
      throw invalidOption(
        "mounts[].symlinks",
        `must be "deny", "opaque" or "follow" (got ${String(opts.policy)})`,
      );
    }
    this.root = opts.root;
    this.policy = opts.policy;
    this.tag = opts.tag;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 64);
    this.maxOpenHandles = Math.max(1, opts.maxOpenHandles ?? 1024);
    this.maxNodes = Math.max(2, opts.maxNodes ?? 100_000);
    this.maxCachedDirs = Math.max(0, Math.floor(opts.dirFdCache ?? 256));
    this.readOnly = opts.readOnly ?? false;
    const ttlMs = Math.max(0, Math.floor(opts.cacheTtlMs ?? 0));
    this.ttlSec = BigInt(Math.floor(ttlMs / 1000));
    this.ttlNsec = (ttlMs % 1000) * 1_000_000;
    const rp = opts.readdirPlus ?? (ttlMs > 0 ? "auto" : "off");
    if (rp !== "off" && rp !== "auto" && rp !== "always") {
      throw invalidOption("readdirPlus", `must be "off", "auto" or "always" (got ${String(rp)})`);
    }
    this.readdirPlus = rp;
    this.onError = opts.onError ?? (() => {});
    this.nofollow = opts.policy === "follow" ? 0 : O.O_NOFOLLOW;
  }

  stats(): ShareServerStats {
    return {
      requests: this.requests,
      inFlight: this.inFlight,
      peakInFlight: this.peakInFlight,
      nodes: this.nodes.size,
      openHandles: this.handles.size,
      errorReplies: this.errorReplies,
      pauses: this.pauses,
      protocol: this.minor ? `${FUSE_KERNEL_VERSION}.${this.minor}` : null,
    };
  }

  /**
   * Serves FUSE requests arriving on `stream` until it ends or is destroyed. Resolves then (after
   * in-flight handlers finished and all handles were closed). A malformed message length destroys
   * the stream (the guest misbehaved). Rejects only when the root cannot be opened or when a stream
   * is already being served.
   */
  serve(stream: Duplex): Promise<void> {
    if (this.serving) {
      return Promise.reject(
        new SupermachineError(
          "SM_UNSUPPORTED",
          `share ${this.tag}: already serving a stream; close() it first`,
        ),
      );
    }
    const p = this.run(stream).finally(() => {
      this.serving = null;
    });
    this.serving = p;
    return p;
  }

  /** Ends the current stream (if any) and closes every host fd. */
  async close(): Promise<void> {
    const s = this.stream;
    if (s && !s.destroyed) s.destroy();
    if (this.serving) await this.serving.catch(() => {});
    await this.releaseAll();
  }

  private async releaseAll(): Promise<void> {
    for (const id of [...this.dirCache.keys()]) this.evictDir(id);
    await closesDrained();
    const fds = [...this.handles.values()].map((h) => h.fd);
    this.handles.clear();
    await Promise.all(fds.map(closeFd));
    if (this.rootFd >= 0) {
      const fd = this.rootFd;
      this.rootFd = -1;
      await closeFd(fd);
    }
    this.nodes.clear();
    this.byKey.clear();
    this.minor = 0;
    this.plus = false;
  }

  private async run(stream: Duplex): Promise<void> {
    let rootFd = -1;
    let st: fs.BigIntStats;
    try {
      rootFd = await openFd(this.root, O_PATH | O.O_DIRECTORY);
      st = await fstatFd(rootFd);
    } catch (e) {
      if (rootFd >= 0) await closeFd(rootFd);
      stream.destroy();
      throw new SupermachineError(
        "SM_MOUNT_INVALID",
        `Share ${JSON.stringify(this.tag)}: ${this.root} is missing or not a directory (it was removed after the build?). Recreate it or fix mounts[].hostPath.`,
        { cause: e, details: { field: "mounts[].hostPath", tag: this.tag } },
      );
    }
    this.rootFd = rootFd;
    this.stream = stream;
    this.nodes.clear();
    this.byKey.clear();
    this.nodes.set(FUSE_ROOT_ID, {
      id: FUSE_ROOT_ID,
      parent: 0,
      name: EMPTY,
      key: null,
      nlookup: 1,
      children: 0,
      ino: st.ino,
    });

    await new Promise<void>((resolve) => {
      let pending: Buffer = EMPTY;
      let ended = false;
      let writeBlocked = false;
      let pausedByUs = false;
      let finished = false;

      const finish = () => {
        if (finished || !ended || this.inFlight > 0) return;
        finished = true;
        stream.off("data", onData);
        if (!stream.destroyed && stream.writable) stream.end();
        resolve();
      };
      const send = (buf: Buffer) => {
        if (stream.destroyed || !stream.writable || stream.writableEnded) return;
        if (!stream.write(buf) && !writeBlocked) {
          writeBlocked = true;
          stream.once("drain", () => {
            writeBlocked = false;
            pump();
          });
        }
      };
      const pump = () => {
        while (!ended) {
          if (this.inFlight >= this.maxInFlight || writeBlocked) {
            if (!pausedByUs) {
              pausedByUs = true;
              this.pauses++;
              stream.pause();
            }
            return;
          }
          if (pending.length < 4) break;
          const len = pending.readUInt32LE(0);
          if (len < IN_HEADER_SIZE || len > MAX_REQUEST_SIZE) {
            this.onError(new Error(`share ${this.tag}: invalid FUSE request length ${len}; closing`));
            ended = true;
            pending = EMPTY;
            stream.destroy();
            finish();
            return;
          }
          if (pending.length < len) break;
          const msg = pending.subarray(0, len);
          pending = pending.length === len ? EMPTY : pending.subarray(len);
          this.requests++;
          this.dispatch(msg, send, () => {
            if (finished) return;
            if (ended) finish();
            else pump();
          });
        }
        if (pausedByUs && !ended) {
          pausedByUs = false;
          stream.resume();
        }
      };
      const onData = (chunk: Buffer) => {
        if (ended) return;
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        pump();
      };
      const onEnd = () => {
        ended = true;
        finish();
      };
      stream.on("data", onData);
      stream.once("end", onEnd);
      stream.once("close", onEnd);
      stream.on("error", (e) => {
        this.onError(e instanceof Error ? e : new Error(String(e)));
        onEnd();
      });
    });
    this.stream = null;
    await this.releaseAll();
  }

  /** Handles one request; calls `done` once its handler (if any) finished. */
  private dispatch(msg: Buffer, send: (b: Buffer) => void, done: () => void): void {
    const h = readInHeader(msg);
    const body = msg.subarray(IN_HEADER_SIZE);
    // No reply and no async work: handled inline, not counted in flight.
    if (h.opcode === Op.FORGET) {
      if (body.length >= 8) this.forget(h.nodeid, body.readBigUInt64LE(0));
      return;
    }
    if (h.opcode === Op.BATCH_FORGET) {
      if (body.length >= 8) {
        const count = body.readUInt32LE(0);
        for (let i = 0; i < count && 8 + i * 16 + 16 <= body.length; i++) {
          this.forget(body.readBigUInt64LE(8 + i * 16), body.readBigUInt64LE(16 + i * 16));
        }
      }
      return;
    }
    if (h.opcode === Op.INTERRUPT) return;

    this.inFlight++;
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    this.handle(h, body).then(
      (reply) => {
        this.inFlight--;
        send(encodeReply(h.unique, 0, reply));
        done();
      },
      (e: unknown) => {
        this.inFlight--;
        let errno = errnoOf(e);
        if (errno === null) {
          this.onError(e instanceof Error ? e : new Error(String(e)));
          errno = E.EIO;
        }
        this.errorReplies++;
        send(encodeReply(h.unique, -errno));
        done();
      },
    );
  }

  private async handle(h: InHeader, body: Buffer): Promise<Buffer | Buffer[] | undefined> {
    if (h.opcode === Op.INIT) return this.init(body);
    if (this.minor === 0) fail(E.EIO);
    switch (h.opcode) {
      case Op.DESTROY:
        await this.closeHandles();
        return undefined;
      case Op.LOOKUP:
        return this.lookup(h.nodeid, validateName(cStrings(body, 1)[0]!));
      case Op.GETATTR:
        return this.getattr(h.nodeid, body);
      case Op.SETATTR:
        return this.setattr(h.nodeid, body);
      case Op.READLINK:
        return this.readlink(h.nodeid);
      case Op.SYMLINK:
        return this.symlink(h.nodeid, body);
      case Op.MKNOD:
        return this.mknod(h.nodeid, body);
      case Op.MKDIR:
        return this.mkdir(h.nodeid, body);
      case Op.UNLINK:
      case Op.RMDIR:
        return this.remove(h.nodeid, body, h.opcode === Op.RMDIR);
      case Op.RENAME:
        return this.rename(h.nodeid, body, 8, 0);
      case Op.RENAME2:
        if (body.length < 16) fail(E.EINVAL);
        return this.rename(h.nodeid, body, 16, body.readUInt32LE(8));
      case Op.LINK:
        return this.link(h.nodeid, body);
      case Op.OPEN:
        return this.open(h.nodeid, body);
      case Op.CREATE:
        return this.create(h.nodeid, body);
      case Op.READ:
        return this.read(body);
      case Op.WRITE:
        return this.write(body);
      case Op.FLUSH:
        this.fileHandle(body);
        return undefined;
      case Op.RELEASE:
      case Op.RELEASEDIR:
        return this.release(body);
      case Op.FSYNC:
        return this.fsync(body);
      case Op.OPENDIR:
        return this.opendir(h.nodeid);
      case Op.READDIR:
        return this.readdir(body);
      case Op.READDIRPLUS:
        // Only when negotiated: a kernel that did not agree to it never sends it.
        if (!this.plus) fail(E.ENOSYS);
        return this.readdirplus(body);
      case Op.FSYNCDIR:
        return undefined;
      case Op.STATFS:
        return this.statfs();
      case Op.ACCESS:
        return this.access(h.nodeid, body);
      case Op.SETXATTR:
      case Op.GETXATTR:
      case Op.LISTXATTR:
      case Op.REMOVEXATTR:
        // ENOSYS makes the guest kernel stop asking (it then answers EOPNOTSUPP itself).
        return fail(E.ENOSYS);
      default:
        // LSEEK, FALLOCATE, COPY_FILE_RANGE, locks, ioctl, poll, bmap, syncfs, tmpfile, unknown.
        return fail(E.ENOSYS);
    }
  }

  // --- INIT ---------------------------------------------------------------------------------------

  private init(body: Buffer): Buffer {
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
    if (this.readdirPlus !== "off") want |= InitFlag.DO_READDIRPLUS;
    if (this.readdirPlus === "auto") want |= InitFlag.READDIRPLUS_AUTO;
    const flags = (want & kernelFlags) >>> 0;
    out.writeUInt32LE(nego, 4);
    out.writeUInt32LE(Math.min(kernelReadahead, MAX_READ), 8);
    out.writeUInt32LE(flags, 12);
    out.writeUInt16LE(16, 16); // max_background
    out.writeUInt16LE(12, 18); // congestion_threshold
    out.writeUInt32LE(MAX_WRITE, 20);
    out.writeUInt32LE(1, 24); // time_gran (ns)
    out.writeUInt16LE(MAX_WRITE / 4096, 28); // max_pages
    this.minor = nego;
    this.plus = (flags & InitFlag.DO_READDIRPLUS) !== 0;
    return nego >= 23 ? out : out.subarray(0, 24);
  }

  // --- node table ---------------------------------------------------------------------------------

  private node(nodeid: bigint): Node {
    const n = nodeid <= BigInt(Number.MAX_SAFE_INTEGER) ? this.nodes.get(Number(nodeid)) : undefined;
    if (!n) fail(E.ESTALE);
    return n;
  }

  private forget(nodeid: bigint, nlookup: bigint): void {
    if (nodeid > BigInt(Number.MAX_SAFE_INTEGER)) return;
    const n = this.nodes.get(Number(nodeid));
    if (!n || n.id === FUSE_ROOT_ID) return;
    n.nlookup -= nlookup > BigInt(n.nlookup) ? n.nlookup : Number(nlookup);
    this.maybeDrop(n);
  }

  private maybeDrop(n: Node | undefined): void {
    while (n && n.id !== FUSE_ROOT_ID && n.nlookup <= 0 && n.children <= 0) {
      this.nodes.delete(n.id);
      this.evictDir(n.id);
      if (n.key !== null && this.byKey.get(n.key) === n) this.byKey.delete(n.key);
      const parent = this.nodes.get(n.parent);
      if (parent) parent.children--;
      n = parent;
    }
  }

  private detach(n: Node | undefined): void {
    if (!n || n.key === null) return;
    this.evictDir(n.id);
    if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
    n.key = null;
  }

  private static key(parent: number, name: Buffer): string {
    return `${parent}/${name.toString("latin1")}`;
  }

  /** Remembers (or re-references) the node for parent/name with the given stat; returns its id. */
  private remember(parent: Node, name: Buffer, st: fs.BigIntStats): Node {
    const key = ShareServer.key(parent.id, name);
    const old = this.byKey.get(key);
    if (old && old.ino === st.ino) {
      old.nlookup++;
      return old;
    }
    if (this.nodes.size >= this.maxNodes) fail(E.ENFILE);
    this.detach(old);
    const n: Node = {
      id: this.nextNodeId++,
      parent: parent.id,
      name: Buffer.from(name),
      key,
      nlookup: 1,
      children: 0,
      ino: st.ino,
    };
    this.nodes.set(n.id, n);
    this.byKey.set(key, n);
    parent.children++;
    return n;
  }

  private leaseOf(c: CachedDir): DirLease {
    c.refs++;
    let done = false;
    return {
      fd: c.fd,
      release: () => {
        if (done) return;
        done = true;
        c.refs--;
        if (c.dead && c.refs === 0) closeSoon(c.fd);
      },
    };
  }

  private evictDir(id: number): void {
    const c = this.dirCache.get(id);
    if (!c) return;
    this.dirCache.delete(id);
    c.dead = true;
    if (c.refs === 0) closeSoon(c.fd);
  }

  private cacheDir(id: number, fd: number): CachedDir {
    const c: CachedDir = { fd, refs: 0, dead: false };
    this.dirCache.set(id, c);
    while (this.dirCache.size > this.maxCachedDirs) {
      const oldest = this.dirCache.keys().next().value as number;
      this.evictDir(oldest);
    }
    return c;
  }

  /**
   * An O_PATH fd of directory node `n`. Resolved component by component from the nearest cached
   * ancestor (or the root), each component opened relative to the previous directory's fd with
   * O_DIRECTORY|O_NOFOLLOW (unless "follow"), so a symlink anywhere on the way is never followed.
   * Opened directory fds are kept in a bounded LRU (like an inode's O_PATH fd in a passthrough
   * server): a cached fd names the directory inode itself, whatever happens to its path later.
   */
  private async dirLease(n: Node): Promise<DirLease> {
    if (n.id === FUSE_ROOT_ID) return { fd: this.rootFd, release: noop };
    const hit = this.dirCache.get(n.id);
    if (hit) {
      this.dirCache.delete(n.id);
      this.dirCache.set(n.id, hit);
      return this.leaseOf(hit);
    }
    const todo: Node[] = [];
    let cur: Node = n;
    for (;;) {
      if (cur.key === null) fail(E.ESTALE);
      todo.push(cur);
      if (todo.length > MAX_DEPTH) fail(E.ELOOP);
      const p = this.nodes.get(cur.parent);
      if (!p) fail(E.ESTALE);
      cur = p;
      if (cur.id === FUSE_ROOT_ID || this.dirCache.has(cur.id)) break;
    }
    let lease = await this.dirLease(cur);
    try {
      for (let i = todo.length - 1; i >= 0; i--) {
        const node = todo[i]!;
        const fd = await openFd(at(lease.fd, node.name), O_PATH | O.O_DIRECTORY | this.nofollow);
        lease.release();
        if (
          this.maxCachedDirs > 0 &&
          this.nodes.get(node.id) === node &&
          node.key !== null &&
          !this.dirCache.has(node.id)
        ) {
          lease = this.leaseOf(this.cacheDir(node.id, fd));
        } else {
          let done = false;
          lease = {
            fd,
            release: () => {
              if (!done) closeSoon(fd);
              done = true;
            },
          };
        }
      }
      return lease;
    } catch (e) {
      lease.release();
      throw e;
    }
  }

  /** Runs fn with an fd of the directory node `nodeid`. */
  private async withDir<T>(nodeid: bigint | Node, fn: (dirfd: number) => Promise<T>): Promise<T> {
    const n = typeof nodeid === "bigint" ? this.node(nodeid) : nodeid;
    const lease = await this.dirLease(n);
    try {
      return await fn(lease.fd);
    } finally {
      lease.release();
    }
  }

  /** Runs fn with the parent directory fd and final name of a non-root node. */
  private async withParent<T>(n: Node, fn: (pfd: number, name: Buffer) => Promise<T>): Promise<T> {
    if (n.id === FUSE_ROOT_ID) fail(E.EINVAL);
    if (n.key === null) fail(E.ESTALE);
    const parent = this.nodes.get(n.parent);
    if (!parent) fail(E.ESTALE);
    const lease = await this.dirLease(parent);
    try {
      return await fn(lease.fd, n.name);
    } finally {
      lease.release();
    }
  }

  /**
   * Runs fn with an O_PATH fd on the node's own inode (never following a final symlink unless
   * policy "follow") and its stat.
   */
  private async withObject<T>(
    nodeid: bigint,
    fn: (fd: number, st: fs.BigIntStats, pfd: number, name: Buffer) => Promise<T>,
  ): Promise<T> {
    const n = this.node(nodeid);
    if (n.id === FUSE_ROOT_ID) return fn(this.rootFd, await fstatFd(this.rootFd), -1, EMPTY);
    return this.withParent(n, async (pfd, name) => {
      const fd = await this.openObject(pfd, name);
      try {
        return await fn(fd, await fstatFd(fd), pfd, name);
      } finally {
        closeSoon(fd);
      }
    });
  }

  private async openObject(pfd: number, name: Buffer): Promise<number> {
    if (this.nofollow) return openFd(at(pfd, name), O_PATH | O.O_NOFOLLOW);
    try {
      return await openFd(at(pfd, name), O_PATH);
    } catch (e) {
      // "follow": a dangling symlink is still an object (the symlink itself).
      if (errnoOf(e) === E.ENOENT) return openFd(at(pfd, name), O_PATH | O.O_NOFOLLOW);
      throw e;
    }
  }

  private async statAt(pfd: number, name: Buffer): Promise<fs.BigIntStats> {
    const p = at(pfd, name);
    if (this.policy !== "follow") return fs.promises.lstat(p, { bigint: true });
    try {
      return await fs.promises.stat(p, { bigint: true });
    } catch (e) {
      if (errnoOf(e) === E.ENOENT || errnoOf(e) === E.ELOOP) return fs.promises.lstat(p, { bigint: true });
      throw e;
    }
  }

  // --- encoders -----------------------------------------------------------------------------------

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
    out.writeUInt32LE(Number(st.uid) === this.hostUid ? 0 : NOBODY, off + 68);
    out.writeUInt32LE(Number(st.gid) === this.hostGid ? 0 : NOBODY, off + 72);
    out.writeUInt32LE(Number(BigInt.asUintN(32, st.rdev)), off + 76);
    out.writeUInt32LE(Number(BigInt.asUintN(32, st.blksize)), off + 80);
    out.writeUInt32LE(0, off + 84);
  }

  private entryOut(n: Node, st: fs.BigIntStats): Buffer {
    const out = Buffer.alloc(ENTRY_OUT_SIZE);
    this.writeEntry(out, 0, n, st);
    return out;
  }

  /** struct fuse_entry_out at `off` (LOOKUP replies and READDIRPLUS entries alike). */
  private writeEntry(out: Buffer, off: number, n: Node, st: fs.BigIntStats): void {
    out.writeBigUInt64LE(BigInt(n.id), off);
    out.writeBigUInt64LE(0n, off + 8); // generation: node ids are never reused
    out.writeBigUInt64LE(this.ttlSec, off + 16);
    out.writeBigUInt64LE(this.ttlSec, off + 24);
    out.writeUInt32LE(this.ttlNsec, off + 32);
    out.writeUInt32LE(this.ttlNsec, off + 36);
    this.attr(out, off + 40, st);
  }

  private attrOut(st: fs.BigIntStats): Buffer {
    const out = Buffer.alloc(ATTR_OUT_SIZE);
    out.writeBigUInt64LE(this.ttlSec, 0);
    out.writeUInt32LE(this.ttlNsec, 8);
    this.attr(out, 16, st);
    return out;
  }

  // --- ops ----------------------------------------------------------------------------------------

  private async lookup(parentId: bigint, name: Buffer): Promise<Buffer> {
    const parent = this.node(parentId);
    return this.withDir(parent, async (dfd) => {
      const st = await this.statAt(dfd, name);
      if (this.policy === "deny" && st.isSymbolicLink()) fail(E.EACCES);
      return this.entryOut(this.remember(parent, name, st), st);
    });
  }

  /** After creating `name` in parent: stat it (never following) and remember the node. */
  private async entryFor(parent: Node, dfd: number, name: Buffer): Promise<Buffer> {
    const st = await fs.promises.lstat(at(dfd, name), { bigint: true });
    return this.entryOut(this.remember(parent, name, st), st);
  }

  private async getattr(nodeid: bigint, body: Buffer): Promise<Buffer> {
    if (body.length >= 16 && body.readUInt32LE(0) & FUSE_GETATTR_FH) {
      const h = this.handles.get(Number(BigInt.asUintN(32, body.readBigUInt64LE(8))));
      if (h) return this.attrOut(await fstatFd(h.fd));
    }
    const n = this.node(nodeid);
    if (n.id === FUSE_ROOT_ID) return this.attrOut(await fstatFd(this.rootFd));
    return this.withParent(n, async (pfd, name) => {
      const st = await this.statAt(pfd, name);
      if (this.policy === "deny" && st.isSymbolicLink()) fail(E.EACCES);
      if (st.ino !== n.ino) fail(E.ESTALE);
      return this.attrOut(st);
    });
  }

  private writable(): void {
    if (this.readOnly) fail(E.EROFS);
  }

  private async setattr(nodeid: bigint, body: Buffer): Promise<Buffer> {
    if (body.length < 88) fail(E.EINVAL);
    this.writable();
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
    const handle = valid & Fattr.FH ? this.handles.get(Number(BigInt.asUintN(32, fh))) : undefined;

    return this.withObject(nodeid, async (ofd, st, pfd, name) => {
      const isLink = st.isSymbolicLink();
      if (valid & (Fattr.UID | Fattr.GID)) {
        // The guest sees host-owned files as 0:0 and everything else as 65534; it may only "change"
        // ownership to what it already is (cp -p, tar do that). Real chown on the host: EPERM.
        const curUid = Number(st.uid) === this.hostUid ? 0 : NOBODY;
        const curGid = Number(st.gid) === this.hostGid ? 0 : NOBODY;
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
        const a =
          valid & Fattr.ATIME_NOW
            ? now
            : valid & Fattr.ATIME
              ? Number(atime) + atimensec / 1e9
              : Number(st.atimeNs) / 1e9;
        const m =
          valid & Fattr.MTIME_NOW
            ? now
            : valid & Fattr.MTIME
              ? Number(mtime) + mtimensec / 1e9
              : Number(st.mtimeNs) / 1e9;
        if (isLink) {
          if (pfd < 0) fail(E.EINVAL);
          await fs.promises.lutimes(at(pfd, name), a, m);
        } else {
          await fs.promises.utimes(self(ofd), a, m);
        }
      }
      return this.attrOut(await fstatFd(ofd));
    });
  }

  private async readlink(nodeid: bigint): Promise<Buffer> {
    if (this.policy === "deny") fail(E.EACCES);
    const n = this.node(nodeid);
    if (n.id === FUSE_ROOT_ID) fail(E.EINVAL);
    return this.withParent(n, (pfd, name) => fs.promises.readlink(at(pfd, name), { encoding: "buffer" }));
  }

  private async symlink(parentId: bigint, body: Buffer): Promise<Buffer> {
    const [rawName, target] = cStrings(body, 2) as [Buffer, Buffer];
    const name = validateName(rawName);
    if (this.policy === "deny") fail(E.EPERM);
    this.writable();
    if (target.length === 0 || target.length > SYMLINK_MAX) fail(E.EINVAL);
    const parent = this.node(parentId);
    return this.withDir(parent, async (dfd) => {
      // The target is stored verbatim; the host never resolves it ("opaque").
      await fs.promises.symlink(target, at(dfd, name));
      return this.entryFor(parent, dfd, name);
    });
  }

  private async mknod(parentId: bigint, body: Buffer): Promise<Buffer> {
    if (body.length < 16) fail(E.EINVAL);
    const mode = body.readUInt32LE(0);
    const name = validateName(cStrings(body.subarray(16), 1)[0]!);
    if ((mode & S_IFMT) !== S_IFREG) fail(E.EPERM);
    this.writable();
    const parent = this.node(parentId);
    return this.withDir(parent, async (dfd) => {
      const fd = await openFd(
        at(dfd, name),
        O.O_CREAT | O.O_EXCL | O.O_WRONLY | O.O_NOFOLLOW | O.O_NONBLOCK,
        mode & MODE_MASK,
      );
      await closeFd(fd);
      return this.entryFor(parent, dfd, name);
    });
  }

  private async mkdir(parentId: bigint, body: Buffer): Promise<Buffer> {
    if (body.length < 8) fail(E.EINVAL);
    const mode = body.readUInt32LE(0);
    const name = validateName(cStrings(body.subarray(8), 1)[0]!);
    this.writable();
    const parent = this.node(parentId);
    return this.withDir(parent, async (dfd) => {
      await fs.promises.mkdir(at(dfd, name), { mode: mode & MODE_MASK });
      return this.entryFor(parent, dfd, name);
    });
  }

  private async remove(parentId: bigint, body: Buffer, dir: boolean): Promise<undefined> {
    const name = validateName(cStrings(body, 1)[0]!);
    this.writable();
    const parent = this.node(parentId);
    await this.withDir(parent, async (dfd) => {
      // unlink/rmdir act on the final component itself, never through a symlink.
      if (dir) await fs.promises.rmdir(at(dfd, name));
      else await fs.promises.unlink(at(dfd, name));
    });
    this.detach(this.byKey.get(ShareServer.key(parent.id, name)));
    return undefined;
  }

  private async rename(parentId: bigint, body: Buffer, skip: number, flags: number): Promise<undefined> {
    if (body.length < skip) fail(E.EINVAL);
    const newParentId = body.readBigUInt64LE(0);
    const [rawOld, rawNew] = cStrings(body.subarray(skip), 2) as [Buffer, Buffer];
    const oldName = validateName(rawOld);
    const newName = validateName(rawNew);
    if (flags & ~RENAME_NOREPLACE) fail(E.EINVAL); // RENAME_EXCHANGE / WHITEOUT unsupported
    this.writable();
    const oldParent = this.node(parentId);
    const newParent = this.node(newParentId);
    await this.withDir(oldParent, (ofd) =>
      this.withDir(newParent, async (nfd) => {
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
    const moved = this.byKey.get(ShareServer.key(oldParent.id, oldName));
    const replaced = this.byKey.get(ShareServer.key(newParent.id, newName));
    if (replaced && replaced !== moved) this.detach(replaced);
    if (moved) {
      this.detach(moved);
      const key = ShareServer.key(newParent.id, newName);
      moved.key = key;
      moved.name = Buffer.from(newName);
      if (moved.parent !== newParent.id) {
        const op = this.nodes.get(moved.parent);
        moved.parent = newParent.id;
        newParent.children++;
        if (op) {
          op.children--;
          this.maybeDrop(op);
        }
      }
      this.byKey.set(key, moved);
    }
    return undefined;
  }

  private async link(newParentId: bigint, body: Buffer): Promise<Buffer> {
    if (body.length < 8) fail(E.EINVAL);
    const oldId = body.readBigUInt64LE(0);
    const name = validateName(cStrings(body.subarray(8), 1)[0]!);
    if (this.policy === "deny") fail(E.EPERM);
    this.writable();
    const old = this.node(oldId);
    if (old.id === FUSE_ROOT_ID) fail(E.EPERM);
    const newParent = this.node(newParentId);
    // Both ends are nodes inside the share (by construction); link(2) never follows the source.
    return this.withParent(old, (opfd, oname) =>
      this.withDir(newParent, async (nfd) => {
        await fs.promises.link(at(opfd, oname), at(nfd, name));
        return this.entryFor(newParent, nfd, name);
      }),
    );
  }

  private addHandle(h: Handle): Buffer {
    const fh = this.nextFh++;
    if (this.nextFh > 0xffffffff) this.nextFh = 1;
    this.handles.set(fh, h);
    const out = Buffer.alloc(OPEN_OUT_SIZE);
    out.writeBigUInt64LE(BigInt(fh), 0);
    out.writeUInt32LE(0, 8); // no FOPEN_KEEP_CACHE: every open re-reads host data
    return out;
  }

  private checkHandleCap(): void {
    if (this.handles.size >= this.maxOpenHandles) fail(E.ENFILE);
  }

  private openFlags(flags: number): number {
    const f = flags & OPEN_FLAG_MASK;
    if (this.readOnly && ((f & O_ACCMODE) !== O.O_RDONLY || f & O.O_TRUNC)) fail(E.EROFS);
    return f;
  }

  /** Opens the regular file the O_PATH fd `ofd` refers to; anything else → EISDIR / EACCES. */
  private async reopen(ofd: number, st: fs.BigIntStats, flags: number): Promise<Buffer> {
    const type = Number(st.mode) & S_IFMT;
    if (type === S_IFDIR) fail(E.EISDIR);
    if (type === S_IFLNK) fail(E.ELOOP);
    // FIFOs, sockets and device nodes on the host are never opened on the guest's behalf.
    if (type !== S_IFREG) fail(E.EACCES);
    this.checkHandleCap();
    const fd = await openFd(self(ofd), flags | O.O_NONBLOCK);
    return this.addHandle({ kind: "file", fd, accmode: flags & O_ACCMODE });
  }

  private async open(nodeid: bigint, body: Buffer): Promise<Buffer> {
    if (body.length < 8) fail(E.EINVAL);
    const flags = this.openFlags(body.readUInt32LE(0));
    this.checkHandleCap();
    return this.withObject(nodeid, (ofd, st) => this.reopen(ofd, st, flags));
  }

  private async create(parentId: bigint, body: Buffer): Promise<Buffer[]> {
    if (body.length < 16) fail(E.EINVAL);
    const rawFlags = body.readUInt32LE(0);
    const mode = body.readUInt32LE(4);
    const name = validateName(cStrings(body.subarray(16), 1)[0]!);
    this.writable();
    const flags = this.openFlags(rawFlags);
    this.checkHandleCap();
    const parent = this.node(parentId);
    return this.withDir(parent, async (dfd) => {
      let fh: Buffer;
      try {
        const fd = await openFd(
          at(dfd, name),
          flags | O.O_CREAT | O.O_EXCL | O.O_NOFOLLOW | O.O_NONBLOCK,
          mode & MODE_MASK,
        );
        fh = this.addHandle({ kind: "file", fd, accmode: flags & O_ACCMODE });
      } catch (e) {
        if (errnoOf(e) !== E.EEXIST || rawFlags & O.O_EXCL) throw e;
        // Exists and the guest did not ask for O_EXCL: open the existing object like OPEN does.
        const ofd = await this.openObject(dfd, name);
        try {
          fh = await this.reopen(ofd, await fstatFd(ofd), flags);
        } finally {
          await closeFd(ofd);
        }
      }
      try {
        return [await this.entryFor(parent, dfd, name), fh];
      } catch (e) {
        const id = Number(fh.readBigUInt64LE(0));
        const h = this.handles.get(id);
        this.handles.delete(id);
        if (h) await closeFd(h.fd);
        throw e;
      }
    });
  }

  private fileHandle(body: Buffer, kind: "file" | "dir" = "file"): Handle {
    if (body.length < 8) fail(E.EINVAL);
    const fh = body.readBigUInt64LE(0);
    const h = fh <= 0xffffffffn ? this.handles.get(Number(fh)) : undefined;
    if (!h || h.kind !== kind) fail(E.EBADF);
    return h;
  }

  private async read(body: Buffer): Promise<Buffer> {
    if (body.length < 24) fail(E.EINVAL);
    const h = this.fileHandle(body);
    const offset = body.readBigUInt64LE(8);
    const size = Math.min(body.readUInt32LE(16), MAX_READ);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) fail(E.EINVAL);
    const buf = Buffer.allocUnsafe(size);
    const n = await readFd(h.fd, buf, Number(offset));
    return buf.subarray(0, n);
  }

  private async write(body: Buffer): Promise<Buffer> {
    if (body.length < 40) fail(E.EINVAL);
    const h = this.fileHandle(body);
    this.writable();
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

  private async release(body: Buffer): Promise<undefined> {
    if (body.length < 8) fail(E.EINVAL);
    const fh = body.readBigUInt64LE(0);
    const h = fh <= 0xffffffffn ? this.handles.get(Number(fh)) : undefined;
    if (h) {
      this.handles.delete(Number(fh));
      await closeFd(h.fd);
    }
    return undefined;
  }

  private async fsync(body: Buffer): Promise<undefined> {
    const h = this.fileHandle(body);
    const flags = body.length >= 12 ? body.readUInt32LE(8) : 0;
    await fsyncFd(h.fd, (flags & FUSE_FSYNC_FDATASYNC) !== 0);
    return undefined;
  }

  private async opendir(nodeid: bigint): Promise<Buffer> {
    this.checkHandleCap();
    const n = this.node(nodeid);
    // Handles own their fd: reopen the directory inode through the lease's magic link.
    const fd = await this.withDir(n, (dfd) => openFd(self(dfd), O_PATH | O.O_DIRECTORY));
    return this.addHandle({ kind: "dir", fd, accmode: 0, node: n });
  }

  /** Parses fuse_read_in of READDIR/READDIRPLUS; (re)takes the snapshot at offset 0. */
  private async listing(
    body: Buffer,
  ): Promise<{ h: Handle; entries: DirEntry[]; start: number; size: number }> {
    if (body.length < 24) fail(E.EINVAL);
    const h = this.fileHandle(body, "dir");
    const offset = body.readBigUInt64LE(8);
    const size = Math.min(body.readUInt32LE(16), MAX_READ);
    if (offset === 0n || !h.entries) {
      // Snapshot at rewind: offsets (= index + 1) stay stable while the directory changes.
      const list = await fs.promises.readdir(self(h.fd), { encoding: "buffer", withFileTypes: true });
      h.entries = [
        { name: Buffer.from("."), type: DT.DIR },
        { name: Buffer.from(".."), type: DT.DIR },
        ...list.map((d) => ({
          name: d.name as unknown as Buffer,
          type: d.isFile()
            ? DT.REG
            : d.isDirectory()
              ? DT.DIR
              : d.isSymbolicLink()
                ? DT.LNK
                : d.isFIFO()
                  ? DT.FIFO
                  : d.isSocket()
                    ? DT.SOCK
                    : d.isCharacterDevice()
                      ? DT.CHR
                      : d.isBlockDevice()
                        ? DT.BLK
                        : DT.UNKNOWN,
        })),
      ];
    }
    const entries = h.entries;
    const start = offset > BigInt(entries.length) ? entries.length : Number(offset);
    return { h, entries, start, size };
  }

  private async readdir(body: Buffer): Promise<Buffer> {
    const { entries, start, size } = await this.listing(body);
    const parts: Buffer[] = [];
    let used = 0;
    for (let i = start; i < entries.length; i++) {
      const e = entries[i]!;
      const rec = align8(DIRENT_NAME_OFFSET + e.name.length);
      if (used + rec > size) break;
      const b = Buffer.alloc(rec);
      b.writeBigUInt64LE(BigInt(fakeIno(e.name)), 0);
      b.writeBigUInt64LE(BigInt(i + 1), 8);
      b.writeUInt32LE(e.name.length, 16);
      b.writeUInt32LE(e.type, 20);
      e.name.copy(b, DIRENT_NAME_OFFSET);
      parts.push(b);
      used += rec;
    }
    return Buffer.concat(parts, used);
  }

  /**
   * READDIRPLUS: READDIR where each entry also carries the fuse_entry_out that a LOOKUP of it would
   * return, made by the same code as LOOKUP: `statAt` relative to the directory node's no-follow
   * lease, the deny check, `remember`. Every entry sent with a non-zero nodeid counts as one lookup
   * (the kernel links it or FORGETs it, even past the caller's buffer). An entry is sent with nodeid
   * 0 (a plain dirent; the kernel LOOKUPs it itself if used) when it is "." or "..", a host symlink
   * under "deny" (its LOOKUP is EACCES), gone or not stat-able, when the node table is full, or when
   * the directory node itself is gone. Only the entries that fit in the requested size are stat'ed
   * and counted; the reply never exceeds that size.
   */
  private async readdirplus(body: Buffer): Promise<Buffer> {
    const { h, entries, start, size } = await this.listing(body);
    let end = start;
    let used = 0;
    while (end < entries.length) {
      const rec = align8(DIRENTPLUS_NAME_OFFSET + entries[end]!.name.length);
      if (used + rec > size) break;
      used += rec;
      end++;
    }
    const out = Buffer.alloc(used);
    const dir = h.node;
    const live = (n: Node | undefined): n is Node =>
      n !== undefined && this.nodes.get(n.id) === n && (n.id === FUSE_ROOT_ID || n.key !== null);
    let stats: (fs.BigIntStats | null)[] = [];
    if (end > start && live(dir)) {
      stats = await this.withDir(dir, (dfd) =>
        Promise.all(
          entries
            .slice(start, end)
            .map((e) => (isDotName(e.name) ? null : this.statAt(dfd, e.name).catch(() => null))),
        ),
      ).catch(() => []);
    }
    const canRemember = live(dir);
    let pos = 0;
    for (let i = start; i < end; i++) {
      const e = entries[i]!;
      const st = stats[i - start] ?? null;
      let node: Node | null = null;
      if (canRemember && st && !(this.policy === "deny" && st.isSymbolicLink())) {
        try {
          node = this.remember(dir!, e.name, st);
        } catch (err) {
          if (errnoOf(err) !== E.ENFILE) throw err;
        }
      }
      if (node && st) this.writeEntry(out, pos, node, st); // else all zero: nodeid 0
      const d = pos + ENTRY_OUT_SIZE;
      out.writeBigUInt64LE(node && st ? BigInt.asUintN(64, st.ino) : BigInt(fakeIno(e.name)), d);
      out.writeBigUInt64LE(BigInt(i + 1), d + 8);
      out.writeUInt32LE(e.name.length, d + 16);
      out.writeUInt32LE(node && st ? (Number(st.mode) & S_IFMT) >>> 12 : e.type, d + 20);
      e.name.copy(out, d + DIRENT_NAME_OFFSET);
      pos += align8(DIRENTPLUS_NAME_OFFSET + e.name.length);
    }
    return out;
  }

  private async statfs(): Promise<Buffer> {
    const s = await fs.promises.statfs(self(this.rootFd), { bigint: true });
    const out = Buffer.alloc(STATFS_OUT_SIZE);
    out.writeBigUInt64LE(s.blocks, 0);
    out.writeBigUInt64LE(s.bfree, 8);
    out.writeBigUInt64LE(s.bavail, 16);
    out.writeBigUInt64LE(s.files, 24);
    out.writeBigUInt64LE(s.ffree, 32);
    out.writeUInt32LE(Number(s.bsize), 40);
    out.writeUInt32LE(NAME_MAX, 44);
    out.writeUInt32LE(Number(s.bsize), 48);
    return out;
  }

  private async access(nodeid: bigint, body: Buffer): Promise<undefined> {
    if (body.length < 8) fail(E.EINVAL);
    const mask = body.readUInt32LE(0) & 7;
    if (this.readOnly && mask & 2) fail(E.EROFS);
    await this.withObject(nodeid, async (ofd, st) => {
      if (st.isSymbolicLink()) return;
      await fs.promises.access(self(ofd), mask);
    });
    return undefined;
  }

  private async closeHandles(): Promise<void> {
    const fds = [...this.handles.values()].map((h) => h.fd);
    this.handles.clear();
    await Promise.all(fds.map(closeFd));
  }
}

function isDotName(name: Buffer): boolean {
  return name.length <= 2 && name.every((c) => c === 0x2e);
}

/** A stable non-zero inode number for a directory entry (readdir does not stat; LOOKUP gives the real one). */
function fakeIno(name: Buffer): number {
  let h = 0x811c9dc5;
  for (const c of name) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return h === 0 ? 1 : h;
}
