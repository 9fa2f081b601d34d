import { homedir } from "node:os";
import { join } from "node:path";

/** `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` — shared cache root of all supermachine packages. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.length > 0 ? env.XDG_CACHE_HOME : join(homedir(), ".cache");
  return join(base, "supermachine");
}

/** Guest architecture names used throughout supermachine. */
export type GuestArch = "x86_64" | "aarch64";

/** Host architecture in supermachine naming. */
export function hostArch(): GuestArch | undefined {
  if (process.arch === "x64") return "x86_64";
  if (process.arch === "arm64") return "aarch64";
  return undefined;
}
