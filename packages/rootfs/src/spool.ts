import { createHash } from "node:crypto";
import { type FileHandle, mkdtemp, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { RootfsError } from "./errors";

/** Where a regular file's bytes live in the spool. */
export interface Content {
  offset: number;
  size: number;
  /** sha256 of the content (hex); "" for empty files. Used to deduplicate identical files. */
  hash: string;
}

const FLUSH_BYTES = 1 << 20;

/**
 * Append-only temporary file holding every regular file's contents while layers are flattened,
 * so that no layer (and no file) is ever held in memory as a whole.
 */
export class Spool {
  private constructor(
    readonly dir: string,
    private readonly fh: FileHandle,
  ) {}
  size = 0;

  static async create(parent: string): Promise<Spool> {
    const dir = await mkdtemp(join(parent, ".sm-rootfs-spool-"));
    const fh = await open(join(dir, "contents"), "w+", 0o600);
    return new Spool(dir, fh);
  }

  /** Copies a stream into the spool; resolves with its location and hash. */
  async append(stream: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>): Promise<Content> {
    const start = this.size;
    const hash = createHash("sha256");
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let total = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const buf = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      await this.writeAll(buf, start + total - buf.length);
    };
    for await (const chunk of stream) {
      const buf =
        typeof chunk === "string"
          ? Buffer.from(chunk)
          : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (buf.length === 0) continue;
      hash.update(buf);
      // Copy: the producer may reuse its buffer once we yield.
      pending.push(Buffer.from(buf));
      pendingBytes += buf.length;
      total += buf.length;
      if (pendingBytes >= FLUSH_BYTES) await flush();
    }
    await flush();
    this.size = start + total;
    return { offset: start, size: total, hash: total === 0 ? "" : hash.digest("hex") };
  }

  async appendBuffer(data: Uint8Array): Promise<Content> {
    return this.append([data]);
  }

  private async writeAll(buf: Buffer, position: number): Promise<void> {
    let done = 0;
    try {
      while (done < buf.length) {
        const { bytesWritten } = await this.fh.write(buf, done, buf.length - done, position + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw new RootfsError(
        "SM_ROOTFS_IO",
        `writing the content spool in ${this.dir} failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  /** Reads exactly `length` bytes at `position` into `into` (from offset 0). */
  async read(into: Buffer, position: number, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(into, done, length - done, position + done);
      if (bytesRead === 0) throw new Error(`spool truncated at ${position + done}`);
      done += bytesRead;
    }
  }

  async dispose(): Promise<void> {
    await this.fh.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}
