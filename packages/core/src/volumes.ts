/**
 * Volumes: sparse host files attached as raw block devices (the guest formats and mounts them, as in
 * the original). Opt-in (`format: "ext4"`): format a blank file (all zero in its first 64 KiB) on the
 * HOST with `mke2fs -t ext4 -F -E root_owner=0:0` before the bake, for images without mkfs; the root
 * directory of such a volume is owned by root (uid 0) in the guest.
 */
import { execFile } from "node:child_process";
import { mkdir, open, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { promisify } from "node:util";
import { SupermachineError } from "./errors";

const execFileP = promisify(execFile);

export interface PreparedVolume {
  hostPath: string;
  guestPath: string;
  sizeMib: number;
  /** True when this call created or formatted the file. */
  formatted: boolean;
}

async function isBlank(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    for (let i = 0; i < bytesRead; i++) if (buf[i] !== 0) return false;
    return true;
  } finally {
    await fh.close();
  }
}

/** mke2fs binary: PATH, then the usual sbin locations (non-root shells often lack /sbin in PATH). */
export const MKE2FS_CANDIDATES = [
  "mke2fs",
  "/usr/sbin/mke2fs",
  "/sbin/mke2fs",
  "/opt/homebrew/opt/e2fsprogs/sbin/mke2fs",
  "/usr/local/opt/e2fsprogs/sbin/mke2fs",
];

async function runMke2fs(path: string): Promise<void> {
  let lastErr: unknown;
  for (const bin of MKE2FS_CANDIDATES) {
    try {
      await execFileP(bin, ["-q", "-t", "ext4", "-F", "-E", "root_owner=0:0", path], { timeout: 120_000 });
      return;
    } catch (err) {
      lastErr = err;
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") break;
    }
  }
  const missing = (lastErr as NodeJS.ErrnoException)?.code === "ENOENT";
  throw new SupermachineError(
    missing ? "SM_DEPENDENCY_MISSING" : "SM_VOLUME_INVALID",
    missing
      ? `Formatting volume ${path} needs mke2fs: install e2fsprogs (apt-get install e2fsprogs / brew install e2fsprogs).`
      : `mke2fs failed on volume ${path}: ${(lastErr as Error)?.message}`,
    { cause: lastErr, details: { hostPath: path } },
  );
}

/**
 * Create the volume file (sparse) if missing; with `format: "ext4"` also format it when blank. Existing
 * non-blank files are used as they are.
 */
export async function prepareVolume(spec: {
  hostPath: string;
  guestPath: string;
  sizeMib: number;
  format?: "none" | "ext4";
}): Promise<PreparedVolume> {
  const hostPath = resolve(spec.hostPath);
  let formatted = false;
  let st: Awaited<ReturnType<typeof stat>> | undefined;
  try {
    st = await stat(hostPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new SupermachineError(
        "SM_VOLUME_INVALID",
        `Cannot use volume ${hostPath}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  if (st && !st.isFile()) {
    throw new SupermachineError("SM_VOLUME_INVALID", `Volume ${hostPath} is not a regular file.`, {
      details: { hostPath },
    });
  }
  if (!st) {
    try {
      await mkdir(dirname(hostPath), { recursive: true });
      const fh = await open(hostPath, "wx", 0o600);
      try {
        await fh.truncate(spec.sizeMib * 1024 * 1024); // sparse: no blocks allocated
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new SupermachineError(
          "SM_VOLUME_INVALID",
          `Cannot create volume ${hostPath}: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  } else if (st.size === 0) {
    const fh = await open(hostPath, "r+");
    try {
      await fh.truncate(spec.sizeMib * 1024 * 1024);
    } finally {
      await fh.close();
    }
  }
  if (spec.format === "ext4" && (await isBlank(hostPath))) {
    await runMke2fs(hostPath);
    formatted = true;
  }
  return { hostPath, guestPath: spec.guestPath, sizeMib: spec.sizeMib, formatted };
}

/**
 * QEMU refusing a volume file because another VMM holds its lock (another process's pool or bake) →
 * SM_VOLUME_SHARED naming the files; undefined for any other error.
 */
export function volumeLockError(err: unknown, hostPaths: string[]): SupermachineError | undefined {
  const text = `${(err as Error)?.message ?? ""} ${JSON.stringify((err as { details?: unknown })?.details ?? "")}`;
  if (hostPaths.length === 0 || !/Failed to get \\?"[a-z ]+\\?" lock/.test(text)) return undefined;
  return new SupermachineError(
    "SM_VOLUME_SHARED",
    `A volume file (${hostPaths.join(", ")}) is in use by another VM (another pool or process holds its lock), and two guests on one filesystem corrupt it. Stop that VM first, or declare the volume \`readOnly: true\` everywhere it is used.`,
    { cause: err, details: { volumes: hostPaths } },
  );
}
