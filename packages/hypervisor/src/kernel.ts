/**
 * Kernel bundles: `CACHE/kernels/<release>-<arch>/{bundle.json, vmlinuz, modules/}` (written by
 * `npx supermachine setup` or a guest bundle package). Resolution order: explicit path → SUPERMACHINE_KERNEL_DIR → cache (newest bundle for the arch).
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { cacheRoot, type GuestArch } from "@supermachine/base";
import { HypervisorError } from "./errors";

export interface KernelBundle {
  /** Bundle directory (holds bundle.json when it came from setup). */
  dir: string;
  /** Kernel release, e.g. "6.1.0-56-cloud-amd64". */
  release: string;
  arch: GuestArch;
  /** Debian package name and version when known. */
  package?: string;
  debVersion?: string;
  /** The kernel file as shipped (x86_64 bzImage / arm64 Image). */
  kernelPath: string;
  /** `lib/modules/<release>/` tree (modules.order, modules.dep if present, kernel/...). */
  modulesDir: string;
}

export interface ResolveKernelOptions {
  arch: GuestArch;
  /** Explicit bundle dir or kernel file (highest priority). */
  path?: string;
  env?: NodeJS.ProcessEnv;
  /** Cache root override (default: cacheRoot()). */
  cacheDir?: string;
}

/** What a user of the published packages does about a missing kernel (no repository-only command). */
const PROVISION_HINT =
  "Run `npx supermachine setup` (installs or names the guest bundle package with the distribution cloud kernel), set SUPERMACHINE_KERNEL_DIR to a kernel bundle directory, or pass an explicit kernel path.";

function notFound(msg: string, details: Record<string, unknown> = {}): HypervisorError {
  return new HypervisorError("SM_KERNEL_NOT_FOUND", `${msg}. ${PROVISION_HINT}`, { details });
}

/**
 * Read bundle.json. Tolerates a file holding several JSON lines (takes the first complete record for the arch).
 */
export function readBundleJson(dir: string, arch?: GuestArch): Record<string, string> | undefined {
  const file = join(dir, "bundle.json");
  if (!existsSync(file)) return undefined;
  const text = readFileSync(file, "utf8");
  const candidates: unknown[] = [];
  try {
    candidates.push(JSON.parse(text));
  } catch {
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        candidates.push(JSON.parse(line));
      } catch {}
    }
  }
  for (const c of candidates) {
    if (typeof c !== "object" || c === null) continue;
    const r = c as Record<string, unknown>;
    if (typeof r.release !== "string" || !r.release) continue;
    if (typeof r.arch !== "string" || (r.arch !== "x86_64" && r.arch !== "aarch64")) continue;
    if (arch && r.arch !== arch) continue;
    return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, String(v)]));
  }
  return undefined;
}

function bundleFromDir(dir: string, arch: GuestArch): KernelBundle | undefined {
  const meta = readBundleJson(dir, arch);
  if (!meta) return undefined;
  const kernelPath = join(dir, meta.kernel || "vmlinuz");
  if (!existsSync(kernelPath)) return undefined;
  return {
    dir,
    release: meta.release as string,
    arch,
    package: meta.package,
    debVersion: meta.debVersion,
    kernelPath,
    modulesDir: join(dir, "modules"),
  };
}

/** Compare Debian-ish version strings (numeric runs compared as numbers). */
export function compareVersions(a: string, b: string): number {
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
    } else if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** All valid bundles for `arch` under `CACHE/kernels`, newest first. */
export function listCachedBundles(arch: GuestArch, cacheDir = cacheRoot()): KernelBundle[] {
  const root = join(cacheDir, "kernels");
  if (!existsSync(root)) return [];
  const out: KernelBundle[] = [];
  for (const name of readdirSync(root)) {
    const b = bundleFromDir(join(root, name), arch);
    if (b) out.push(b);
  }
  return out.sort(
    (x, y) =>
      compareVersions(y.release, x.release) ||
      compareVersions(y.debVersion ?? "", x.debVersion ?? "") ||
      statSync(y.dir).mtimeMs - statSync(x.dir).mtimeMs,
  );
}

