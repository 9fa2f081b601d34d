import type { FileHandle } from "node:fs/promises";

const FLUSH_BYTES = 4 << 20;

/** Sequential buffered writer over a file handle, starting at a given offset. */
export class Output {
  pos: number;
  private bufs: Buffer[] = [];
  private pending = 0;
  private flushedTo: number;

  constructor(
    private readonly fh: FileHandle,
    start: number,
  ) {
    this.pos = start;
    this.flushedTo = start;
  }

  /** Appends; `pos` advances synchronously. Resolves once buffered (or flushed when the buffer is full). */
  async write(buf: Buffer): Promise<void> {
    if (buf.length === 0) return;
    this.bufs.push(buf);
    this.pending += buf.length;
    this.pos += buf.length;
    if (this.pending >= FLUSH_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pending === 0) return;
    const bufs = this.bufs;
    const at = this.flushedTo;
    const n = this.pending;
    this.bufs = [];
    this.pending = 0;
    this.flushedTo += n;
    let written = 0;
    let rest = bufs;
    while (written < n) {
      const { bytesWritten } = await this.fh.writev(rest, at + written);
      written += bytesWritten;
      if (written < n) rest = [Buffer.concat(bufs).subarray(written)];
    }
  }
}
