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
// two cores: the main thread parses HTTP, the worker hashes and writes. Plain CommonJS source:
// no separate file to ship.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const fs = require("node:fs");
const crypto = require("node:crypto");
let fd = -1, hash = null, failed = null;
function closeFd() { if (fd >= 0) { try { fs.closeSync(fd); } catch {} fd = -1; } }
parentPort.on("message", (m) => {
  try {
    if (m.t === "open") {
      closeFd(); failed = null; hash = crypto.createHash("sha256");
      fd = fs.openSync(m.path, "w");
      parentPort.postMessage({ t: "ok" });
    } else if (m.t === "data") {
      if (failed) return parentPort.postMessage({ t: "ack", n: m.b.byteLength });
      const b = new Uint8Array(m.b);
      hash.update(b);
      let o = 0;
      while (o < b.length) o += fs.writeSync(fd, b, o, b.length - o);
      parentPort.postMessage({ t: "ack", n: b.length });
    } else if (m.t === "reset") {
      failed = null; hash = crypto.createHash("sha256");
      fs.ftruncateSync(fd, 0);
      fs.closeSync(fd); fd = fs.openSync(m.path, "w");
      parentPort.postMessage({ t: "ok" });
    } else if (m.t === "finish") {
      if (failed) throw failed;
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

/** Hash + write in a worker thread (large layers). Chunks are batched to 1 MiB and transferred. */
export class WorkerSink implements BlobSink {
  #w: Worker;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #inFlight = 0;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  #reply: ((m: WorkerReply) => void) | undefined;
  #ready: Promise<void>;
  #released = false;

  constructor(private readonly path: string) {
    this.#w = takeWorker();
    this.#w.on("message", this.#onMessage);
    this.#w.on("error", this.#onCrash);
    this.#ready = this.#call({ t: "open", path });
  }

  #onMessage = (m: WorkerReply) => {
    if (m.t === "ack") {
      this.#inFlight -= m.n;
      if (m.error) this.#error ??= toError(m.error);
      if (this.#wake && (this.#inFlight < MAX_IN_FLIGHT || this.#error)) {
        const f = this.#wake;
        this.#wake = undefined;
        f();
      }
      return;
    }
    const r = this.#reply;
    this.#reply = undefined;
    r?.(m);
  };

  #onCrash = (err: Error) => {
    this.#error ??= err;
    this.#wake?.();
    this.#reply?.({ t: "error", error: { message: err.message } });
  };

  #call(msg: object): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#reply = (m) => (m.t === "error" ? reject(toError(m.error)) : resolve());
      this.#w.postMessage(msg);
    });
  }

  async #flush(): Promise<void> {
    if (this.#pendingBytes === 0) return;
    const buf = Buffer.allocUnsafeSlow(this.#pendingBytes); // own ArrayBuffer: transferable
    let o = 0;
    for (const c of this.#pending) {
      buf.set(c, o);
      o += c.length;
    }
    this.#pending = [];
    this.#inFlight += this.#pendingBytes;
    this.#pendingBytes = 0;
    this.#w.postMessage({ t: "data", b: buf.buffer }, [buf.buffer]);
    if (this.#inFlight >= MAX_IN_FLIGHT) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    if (this.#error) throw this.#error;
  }

  async write(chunk: Uint8Array): Promise<void> {
    await this.#ready;
    if (this.#error) throw this.#error;
    this.#pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.#pendingBytes += chunk.byteLength;
    if (this.#pendingBytes >= BATCH_BYTES) await this.#flush();
  }

  async reset(): Promise<void> {
    await this.#ready;
    this.#pending = [];
    this.#pendingBytes = 0;
    // Acks of data already sent still arrive before the reply (messages are ordered).
    await this.#call({ t: "reset", path: this.path });
    this.#error = undefined;
  }

  async finish(): Promise<string> {
    await this.#ready;
    await this.#flush();
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
    if (this.#error || idle.length >= 8) void this.#w.terminate();
    else idle.push(this.#w);
  }
}
