/** Host locations used by core: cache root, default snapshots dir, per-VM runtime dirs. */
import { existsSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

/** `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` — shared with the other packages. */
export function cacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.length > 0 ? xdg : join(homedir(), ".cache"), "supermachine");
}

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

/** Host architecture in kernel naming (x86_64 | aarch64). */
export function hostArch(): "x86_64" | "aarch64" {
  return process.arch === "arm64" ? "aarch64" : "x86_64";
}
