import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { cacheRoot } from "@supermachine/base";
import { type BlobSink, InlineSink, type PartBounds, WorkerSink } from "./blob-sink";
import { OciError } from "./errors";
import { isSha256Digest } from "./reference";

/**
 * The default store directory: `<cache root>/oci`, i.e. `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine/oci`
 * (an empty XDG_CACHE_HOME counts as unset; the cache root is @supermachine/base's `cacheRoot`).
 */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheRoot(env), "oci");
}

function hexOf(digest: string): string {
  if (!isSha256Digest(digest)) {
    throw new OciError(
      "SM_INVALID_IMAGE",
      `unsupported or malformed digest "${digest}" (expected sha256:<64 hex>)`,
    );
  }
  return digest.slice(7);
}

/** Blobs at least this large are hashed and written on a worker thread. */
const WORKER_MIN_BYTES = 4 << 20;

/** A ref recorded in the store: which top-level manifest/index a reference resolved to. */
export interface StoredRef {
  reference: string;
  digest: string;
  mediaType: string;
  updatedAt: string;
}

/**
 * An in-progress blob write: bytes go to a private temp file and through sha256; `commit()`
 * verifies digest and size and renames into place. Nothing partial is ever visible under blobs/.
 */
export class BlobWriter {
  #sink: BlobSink;
  #offset = 0;
  #bounds: PartBounds = [];
  #partWritten: number[] = [0];
  #done = false;
  readonly tempPath: string;

  constructor(
    private readonly store: OciStore,
    readonly expected: { digest?: string; size?: number },
  ) {
    this.tempPath = join(store.dir, "tmp", `${process.pid}-${randomBytes(6).toString("hex")}.partial`);
    // Large blobs are hashed and written on a worker thread (a second core); small ones inline.
    if (expected.size !== undefined && expected.size >= WORKER_MIN_BYTES) {
      this.#bounds = [[0, expected.size]];
      this.#sink = new WorkerSink(this.tempPath, this.#bounds);
    } else {
      this.#sink = new InlineSink(this.tempPath);
    }
  }

  /** Bytes written so far (the offset a resumed download continues from). */
  get offset(): number {
    return this.#offset;
  }

  /** Whether the blob may be fetched as several byte ranges in parallel (`useParts`). */
  get supportsParts(): boolean {
    return this.#sink instanceof WorkerSink;
  }

  /** Current part bounds (`[start, end)`); one part unless `useParts` split the blob. */
  get parts(): PartBounds {
    return this.#bounds;
  }

  /** Bytes received so far for part `i` (a resumed range request continues from start + this). */
  partWritten(i: number): number {
    return this.#partWritten[i] ?? 0;
  }

  /** Start over with the blob split into `n` ranges of (nearly) equal size. */
  async useParts(n: number): Promise<PartBounds> {
    const sink = this.#sink;
    const size = this.expected.size;
    if (!(sink instanceof WorkerSink) || size === undefined)
      throw new Error("this blob cannot be split into parts");
    const step = Math.ceil(size / n);
    const bounds: PartBounds = [];
    for (let s = 0; s < size; s += step) bounds.push([s, Math.min(size, s + step)]);
    await sink.resetParts(bounds);
    this.#bounds = bounds;
    this.#partWritten = bounds.map(() => 0);
    this.#offset = 0;
    return bounds;
  }

  /** Append to part `i` (parallel range downloads). */
  async writePart(i: number, chunk: Uint8Array): Promise<void> {
    const sink = this.#sink;
    const b = this.#bounds[i];
    if (!(sink instanceof WorkerSink) || !b) throw new Error(`no part ${i}`);
    if (b[0] + this.#partWritten[i]! + chunk.length > b[1]) {
      throw new OciError(
        "SM_DIGEST_MISMATCH",
        `blob ${this.expected.digest ?? ""}: the registry sent more bytes than the requested range ${b[0]}-${b[1] - 1}`,
      );
    }
    this.#partWritten[i]! += chunk.length;
    this.#offset += chunk.length;
    await sink.writePart(i, chunk);
  }

  async write(chunk: Uint8Array): Promise<void> {
    const size = this.expected.size;
    if (size !== undefined && this.#offset + chunk.length > size) {
      throw new OciError(
        "SM_DIGEST_MISMATCH",
        `blob ${this.expected.digest ?? ""} is larger than the ${size} bytes its descriptor declares; refusing it`,
      );
    }
    if (this.#sink instanceof WorkerSink && this.#bounds.length > 1) {
      throw new Error("write() after useParts(): use writePart()");
    }
    this.#offset += chunk.length;
    this.#partWritten[0] = this.#offset;
    await this.#sink.write(chunk);
  }

