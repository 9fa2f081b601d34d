/**
 * ShareServer: a FUSE file server that serves one host directory over a byte stream carrying raw
 * FUSE requests (struct fuse_in_header + body, as read from /dev/fuse by the guest relay) and
 * receiving raw replies. The guest is treated as hostile: every name is validated, every host path
 * is resolved component by component through real directory fds (`/proc/self/fd/<dirfd>/<name>`,
 * O_NOFOLLOW), so neither a guest-created nor a concurrently swapped-in host symlink can redirect an
 * operation outside the share (policies "deny" and "opaque"). See README.md in this directory.
 *
 * This class composes the parts, one file each: transport.ts (stream framing and back-pressure),
 * nodes.ts (node table), dir-cache.ts (directory fds), handles.ts (open handles), ops.ts (the op
 * table; handlers in ops-node.ts, ops-file.ts, ops-dir.ts), with the state they share in context.ts.
 */
import type * as fs from "node:fs";
import type { Duplex } from "node:stream";
import { invalidOption, SupermachineError } from "../errors";
import type { ReaddirPlusMode, ShareContext, SymlinkPolicy } from "./context";
import { DirCache } from "./dir-cache";
import { AttrEncoder } from "./encode";
import { HandleTable } from "./handles";
import { closeFd, closesDrained, E, errnoOf, fail, fstatFd, O, O_PATH, openFd } from "./host-fs";
import { NodeTable } from "./nodes";
import { OPS, type OpRow } from "./ops";
import { encodeReply, FUSE_KERNEL_VERSION, IN_HEADER_SIZE, type InHeader, readInHeader } from "./proto";
import { FuseTransport } from "./transport";

export type { ReaddirPlusMode, SymlinkPolicy } from "./context";
export { validateName } from "./host-fs";

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

export class ShareServer {
  readonly root: string;
  readonly policy: SymlinkPolicy;
  readonly tag: string;
  private readonly onError: (e: Error) => void;
  private readonly transport: FuseTransport;
  /** The state the op handlers share (see context.ts). */
  private readonly ctx: ShareContext;
  private errorReplies = 0;
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
    const ttlMs = Math.max(0, Math.floor(opts.cacheTtlMs ?? 0));
    const rp = opts.readdirPlus ?? (ttlMs > 0 ? "auto" : "off");
    if (rp !== "off" && rp !== "auto" && rp !== "always") {
      throw invalidOption("readdirPlus", `must be "off", "auto" or "always" (got ${String(rp)})`);
    }
    this.onError = opts.onError ?? (() => {});
    this.transport = new FuseTransport({
      maxInFlight: Math.max(1, opts.maxInFlight ?? 64),
      tag: opts.tag,
      onError: this.onError,
    });
    /** O_NOFOLLOW unless policy "follow". */
    const nofollow = opts.policy === "follow" ? 0 : O.O_NOFOLLOW;
    const nodes = new NodeTable(Math.max(2, opts.maxNodes ?? 100_000), (id) => dirs.evict(id));
    const dirs = new DirCache(nodes, Math.max(0, Math.floor(opts.dirFdCache ?? 256)), nofollow);
    this.ctx = {
      policy: opts.policy,
      readOnly: opts.readOnly ?? false,
      readdirPlus: rp,
      nodes,
      dirs,
      handles: new HandleTable(Math.max(1, opts.maxOpenHandles ?? 1024)),
      enc: new AttrEncoder(ttlMs),
      minor: 0,
      plus: false,
    };
  }

  stats(): ShareServerStats {
    const t = this.transport;
    const minor = this.ctx.minor;
    return {
      requests: t.requests,
      inFlight: t.inFlight,
      peakInFlight: t.peakInFlight,
      nodes: this.ctx.nodes.size,
      openHandles: this.ctx.handles.size,
      errorReplies: this.errorReplies,
      pauses: t.pauses,
      protocol: minor ? `${FUSE_KERNEL_VERSION}.${minor}` : null,
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
    this.transport.destroy();
    if (this.serving) await this.serving.catch(() => {});
    await this.releaseAll();
  }

  private async releaseAll(): Promise<void> {
    const s = this.ctx;
    s.dirs.evictAll();
    await closesDrained();
    await s.handles.closeAll();
    await s.dirs.closeRoot();
    s.nodes.clear();
    s.minor = 0;
    s.plus = false;
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
    this.ctx.dirs.rootFd = rootFd;
    this.ctx.nodes.reset(st.ino);
    await this.transport.run(stream, (msg) => this.dispatch(msg));
    await this.releaseAll();
  }

  /** Handles one request: inline (no reply: null) or by its handler in the op table. */
  private dispatch(msg: Buffer): Promise<Buffer> | null {
    const h = readInHeader(msg);
    const body = msg.subarray(IN_HEADER_SIZE);
    const row = OPS.get(h.opcode);
    if (row?.phase === "inline") {
      row.run(this.ctx, h.nodeid, body);
      return null;
    }
    return this.answer(h, row, body);
  }

  /** Runs the handler and encodes its reply, or the error it failed with (EIO when unexpected). */
  private async answer(h: InHeader, row: OpRow | undefined, body: Buffer): Promise<Buffer> {
    try {
      if (row?.phase !== "init" && this.ctx.minor === 0) fail(E.EIO);
      if (!row) fail(E.ENOSYS);
      return encodeReply(h.unique, 0, await row.run(this.ctx, h.nodeid, body));
    } catch (e) {
      let errno = errnoOf(e);
      if (errno === null) {
        this.onError(e instanceof Error ? e : new Error(String(e)));
        errno = E.EIO;
      }
      this.errorReplies++;
      return encodeReply(h.unique, -errno);
    }
  }
}
