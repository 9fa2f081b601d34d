/**
 * vm.snapshot(destDir): capture a running VM of a pool into a new snapshot directory next to its
 * image's files (rootfs and initramfs hard-linked or copied), with a derived fingerprint.
 */
import { createHash, randomBytes } from "node:crypto";
import { copyFile, link, mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SupermachineError } from "./errors";
import type { Image, MakeImage } from "./image";
import { noSpaceError, snapshotSpaceHint } from "./no-space";
import {
  INITRAMFS_FILE,
  makeTempSnapshotDir,
  publishSnapshot,
  ROOTFS_FILE,
  removeTempSnapshotDir,
  type SnapshotMetadata,
  VM_DIR,
} from "./snapshot";
import type { VmHandle } from "./vm-handle";

/** Hard-link (same filesystem) or copy a file. */
async function linkOrCopy(src: string, dst: string): Promise<void> {
  try {
    await link(src, dst);
  } catch {
    await copyFile(src, dst);
  }
}

/** vm.snapshot(destDir): capture a running VM into a new snapshot directory and return its Image. */
export async function snapshotVm(
  image: Image,
  handle: VmHandle,
  destDir: string,
  make: MakeImage,
): Promise<Image> {
  if (image.meta.volumes.length > 0) {
    throw new SupermachineError(
      "SM_UNSUPPORTED",
      "vm.snapshot() of a VM with volumes is not supported: the snapshot would capture a mounted filesystem whose host file keeps changing.",
    );
  }
  const finalDir = resolve(destDir);
  const parent = resolve(finalDir, "..");
  await mkdir(parent, { recursive: true });
  const name = finalDir.slice(parent.length + 1) || "snapshot";
  const tmp = await makeTempSnapshotDir(parent, name.replace(/[^A-Za-z0-9._-]/g, "_"));
  try {
    await linkOrCopy(join(image.dir, ROOTFS_FILE), join(tmp, ROOTFS_FILE));
    await linkOrCopy(join(image.dir, INITRAMFS_FILE), join(tmp, INITRAMFS_FILE));
    // A snapshot must never hold a live FUSE connection: detach the shares around the capture.
    await handle.detachMounts();
    let backendState: Record<string, unknown>;
    try {
      backendState = await handle.live.snapshot(join(tmp, VM_DIR));
    } finally {
      await handle.attachMounts();
    }
    const fp = createHash("sha256")
      .update(`${image.meta.fingerprint}:${Date.now()}:${randomBytes(8).toString("hex")}`)
      .digest("hex");
    const meta: Omit<SnapshotMetadata, "files"> = {
      ...image.meta,
      name,
      fingerprint: fp,
      inputs: { ...image.meta.inputs, derivedFrom: image.meta.fingerprint },
      // A VM of a pool with a memoryMib/vcpus override carries those limits into its snapshot.
      ...(handle.limits
        ? {
            memoryMib: handle.limits.limits.memoryMib,
            vcpus: handle.limits.limits.vcpus,
            maxMemoryMib: image.meta.maxMemoryMib ?? image.meta.memoryMib,
            maxVcpus: image.meta.maxVcpus ?? image.meta.vcpus,
          }
        : {}),
      createdAt: new Date().toISOString(),
      backendState,
    };
    const full = await publishSnapshot(
      tmp,
      finalDir,
      meta,
      "Pass another destination directory to vm.snapshot(), or move that directory away.",
    );
    return make(finalDir, full);
  } catch (err) {
    await removeTempSnapshotDir(tmp);
    throw (
      (await noSpaceError(err, `vm.snapshot(${destDir})`, parent, snapshotSpaceHint(image.memoryMib))) ?? err
    );
  }
}
