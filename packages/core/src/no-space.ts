/**
 * SM_NO_SPACE: a disk-full failure while a snapshot or a pull was written, with the directory, its free
 * space and what to do (bakes, vm.snapshot()).
 */
import { statfs } from "node:fs/promises";
import { diskFullErrno, SupermachineError } from "./errors";

/**
 * A disk-full failure while a snapshot was written, as SM_NO_SPACE naming the directory, its free space
 * and what to do; undefined for any other error. Called after the partial files are removed.
 */
export async function noSpaceError(
  err: unknown,
  what: string,
  dir: string,
  hint: string,
  step?: string,
): Promise<SupermachineError | undefined> {
  const errno = diskFullErrno(err);
  if (!errno) return undefined;
  let freeMib: number | undefined;
  let totalMib: number | undefined;
  try {
    const fs = await statfs(dir);
    freeMib = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
    totalMib = Math.floor((fs.blocks * fs.bsize) / 2 ** 20);
  } catch {
    /* the directory itself may be gone */
  }
  const room = freeMib === undefined ? "" : ` It has ${freeMib} MiB free of ${totalMib} MiB.`;
  return new SupermachineError(
    "SM_NO_SPACE",
    `${what}: no space left on the filesystem of ${dir} (${errno}); nothing partial was kept.${room} ${hint}`,
    { cause: err, details: { errno, dir, freeMib, ...(step ? { step } : {}) } },
  );
}

export function snapshotSpaceHint(memoryMib: number): string {
  return `A snapshot needs up to ~${memoryMib} MiB for the guest memory plus the root filesystem: free space there, or put \`snapshotsDir\` (or the vm.snapshot destination) on a larger filesystem.`;
}
