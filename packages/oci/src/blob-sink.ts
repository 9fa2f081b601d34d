import { createHash, type Hash } from "node:crypto";
import { createWriteStream, type WriteStream } from "node:fs";
import { Worker } from "node:worker_threads";

/** Where a blob's bytes go while it is written: a temp file plus a running sha256. */
export interface BlobSink {
  write(chunk: Uint8Array): Promise<void>;
  /** Truncate and start over. */
  reset(): Promise<void>;
  /** Flush and close; returns the sha256 hex of everything written since the last reset. */
  finish(): Promise<string>;
  /** Close without caring about the content (the caller removes the file). */
  destroy(): Promise<void>;
}

/** Hash and write on the calling thread (small blobs: manifests, configs, small layers). */
export class InlineSink implements BlobSink {
  #hash: Hash = createHash("sha256");
  #out!: WriteStream;
  #error: Error | undefined;

  constructor(private readonly path: string) {
    this.#open();
  }

  #open(): void {
    this.#error = undefined;
    // A large buffer lets network reads continue while the disk write of earlier chunks runs.
    const out = createWriteStream(this.path, { flags: "w", highWaterMark: 8 << 20 });
    // Remember the first write error (ENOSPC, EIO…) so the next write/finish throws it.
    out.on("error", (err) => {
      this.#error ??= err;
    });
    this.#out = out;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#error) throw this.#error;
    this.#hash.update(chunk);
    const out = this.#out;
    if (out.write(chunk)) return;
    await new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        out.off("drain", onDrain);
        out.off("close", onClose);
      };
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onClose = () => {
        cleanup();
        reject(this.#error ?? new Error("blob temp file closed unexpectedly"));
      };
      out.once("drain", onDrain);
      out.once("close", onClose);
    });
  }

  #close(): Promise<void> {
    const out = this.#out;
    return new Promise((resolve, reject) => {
      if (this.#error) return reject(this.#error);
      if (out.closed) return resolve();
      // The error event may come after this callback: use the callback's own error too.
      out.end((err?: Error | null) => {
        const e = err ?? this.#error;
        if (e) {
          this.#error ??= e;
          reject(e);
        } else {
          resolve();
        }
      });
    });
  }

  async reset(): Promise<void> {
    await this.#close().catch(() => {});
    this.#hash = createHash("sha256");
    this.#open();
  }

  async finish(): Promise<string> {
    await this.#close();
    return this.#hash.digest("hex");
  }

  async destroy(): Promise<void> {
    const out = this.#out;
    if (!out.closed) await new Promise<void>((resolve) => out.destroy().once("close", () => resolve()));
  }
}

