/**
 * Host locations used by core: default snapshots dir, per-VM runtime dirs. The cache root and the host
 * architecture have one home, @supermachine/hypervisor (the lowest package that needs them); core re-uses it.
 */
import { existsSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { type GuestArch, hostArch as hypervisorHostArch } from "@supermachine/hypervisor";

/** `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` (an empty XDG_CACHE_HOME counts as unset). */
export { cacheRoot } from "@supermachine/hypervisor";

/** Default snapshots directory: `~/.local/supermachine-snapshots` (or SUPERMACHINE_SNAPSHOTS_DIR). */
export function defaultSnapshotsDir(): string {
  const env = process.env.SUPERMACHINE_SNAPSHOTS_DIR;
  return env && env.length > 0 ? env : join(homedir(), ".local", "supermachine-snapshots");
}

/** Root of per-VM runtime dirs: `/dev/shm/supermachine` when /dev/shm exists, else the OS temp dir. */
export function runtimeRoot(): string {
  if (process.env.SUPERMACHINE_RUNTIME_DIR) return process.env.SUPERMACHINE_RUNTIME_DIR;
  return existsSync("/dev/shm") ? "/dev/shm/supermachine" : join(tmpdir(), "supermachine");
}

/** Host architecture in kernel naming; a host that is neither x64 nor arm64 is treated as x86_64. */
export function hostArch(): GuestArch {
  return hypervisorHostArch() ?? "x86_64";
}