/** Resolve the kernel bundle for `arch`: explicit path → SUPERMACHINE_KERNEL_DIR → cache. */
export function resolveKernelBundle(opts: ResolveKernelOptions): KernelBundle {
  const env = opts.env ?? process.env;
  const { arch } = opts;
  if (opts.path) {
    const p = resolve(opts.path);
    if (!existsSync(p)) throw notFound(`kernel path ${p} does not exist`, { path: p });
    if (statSync(p).isDirectory()) {
      const b = bundleFromDir(p, arch);
      if (b) return b;
      for (const k of ["vmlinuz", "Image", "vmlinux"]) {
        if (existsSync(join(p, k))) return looseBundle(join(p, k), arch);
      }
      throw notFound(`${p} holds no ${arch} kernel bundle (bundle.json + vmlinuz)`, { path: p });
    }
    return looseBundle(p, arch);
  }
  const envDir = env.SUPERMACHINE_KERNEL_DIR;
  if (envDir) {
    const p = resolve(envDir);
    const b = existsSync(p) ? bundleFromDir(p, arch) : undefined;
    if (b) return b;
    if (existsSync(p) && statSync(p).isDirectory()) {
      const nested = readdirSync(p)
        .map((n) => bundleFromDir(join(p, n), arch))
        .filter((x): x is KernelBundle => !!x)
        .sort((x, y) => compareVersions(y.release, x.release));
      if (nested[0]) return nested[0];
    }
    throw notFound(`SUPERMACHINE_KERNEL_DIR=${envDir} holds no ${arch} kernel bundle`, { path: p });
  }
  const cacheDir = opts.cacheDir ?? cacheRoot(env);
  const cached = listCachedBundles(arch, cacheDir);
  if (cached[0]) return cached[0];
  throw notFound(`no ${arch} kernel bundle in ${join(cacheDir, "kernels")}`, { cacheDir });
}

/** A kernel file given directly: modules/ next to it (if any), release from the modules dir or the file name. */
function looseBundle(kernelPath: string, arch: GuestArch): KernelBundle {
  const dir = dirname(kernelPath);
  const meta = readBundleJson(dir, arch);
  return {
    dir,
    release: meta?.release ?? basename(kernelPath),
    arch,
    package: meta?.package,
    debVersion: meta?.debVersion,
    kernelPath,
    modulesDir: join(dir, "modules"),
  };
}

export interface PruneOptions {
  arch: GuestArch;
  /** Bundles to keep per arch (default 2). */
  keep?: number;
  cacheDir?: string;
  /** Called with a message BEFORE a bundle is removed (default: process.emitWarning). */
  warn?: (message: string) => void;
}

/** Keep the `keep` newest bundles for `arch` in the cache; warn before evicting the others. Returns evicted dirs. */
export function pruneKernelCache(opts: PruneOptions): string[] {
  const keep = opts.keep ?? 2;
  const warn = opts.warn ?? ((m: string) => process.emitWarning(m, { code: "SM_KERNEL_EVICT" }));
  const bundles = listCachedBundles(opts.arch, opts.cacheDir);
  const evict = bundles.slice(keep);
  for (const b of evict) {
    warn(
      `supermachine: evicting kernel bundle ${b.release} (${b.arch}) from ${b.dir}; the cache keeps the ${keep} newest per arch. Snapshots baked with it need a re-bake or SUPERMACHINE_KERNEL_DIR.`,
    );
    rmSync(b.dir, { recursive: true, force: true });
  }
  return evict.map((b) => b.dir);
}

// ---------------------------------------------------------------- modules
// Names only: @supermachine/rootfs resolves them (with their dependencies) into the initramfs.

/** Modules a supermachine guest needs for the base device set (virtio-mmio, blk, console, rng, squashfs, overlay). */
export const BASE_GUEST_MODULES: readonly string[] = [
  "virtio_mmio",
  "virtio_blk",
  "virtio_console",
  "virtio_rng",
  "squashfs",
  "overlay",
];
/** Extra modules for `network: "nat" | "restricted"`. */
export const NET_GUEST_MODULES: readonly string[] = ["virtio_net"];
/** Extra modules for vsock where the host has /dev/vhost-vsock. */
export const VSOCK_GUEST_MODULES: readonly string[] = ["vmw_vsock_virtio_transport"];
