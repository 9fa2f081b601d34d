/**
 * The installed guest bundle package (@supermachine/guest-x86_64 / -aarch64): the static guest agent and
 * the kernel bundle, found through normal package resolution from this package. npm installs only the one
 * whose `cpu` matches the host (both are optional dependencies of core).
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { cacheRoot } from "./paths";

export type GuestArch = "x86_64" | "aarch64";

export const guestPackageName = (arch: GuestArch): string => `@supermachine/guest-${arch}`;

export interface GuestPackage {
  name: string;
  version: string;
  /** The package's root directory. */
  root: string;
  /** bundle/ (manifest.json, sm-agent, kernel/). */
  bundleDir: string;
  /** Kernel bundle dir (bundle.json, vmlinuz, modules/). */
  kernelDir: string;
  agentPath: string;
  manifestPath: string;
  /** Files of the bundle that are missing (an installed package without its bundle is unusable). */
  missing: string[];
}

/**
 * The guest package for `arch` as resolved from `from` (default: this module), or undefined when it is not
 * installed. A package that resolves but lacks its bundle files is returned with `missing` filled.
 */
export function findGuestPackage(arch: GuestArch, from: string = moduleUrl()): GuestPackage | undefined {
  let pkgJson: string;
  try {
    pkgJson = createRequire(from).resolve(`${guestPackageName(arch)}/package.json`);
  } catch {
    return undefined;
  }
  const root = dirname(pkgJson);
  let version = "unknown";
  try {
    version = String(JSON.parse(readFileSync(pkgJson, "utf8")).version ?? "unknown");
  } catch {
    /* reported through `missing` below if the bundle is broken too */
  }
  const bundleDir = join(root, "bundle");
  const kernelDir = join(bundleDir, "kernel");
  const agentPath = join(bundleDir, "sm-agent");
  const manifestPath = join(bundleDir, "manifest.json");
  const missing = [
    manifestPath,
    agentPath,
    join(kernelDir, "bundle.json"),
    join(kernelDir, "vmlinuz"),
  ].filter((p) => !existsSync(p));
  return {
    name: guestPackageName(arch),
    version,
    root,
    bundleDir,
    kernelDir,
    agentPath,
    manifestPath,
    missing,
  };
}

/** The usable guest package (all bundle files present), else undefined. */
export function usableGuestPackage(arch: GuestArch, from?: string): GuestPackage | undefined {
  const p = findGuestPackage(arch, from);
  return p && p.missing.length === 0 ? p : undefined;
}

function moduleUrl(): string {
  // ESM build: import.meta.url; a CommonJS build provides __filename instead.
  if (typeof __filename === "string" && __filename) return __filename;
  return import.meta.url;
}

/**
 * The kernel bundle dir to use, in order: explicit `kernelDir` → SUPERMACHINE_KERNEL_DIR (undefined here:
 * @supermachine/hypervisor's resolveKernelBundle reads it) → the installed guest package → undefined (the
 * kernel cache that a checkout's `npm run setup` fills).
 */
export function kernelDirFor(kernelDir: string | undefined, arch: GuestArch): string | undefined {
  if (kernelDir) return kernelDir;
  if (process.env.SUPERMACHINE_KERNEL_DIR) return undefined;
  return usableGuestPackage(arch)?.kernelDir;
}

/**
 * Where the guest agent binary is looked up, in order: SUPERMACHINE_AGENT → the installed guest package →
 * a monorepo checkout's guest-agent/out/<arch>/sm-agent → CACHE/agent/<arch>/sm-agent.
 */
export function agentCandidates(arch: string): string[] {
  const out: string[] = [];
  if (process.env.SUPERMACHINE_AGENT) out.push(resolve(process.env.SUPERMACHINE_AGENT));
  if (arch === "x86_64" || arch === "aarch64") {
    const pkg = usableGuestPackage(arch);
    if (pkg) out.push(pkg.agentPath);
  }
  // Monorepo checkout: packages/core/{src,dist}/ → ../../../guest-agent/out/<arch>/sm-agent
  const here = dirname(moduleFile());
  out.push(resolve(here, "..", "..", "..", "guest-agent", "out", arch, "sm-agent"));
  out.push(join(cacheRoot(), "agent", arch, "sm-agent"));
  return out;
}

function moduleFile(): string {
  const u = moduleUrl();
  return u.startsWith("file:") ? fileURLToPath(u) : u;
}
