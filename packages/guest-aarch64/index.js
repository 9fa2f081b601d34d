// Paths of the aarch64 guest bundle (built at pack time by scripts/guest-bundle.mjs). ESM entry; index.cjs is
// the same for require().
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const arch = "aarch64";
export const bundleDir = join(dirname(fileURLToPath(import.meta.url)), "bundle");
export const kernelDir = join(bundleDir, "kernel");
export const kernelImage = join(kernelDir, "vmlinuz");
export const agentPath = join(bundleDir, "sm-agent");
export const manifestPath = join(bundleDir, "manifest.json");

/** True when the bundle files are present (a checkout that never ran `npm run bundle` has none). */
export function isBuilt() {
  return existsSync(manifestPath) && existsSync(agentPath) && existsSync(kernelImage);
}

/** The bundle's manifest (kernel package and version, where its source is, sha256 of every file). */
export function readManifest() {
  return JSON.parse(readFileSync(manifestPath, "utf8"));
}
