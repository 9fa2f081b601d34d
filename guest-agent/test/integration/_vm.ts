/** What the guest-agent VM tests share: the base module set and the probe that decides whether they can run. */
import { existsSync } from "node:fs";
import { findExecutable, listCachedBundles } from "@supermachine/hypervisor";

/** Kernel modules every test VM needs (dependencies such as virtio_ring are resolved by buildInitramfs). */
export const BASE_MODULES: readonly string[] = [
  "virtio_mmio",
  "virtio_blk",
  "virtio_console",
  "virtio-rng",
  "squashfs",
  "overlay",
];

/** Why the VM tests cannot run here (a real probe), or undefined when they can. */
export function vmSkipReason(): string | undefined {
  if (!findExecutable("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed";
  if (listCachedBundles("x86_64").length === 0) return "no x86_64 kernel bundle (npm run setup)";
  if (!findExecutable("musl-gcc")) return "musl-gcc is not installed (needed to build the agent)";
  if (!findExecutable("mksquashfs")) return "mksquashfs is not installed";
  if (!existsSync("/bin/busybox")) return "busybox-static is not installed";
  return undefined;
}
