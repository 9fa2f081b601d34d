/**
 * Host locations used by core: default snapshots dir, per-VM runtime dirs. The cache root and the host
 * architecture have one home, @supermachine/base; the runtime root's default is the hypervisor driver's.
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { hostArch as baseHostArch, type GuestArch } from "@supermachine/base";
import { defaultRuntimeRoot } from "@supermachine/hypervisor";

/** `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` (an empty XDG_CACHE_HOME counts as unset). */
export { cacheRoot } from "@supermachine/base";

/** Default snapshots directory: `~/.local/supermachine-snapshots` (or SUPERMACHINE_SNAPSHOTS_DIR). */
export function defaultSnapshotsDir(): string {
  const env = process.env.SUPERMACHINE_SNAPSHOTS_DIR;
  return env && env.length > 0 ? env : join(homedir(), ".local", "supermachine-snapshots");
}

/**
 * Root of per-VM runtime dirs: SUPERMACHINE_RUNTIME_DIR when set (core passes it to the backend), else the
 * hypervisor driver's default (`/dev/shm/supermachine` when /dev/shm is a writable directory, else the OS
 * temp dir).
 */
export function runtimeRoot(): string {
  return process.env.SUPERMACHINE_RUNTIME_DIR || defaultRuntimeRoot();
}

/** Host architecture in kernel naming; a host that is neither x64 nor arm64 is treated as x86_64. */
export function hostArch(): GuestArch {
  return baseHostArch() ?? "x86_64";
}