// The worker hashes and writes (synchronously, on its own thread), so a large download uses
// two cores: the main thread parses HTTP, the worker hashes and writes. A blob may arrive as
// several byte ranges in parallel ("parts"): each part is written at its offset, and the hash
// advances over the contiguous prefix (from the incoming buffer when it is next in line, else
// re-read from the file, which is in the page cache). Plain CommonJS source: no file to ship.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const fs = require("node:fs");
const crypto = require("node:crypto");
let fd = -1, hash = null, failed = null, bounds = [], front = [], cursor = 0, size = 0, scratch = null;
function closeFd() { if (fd >= 0) { try { fs.closeSync(fd); } catch {} fd = -1; } }
function setBounds(b) {
  bounds = b; front = b.map((x) => x[0]); cursor = 0; size = b.length ? b[b.length - 1][1] : 0;
  hash = crypto.createHash("sha256"); failed = null;
}
function advance(buf, pos) {
  for (let k = 0; k < bounds.length && cursor < size; k++) {
    const [s, e] = bounds[k];
    if (cursor >= e) continue;
    if (cursor < s) break;
    const avail = front[k] - cursor;
    if (avail <= 0) break;
    if (buf && pos <= cursor && front[k] === pos + buf.length) {
      hash.update(buf.subarray(cursor - pos));
      cursor = front[k];
    } else {
      scratch = scratch || Buffer.allocUnsafe(4 << 20);
      while (cursor < front[k]) {
        const n = fs.readSync(fd, scratch, 0, Math.min(scratch.length, front[k] - cursor), cursor);
        if (n <= 0) throw new Error("short read while hashing blob");
        hash.update(scratch.subarray(0, n));
        cursor += n;
      }
    }
    if (cursor < e) break;
  }
}
parentPort.on("message", (m) => {
  try {
    if (m.t === "open") {
      closeFd(); setBounds(m.bounds);
      fd = fs.openSync(m.path, "w+");
      parentPort.postMessage({ t: "ok" });
    } else if (m.t === "data") {
      if (failed) return parentPort.postMessage({ t: "ack", n: m.b.byteLength });
      const b = new Uint8Array(m.b);
      const pos = front[m.part];
      if (pos + b.length > bounds[m.part][1]) throw new Error("more data than the requested range");
      let o = 0;
      while (o < b.length) o += fs.writeSync(fd, b, o, b.length - o, pos + o);
      front[m.part] = pos + b.length;
      advance(b, pos);
      parentPort.postMessage({ t: "ack", n: b.length });
    } else if (m.t === "reset") {
      fs.ftruncateSync(fd, 0); setBounds(m.bounds);
      parentPort.postMessage({ t: "ok" });
    } else if (m.t === "finish") {
      if (failed) throw failed;
      if (cursor !== size) throw new Error("blob incomplete: hashed " + cursor + " of " + size + " bytes");
      closeFd();
      parentPort.postMessage({ t: "done", hex: hash.digest("hex") });
    } else if (m.t === "destroy") {
      closeFd(); failed = null;
      parentPort.postMessage({ t: "ok" });
    }
  } catch (err) {
    if (m.t === "data") { failed = err; parentPort.postMessage({ t: "ack", n: m.b.byteLength, error: { message: err.message, code: err.code } }); return; }
    closeFd();
    parentPort.postMessage({ t: "error", error: { message: err.message, code: err.code } });
  }
});
`;

type WorkerReply =
  | { t: "ok" }
  | { t: "ack"; n: number; error?: { message: string; code?: string } }
  | { t: "done"; hex: string }
  | { t: "error"; error: { message: string; code?: string } };

const idle: Worker[] = [];

function takeWorker(): Worker {
  const w = idle.pop() ?? new Worker(WORKER_SOURCE, { eval: true });
  w.unref(); // never keeps the process alive
  return w;
}

function toError(e: { message: string; code?: string }): Error {
  return Object.assign(new Error(e.message), e.code ? { code: e.code } : {});
}

const BATCH_BYTES = 1 << 20;
const MAX_IN_FLIGHT = 16 << 20;

/** Byte ranges `[start, end)` of a blob, in order, covering it without gaps. */
export type PartBounds = Array<[number, number]>;

/**
 * Hash + write in a worker thread (large layers). Chunks are batched to 1 MiB per part and
 * transferred (one copy). `writePart(i, chunk)` appends to part i; `write` is part 0.
 */
export class WorkerSink implements BlobSink {
  #w: Worker;
  #pending: Buffer[][];
  #pendingBytes: number[];
  #inFlight = 0;
  #error: Error | undefined;
  #waiters: Array<() => void> = [];
  #reply: ((m: WorkerReply) => void) | undefined;
  #ready: Promise<void>;
  #released = false;
  readonly #total: number;

  constructor(path: string, bounds: PartBounds) {
    this.#total = bounds.length ? bounds[bounds.length - 1]![1] : 0;
    this.#pending = bounds.map(() => []);
    this.#pendingBytes = bounds.map(() => 0);
    this.#w = takeWorker();
    this.#w.on("message", this.#onMessage);
    this.#w.on("error", this.#onCrash);
    this.#ready = this.#call({ t: "open", path, bounds });
  }

  #wakeAll(): void {
    const ws = this.#waiters;
    this.#waiters = [];
    for (const w of ws) w();
  }

  #onMessage = (m: WorkerReply) => {
    if (m.t === "ack") {
      this.#inFlight -= m.n;
      if (m.error) this.#error ??= toError(m.error);
      if (this.#inFlight < MAX_IN_FLIGHT || this.#error) this.#wakeAll();
      return;
    }
    const r = this.#reply;
    this.#reply = undefined;
    r?.(m);
  };

  #onCrash = (err: Error) => {
    this.#error ??= err;
    this.#wakeAll();
    this.#reply?.({ t: "error", error: { message: err.message } });
  };

  #call(msg: object): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#reply = (m) => (m.t === "error" ? reject(toError(m.error)) : resolve());
      this.#w.postMessage(msg);
    });
  }

  async #flush(part: number): Promise<void> {
    const bytes = this.#pendingBytes[part]!;
    if (bytes === 0) return;
    const buf = Buffer.allocUnsafeSlow(bytes); // own ArrayBuffer: transferable
    let o = 0;
    for (const c of this.#pending[part]!) {
      buf.set(c, o);
      o += c.length;
    }
    this.#pending[part] = [];
    this.#pendingBytes[part] = 0;
    this.#inFlight += bytes;
    this.#w.postMessage({ t: "data", part, b: buf.buffer }, [buf.buffer]);
    while (this.#inFlight >= MAX_IN_FLIGHT && !this.#error) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#error) throw this.#error;
  }

  async writePart(part: number, chunk: Uint8Array): Promise<void> {
    await this.#ready;
    if (this.#error) throw this.#error;
    if (this.#released) throw new Error("blob writer already closed");
    this.#pending[part]!.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.#pendingBytes[part]! += chunk.byteLength;
    if (this.#pendingBytes[part]! >= BATCH_BYTES) await this.#flush(part);
  }

  /** Send what part `part` has buffered (call when a part's download ends or pauses). */
  async flushPart(part: number): Promise<void> {
    await this.#ready;
    await this.#flush(part);
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.writePart(0, chunk);
  }

  /** Start over, optionally with other part bounds. Messages are ordered: earlier acks arrive first. */
  async resetParts(bounds: PartBounds): Promise<void> {
    await this.#ready;
    this.#pending = bounds.map(() => []);
    this.#pendingBytes = bounds.map(() => 0);
    await this.#call({ t: "reset", bounds });
    this.#error = undefined;
  }

  /** Sequential restart: one part over the whole blob. */
  async reset(): Promise<void> {
    await this.resetParts([[0, this.#total]]);
  }

  async finish(): Promise<string> {
    await this.#ready;
    for (let i = 0; i < this.#pending.length; i++) await this.#flush(i);
    if (this.#error) throw this.#error;
    const hex = await new Promise<string>((resolve, reject) => {
      this.#reply = (m) =>
        m.t === "done" ? resolve(m.hex) : reject(toError((m as { error: { message: string } }).error));
      this.#w.postMessage({ t: "finish" });
    });
    this.#release();
    return hex;
  }

  async destroy(): Promise<void> {
    if (this.#released) return;
    try {
      await this.#ready.catch(() => {});
      await this.#call({ t: "destroy" });
      this.#release();
    } catch {
      this.#released = true;
      await this.#w.terminate();
    }
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#w.off("message", this.#onMessage);
    this.#w.off("error", this.#onCrash);
    this.#wakeAll();
    if (this.#error || idle.length >= 8) void this.#w.terminate();
    else idle.push(this.#w);
  }
}
