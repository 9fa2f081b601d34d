/**
 * Volumes: sparse host files, formatted ext4 on the host on first use.
 *
 * Decision: format on the HOST with `mke2fs -t ext4 -F -E root_owner=0:0` when the file is blank (all
 * zero in its first 64 KiB), not in the guest: it keeps the guest agent free of mkfs code, works for
 * images without e2fsprogs, and happens once before the VM starts. The root directory of a fresh
 * volume is owned by root (uid 0) in the guest.
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

/** Create (sparse) and format a volume file if needed. Existing non-blank files are used as they are. */
export async function prepareVolume(spec: {
  hostPath: string;
  guestPath: string;
  sizeMib: number;
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
  if (await isBlank(hostPath)) {
    await runMke2fs(hostPath);
    formatted = true;
  }
  return { hostPath, guestPath: spec.guestPath, sizeMib: spec.sizeMib, formatted };
}
