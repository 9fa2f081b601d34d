/**
 * The handle table: host fds of the files and directories the guest opened (OPEN, CREATE,
 * OPENDIR), by FUSE file handle, bounded by maxOpenHandles (beyond: ENFILE).
 */
import type { DirEntry } from "./encode";
import { closeFd, E, fail } from "./host-fs";
import type { Node } from "./nodes";
import { OPEN_OUT_SIZE } from "./proto";

export interface Handle {
  kind: "file" | "dir";
  fd: number;
  /** Access mode the file was opened with (O_RDONLY/O_WRONLY/O_RDWR). */
  accmode: number;
  /** The directory node a "dir" handle was opened on (READDIRPLUS remembers entries under it). */
  node?: Node;
  /** Directory listing snapshot (taken at offset 0) so that offsets stay stable. */
  entries?: DirEntry[];
}

export class HandleTable {
  private handles = new Map<number, Handle>();
  private nextFh = 1;

  constructor(private readonly maxOpenHandles: number) {}

  get size(): number {
    return this.handles.size;
  }

  /** ENFILE when no further handle may be opened. */
  checkCap(): void {
    if (this.handles.size >= this.maxOpenHandles) fail(E.ENFILE);
  }

  /** Adds a handle; returns its struct fuse_open_out. */
  add(h: Handle): Buffer {
    const fh = this.nextFh++;
    if (this.nextFh > 0xffffffff) this.nextFh = 1;
    this.handles.set(fh, h);
    const out = Buffer.alloc(OPEN_OUT_SIZE);
    out.writeBigUInt64LE(BigInt(fh), 0);
    out.writeUInt32LE(0, 8); // no FOPEN_KEEP_CACHE: every open re-reads host data
    return out;
  }

  private lookup(fh: bigint): Handle | undefined {
    return fh <= 0xffffffffn ? this.handles.get(Number(fh)) : undefined;
  }

  /** The handle named by the u64 at the start of `body` (fuse_read_in & co.); else EBADF. */
  fromBody(body: Buffer, kind: "file" | "dir" = "file"): Handle {
    if (body.length < 8) fail(E.EINVAL);
    const h = this.lookup(body.readBigUInt64LE(0));
    if (!h || h.kind !== kind) fail(E.EBADF);
    return h;
  }

  /** The handle a GETATTR/SETATTR names (only the low 32 bits of `fh` count), if any. */
  peek(fh: bigint): Handle | undefined {
    return this.handles.get(Number(BigInt.asUintN(32, fh)));
  }

  /** Removes handle `fh` (if open) and closes its fd. */
  async close(fh: bigint): Promise<void> {
    const h = this.lookup(fh);
    if (h) {
      this.handles.delete(Number(fh));
      await closeFd(h.fd);
    }
  }

  async closeAll(): Promise<void> {
    const fds = [...this.handles.values()].map((h) => h.fd);
    this.handles.clear();
    await Promise.all(fds.map(closeFd));
  }
}
