import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { basename, dirname, join } from "node:path";
import { isRootfsError, RootfsError } from "./errors";
import { Flattener } from "./flatten";
import { Spool } from "./spool";
import { writeSquashfs } from "./squashfs/writer";
import type { ExtraFile, LayerInput } from "./types";

export type RootfsProgress =
  | { phase: "layer"; layer: number; layers: number; digest: string; entries: number }
  | { phase: "data"; bytesDone: number; bytesTotal: number }
  | { phase: "done"; bytes: number };

export interface BuildRootfsOptions {
  /** Image layers, lowest first. */
  layers: LayerInput[];
  /** Files added on top of the layers. */
  extraFiles?: ExtraFile[];
  /** Output path of the squashfs image (written to a temp file next to it, then renamed). */
  out: string;
  /** "gzip" (default) or "none". */
  compression?: "gzip" | "none";
  /** zlib level 1..9 (default 9, like mksquashfs). */
  compressionLevel?: number;
  /** Data block size in bytes, power of two in 4096..1048576 (default 131072). */
  blockSize?: number;
  /**
   * Timestamp (seconds since the epoch) for the superblock, directories created implicitly and extra files.
   * Entry mtimes from the layers are kept as they are. Default 0 (see README "Determinism").
   */
  mtime?: number;
  /** Blocks compressed in parallel (default: 2 x available parallelism, min 4). */
  concurrency?: number;
  /** Directory for the temporary content spool (default: the output's directory). */
  tmpDir?: string;
  onProgress?: (p: RootfsProgress) => void;
}

export interface BuildRootfsResult {
  path: string;
  bytes: number;
  inodes: number;
  /** sha256 of the image file (hex). Same inputs give the same image and hash. */
  sha256: string;
}

const KNOWN = new Set([
  "layers",
  "extraFiles",
  "out",
  "compression",
  "compressionLevel",
  "blockSize",
  "mtime",
  "concurrency",
  "tmpDir",
  "onProgress",
]);

function config(msg: string): RootfsError {
  return new RootfsError("SM_ROOTFS_CONFIG", msg);
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Flattens `layers` (+ `extraFiles`) and writes a deterministic squashfs 4.0 image to `out`. */
export async function buildRootfs(opts: BuildRootfsOptions): Promise<BuildRootfsResult> {
  for (const k of Object.keys(opts)) if (!KNOWN.has(k)) throw config(`buildRootfs: unknown option "${k}"`);
  if (!Array.isArray(opts.layers)) throw config("buildRootfs: layers must be an array of LayerInput");
  if (typeof opts.out !== "string" || opts.out === "")
    throw config("buildRootfs: out (output path) is required");
  const blockSize = opts.blockSize ?? 131072;
  if (
    !Number.isInteger(blockSize) ||
    blockSize < 4096 ||
    blockSize > 1048576 ||
    (blockSize & (blockSize - 1)) !== 0
  )
    throw config(`buildRootfs: blockSize must be a power of two between 4096 and 1048576, got ${blockSize}`);
  const compression = opts.compression ?? "gzip";
  if (compression !== "gzip" && compression !== "none")
    throw config(`buildRootfs: compression must be "gzip" or "none", got ${compression}`);
  const level = opts.compressionLevel ?? 9;
  if (!Number.isInteger(level) || level < 1 || level > 9)
    throw config(`buildRootfs: compressionLevel must be 1..9, got ${level}`);
  const mtime = opts.mtime ?? 0;
  if (!Number.isInteger(mtime) || mtime < 0 || mtime > 0xffffffff)
    throw config(`buildRootfs: mtime must be 0..2^32-1 seconds, got ${mtime}`);
  const concurrency = opts.concurrency ?? Math.max(4, availableParallelism() * 2);

  const outDir = dirname(opts.out);
  await mkdir(outDir, { recursive: true }).catch((err: unknown) => {
    throw new RootfsError(
      "SM_ROOTFS_IO",
      `cannot create the output directory ${outDir}: ${(err as Error).message}`,
      { cause: err },
    );
  });
  const spool = await Spool.create(opts.tmpDir ?? outDir).catch((err: unknown) => {
    throw new RootfsError(
      "SM_ROOTFS_IO",
      `cannot create a spool directory in ${opts.tmpDir ?? outDir}: ${(err as Error).message}`,
      { cause: err },
    );
  });
  const tmp = join(outDir, `.${basename(opts.out)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    const flat = new Flattener(spool, { mtime });
    for (let i = 0; i < opts.layers.length; i++) {
      const layer = opts.layers[i] as LayerInput;
      await flat.applyLayer(layer, i);
      opts.onProgress?.({
        phase: "layer",
        layer: i,
        layers: opts.layers.length,
        digest: layer.digest,
        entries: flat.entries,
      });
    }
    await flat.addExtraFiles(opts.extraFiles ?? []);

    const fh = await open(tmp, "w", 0o644);
    let result: { bytes: number; inodes: number };
    try {
      result = await writeSquashfs(flat.root, spool, fh, {
        blockSize,
        level: compression === "none" ? null : level,
        mtime,
        concurrency,
        onData: opts.onProgress
          ? (bytesDone, bytesTotal) => opts.onProgress?.({ phase: "data", bytesDone, bytesTotal })
          : undefined,
      });
      await fh.sync();
    } finally {
      await fh.close();
    }
    const sha256 = await sha256File(tmp);
    await rename(tmp, opts.out);
    opts.onProgress?.({ phase: "done", bytes: result.bytes });
    return { path: opts.out, bytes: result.bytes, inodes: result.inodes, sha256 };
  } catch (err) {
    await rm(tmp, { force: true });
    if (isRootfsError(err)) throw err;
    throw new RootfsError("SM_ROOTFS_IO", `building ${opts.out} failed: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    await spool.dispose();
  }
}
