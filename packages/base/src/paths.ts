import { homedir } from "node:os";
import { join } from "node:path";

/**
 * `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` (an empty XDG_CACHE_HOME counts as unset): the one cache
 * root of all supermachine packages; each keeps its own subdirectory (`oci`, `kernels`, `agent`...).
 */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.length > 0 ? env.XDG_CACHE_HOME : join(homedir(), ".cache");
  return join(base, "supermachine");
}

/** Guest architecture names used throughout supermachine (kernel naming). */
export type GuestArch = "x86_64" | "aarch64";

/** The host architecture in supermachine naming; undefined on a host that is neither x64 nor arm64. */
export function hostArch(): GuestArch | undefined {
  if (process.arch === "x64") return "x86_64";
  if (process.arch === "arm64") return "aarch64";
  return undefined;
}