  /** Throw away what was written and start over as one sequential stream. */
  async restart(): Promise<void> {
    await this.#sink.reset();
    if (this.expected.size !== undefined && this.#sink instanceof WorkerSink)
      this.#bounds = [[0, this.expected.size]];
    this.#partWritten = [0];
    this.#offset = 0;
  }

  /** Verify and move into the store. Returns the blob's digest and size. */
  async commit(): Promise<{ digest: string; size: number }> {
    if (this.#done) throw new Error("BlobWriter already finished");
    this.#done = true;
    try {
      const digest = `sha256:${await this.#sink.finish()}`;
      const size = this.#offset;
      if (this.expected.size !== undefined && size !== this.expected.size) {
        throw new OciError(
          "SM_DIGEST_MISMATCH",
          `blob ${this.expected.digest ?? digest}: got ${size} bytes, descriptor says ${this.expected.size}; nothing was stored`,
        );
      }
      if (this.expected.digest !== undefined && digest !== this.expected.digest) {
        throw new OciError(
          "SM_DIGEST_MISMATCH",
          `blob content does not match its digest: expected ${this.expected.digest}, got ${digest}; the download was discarded (corrupt registry, proxy or disk?)`,
        );
      }
      // Belt and braces against a file system that lost data without reporting it on write.
      const onDisk = (await stat(this.tempPath)).size;
      if (onDisk !== size) {
        throw Object.assign(new Error(`blob temp file has ${onDisk} bytes on disk, ${size} were written`), {
          code: "EIO",
        });
      }
      const dest = this.store.blobPath(digest);
      // rename() is atomic and replaces: two processes committing the same digest both succeed
      // with identical content.
      await rename(this.tempPath, dest);
      return { digest, size };
    } catch (err) {
      await this.#sink.destroy().catch(() => {});
      await rm(this.tempPath, { force: true });
      throw err;
    }
  }

  async abort(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#sink.destroy().catch(() => {});
    await rm(this.tempPath, { force: true });
  }
}

/**
 * A content-addressed blob store: `blobs/sha256/<hex>` (verified content only),
 * `refs/<encoded reference>` (reference → top-level digest) and `tmp/` for writes in progress.
 * Safe for concurrent use by several processes: every write goes temp → verify → rename.
 */
export class OciStore {
  readonly dir: string;
  #ready: Promise<void> | undefined;

  constructor(dir: string = defaultStoreDir()) {
    this.dir = dir;
  }

  /** Create the directory structure (idempotent). */
  init(): Promise<void> {
    this.#ready ??= (async () => {
      await mkdir(join(this.dir, "blobs", "sha256"), { recursive: true });
      await mkdir(join(this.dir, "tmp"), { recursive: true });
      await mkdir(join(this.dir, "refs"), { recursive: true });
    })();
    return this.#ready;
  }

  blobPath(digest: string): string {
    return join(this.dir, "blobs", "sha256", hexOf(digest));
  }

  /** Whether a blob is present (and, when `size` is given, has that size). */
  async hasBlob(digest: string, size?: number): Promise<boolean> {
    try {
      const st = await stat(this.blobPath(digest));
      return size === undefined || st.size === size;
    } catch {
      return false;
    }
  }

