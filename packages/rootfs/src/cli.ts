import { RootfsError } from "./errors";
import { type BuildRootfsResult, buildRootfs } from "./rootfs";
import type { LayerInput } from "./types";

export interface RootfsCommandArgs {
  ref: string;
  out: string;
  compression: "gzip" | "none";
  blockSize: number;
}

export const ROOTFS_USAGE =
  "usage: supermachine image rootfs REF -o image.sqfs [--block-size BYTES] [--no-compression]";

/** Parses the arguments after `supermachine image rootfs`. Throws SM_ROOTFS_CONFIG with the usage line. */
export function parseRootfsArgs(argv: string[]): RootfsCommandArgs {
  let ref: string | undefined;
  let out: string | undefined;
  let blockSize = 131072;
  let compression: "gzip" | "none" = "gzip";
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "-o" || a === "--output") out = argv[++i];
    else if (a === "--block-size") blockSize = Number(argv[++i]);
    else if (a === "--no-compression") compression = "none";
    else if (a.startsWith("-"))
      throw new RootfsError("SM_ROOTFS_CONFIG", `unknown option ${a}\n${ROOTFS_USAGE}`);
    else if (ref === undefined) ref = a;
    else throw new RootfsError("SM_ROOTFS_CONFIG", `unexpected argument ${a}\n${ROOTFS_USAGE}`);
  }
  if (!ref || !out)
    throw new RootfsError("SM_ROOTFS_CONFIG", `an image reference and -o are required\n${ROOTFS_USAGE}`);
  return { ref, out, compression, blockSize };
}

/**
 * The body of `supermachine image rootfs`: the caller (core's CLI) resolves REF to layers (lowest first),
 * this builds the image and prints progress and a summary line to `write`.
 */
export async function runRootfsCommand(opts: {
  layers: LayerInput[];
  out: string;
  compression?: "gzip" | "none";
  blockSize?: number;
  write?: (line: string) => void;
}): Promise<BuildRootfsResult> {
  const write = opts.write ?? ((l: string) => process.stderr.write(`${l}\n`));
  const started = Date.now();
  let lastPct = -1;
  const result = await buildRootfs({
    layers: opts.layers,
    out: opts.out,
    compression: opts.compression ?? "gzip",
    blockSize: opts.blockSize ?? 131072,
    onProgress: (p) => {
      if (p.phase === "layer")
        write(`layer ${p.layer + 1}/${p.layers} ${p.digest}: ${p.entries} entries so far`);
      else if (p.phase === "data" && p.bytesTotal > 0) {
        const pct = Math.floor((p.bytesDone / p.bytesTotal) * 10) * 10;
        if (pct !== lastPct) {
          lastPct = pct;
          write(`writing data ${pct}%`);
        }
      }
    },
  });
  write(
    `${result.path}: ${result.bytes} bytes, ${result.inodes} inodes, sha256 ${result.sha256} (${Date.now() - started} ms)`,
  );
  return result;
}