  async readBlob(digest: string): Promise<Buffer> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new OciError("SM_IMAGE_NOT_CACHED", `blob ${digest} is not in the store at ${this.dir}`, {
          cause: err,
        });
      }
      throw err;
    }
  }

  async readJson<T>(digest: string): Promise<T> {
    return JSON.parse((await this.readBlob(digest)).toString("utf8")) as T;
  }

  openBlob(digest: string, start?: number, end?: number): Readable {
    const opts: { start?: number; end?: number; highWaterMark: number } = { highWaterMark: 1 << 20 };
    if (start !== undefined) opts.start = start;
    if (end !== undefined) opts.end = end;
    return createReadStream(this.blobPath(digest), opts);
  }

  async beginBlob(expected: { digest?: string; size?: number } = {}): Promise<BlobWriter> {
    await this.init();
    if (expected.digest !== undefined) hexOf(expected.digest);
    return new BlobWriter(this, expected);
  }

  /** Write a blob from bytes or a stream; verified against `expected` when given. */
  async putBlob(
    source: Uint8Array | AsyncIterable<Uint8Array>,
    expected: { digest?: string; size?: number } = {},
  ): Promise<{ digest: string; size: number }> {
    if (expected.digest !== undefined && (await this.hasBlob(expected.digest, expected.size))) {
      if (!(source instanceof Uint8Array)) for await (const _ of source); // drain
      return {
        digest: expected.digest,
        size: expected.size ?? (await stat(this.blobPath(expected.digest))).size,
      };
    }
    const w = await this.beginBlob(expected);
    try {
      if (source instanceof Uint8Array) await w.write(source);
      else for await (const chunk of source) await w.write(chunk);
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w.commit();
  }

  #refPath(reference: string): string {
    return join(this.dir, "refs", encodeURIComponent(reference));
  }

  /** Record that `reference` resolves to the manifest/index `digest` (atomic replace). */
  async setRef(reference: string, digest: string, mediaType: string): Promise<void> {
    await this.init();
    const doc: StoredRef = { reference, digest, mediaType, updatedAt: new Date().toISOString() };
    const tmp = join(this.dir, "tmp", `${process.pid}-${randomBytes(6).toString("hex")}.ref`);
    try {
      await writeFile(tmp, JSON.stringify(doc));
      await rename(tmp, this.#refPath(reference));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async getRef(reference: string): Promise<StoredRef | undefined> {
    try {
      return JSON.parse(await readFile(this.#refPath(reference), "utf8")) as StoredRef;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  async deleteRef(reference: string): Promise<boolean> {
    try {
      await unlink(this.#refPath(reference));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async listRefs(): Promise<StoredRef[]> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, "refs"));
    } catch {
      return [];
    }
    const out: StoredRef[] = [];
    for (const name of names) {
      const r = await this.getRef(decodeURIComponent(name));
      if (r) out.push(r);
    }
    return out.sort((a, b) => a.reference.localeCompare(b.reference));
  }

  /** Every blob reachable from `digest` (an index, manifest, or plain blob) that is present. */
  async reachable(digest: string, into: Set<string> = new Set()): Promise<Set<string>> {
    if (into.has(digest)) return into;
    if (!(await this.hasBlob(digest))) return into;
    into.add(digest);
    let doc: {
      manifests?: Array<{ digest: string }>;
      config?: { digest: string };
      layers?: Array<{ digest: string }>;
    };
    try {
      const buf = await this.readBlob(digest);
      if (buf.length > 4 << 20 || buf[0] !== 0x7b) return into; // not a JSON manifest
      doc = JSON.parse(buf.toString("utf8"));
    } catch {
      return into;
    }
    for (const m of doc.manifests ?? []) await this.reachable(m.digest, into);
    if (doc.config?.digest && Array.isArray(doc.layers)) {
      into.add(doc.config.digest);
      for (const l of doc.layers) into.add(l.digest);
    }
    return into;
  }

  /**
   * Delete blobs no ref reaches. Blobs younger than `graceMs` (default 10 min) are kept, so a
   * pull running in another process (blobs written, ref not yet recorded) is not broken.
   * Stale temp files older than a day are removed too.
   */
  async gc(options: { graceMs?: number } = {}): Promise<{ removed: string[]; freedBytes: number }> {
    await this.init();
    const graceMs = options.graceMs ?? 10 * 60_000;
    const live = new Set<string>();
    for (const r of await this.listRefs()) await this.reachable(r.digest, live);
    const now = Date.now();
    const removed: string[] = [];
    let freedBytes = 0;
    const dir = join(this.dir, "blobs", "sha256");
    for (const hex of await readdir(dir)) {
      const digest = `sha256:${hex}`;
      if (live.has(digest)) continue;
      const p = join(dir, hex);
      try {
        const st = await stat(p);
        if (now - st.mtimeMs < graceMs) continue;
        await unlink(p);
        removed.push(digest);
        freedBytes += st.size;
      } catch {
        // vanished concurrently: fine
      }
    }
    const tmp = join(this.dir, "tmp");
    for (const name of await readdir(tmp)) {
      try {
        const st = await stat(join(tmp, name));
        if (now - st.mtimeMs > 24 * 3600_000) await rm(join(tmp, name), { force: true });
      } catch {
        // ignore
      }
    }
    return { removed, freedBytes };
  }
}

/** Accept a store, a directory, or nothing (default store). */
export function toStore(store: OciStore | string | undefined): OciStore {
  if (store instanceof OciStore) return store;
  if (store && typeof store === "object" && typeof (store as OciStore).blobPath === "function") return store;
  return new OciStore(store ?? defaultStoreDir());
}
