// Kernel bundles: the distribution cloud kernel per arch, unpacked into CACHE/kernels/<release>-<arch>/.
// Layout (contract with @supermachine/hypervisor): bundle.json, vmlinuz, modules/ (= lib/modules/<release>/
// including modules.dep).
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { aptCache, aptListsChanged, aptUpdate } from "./system.mjs";
import {
  cacheDir,
  cleanStaleTemps,
  isRoot,
  note,
  REPO_ROOT,
  readJson,
  replaceDir,
  run,
  SetupError,
  say,
  tempName,
  which,
  writeJsonAtomic,
} from "./util.mjs";

export const ARCHES = {
  x86_64: { deb: "amd64", meta: "linux-image-cloud-amd64" },
  aarch64: { deb: "arm64", meta: "linux-image-cloud-arm64" },
};

export const kernelsDir = () => join(cacheDir(), "kernels");

/** Why a bundle dir is not usable, or null when it is complete. */
export function bundleProblem(dir, expect = {}) {
  const b = readJson(join(dir, "bundle.json"));
  if (!b || typeof b !== "object") return "bundle.json missing or not valid JSON";
  for (const k of ["release", "arch", "package", "debVersion", "kernel"]) {
    if (typeof b[k] !== "string" || !b[k]) return `bundle.json field ${k} missing`;
    if (expect[k] !== undefined && b[k] !== expect[k])
      return `bundle.json ${k}=${b[k]}, expected ${expect[k]}`;
  }
  try {
    if (statSync(join(dir, b.kernel)).size < 1024 * 1024) return `${b.kernel} too small`;
  } catch {
    return `${b.kernel} missing`;
  }
  if (!existsSync(join(dir, "modules", "modules.dep"))) return "modules/modules.dep missing";
  return null;
}

/** Valid bundles present for an arch, newest release first. */
export function existingBundles(arch) {
  const dir = kernelsDir();
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => n.endsWith(`-${arch}`) && !n.startsWith("."))
    .map((n) => join(dir, n))
    .filter((d) => bundleProblem(d, { arch }) === null)
    .sort((a, b) => b.localeCompare(a, "en", { numeric: true })); // 6.1.0-100 after 6.1.0-56
}

async function foreignArchAdded(debArch) {
  const r = await run("dpkg", ["--print-foreign-architectures"]);
  return r.stdout.split(/\s+/).includes(debArch);
}

async function resolvePackage(arch) {
  const { deb, meta } = ARCHES[arch];
  const suffix = arch === "x86_64" ? "" : `:${deb}`;
  const tryResolve = async () => {
    const m = /Depends:\s*(linux-image-[^\s:]+)/.exec(await aptCache(["depends", `${meta}${suffix}`]));
    if (!m) return null;
    const pkg = m[1];
    const v = /Candidate:\s*(\S+)/.exec(await aptCache(["policy", `${pkg}${suffix}`]))?.[1];
    if (!v || v === "(none)") return null;
    return { pkg, debVersion: v, release: pkg.replace(/^linux-image-/, ""), aptName: `${pkg}${suffix}` };
  };
  let res = await tryResolve();
  if (!res && isRoot()) {
    await aptUpdate();
    res = await tryResolve();
  }
  return res;
}

/** Ensure the arm64 dpkg architecture (root only); returns false when it cannot be added. */
async function ensureForeignArch(debArch) {
  if (debArch === "amd64" || (await foreignArchAdded(debArch))) return true;
  if (!isRoot()) return false;
  say(`dpkg --add-architecture ${debArch}`);
  await run("dpkg", ["--add-architecture", debArch]);
  aptListsChanged(); // the lists fetched before know nothing of the new architecture
  await aptUpdate();
  return true;
}

/** Download + unpack one .deb (`apt-get download` into dir). Returns the extraction root. */
export async function downloadDeb(aptName, dir) {
  mkdirSync(dir, { recursive: true });
  const args = ["download", "-q", "-o", "APT::Sandbox::User=root", aptName];
  let r = await run("apt-get", args, { cwd: dir, allowFail: true });
  if (r.code !== 0 && isRoot()) {
    await aptUpdate(); // stale lists → 404
    r = await run("apt-get", args, { cwd: dir });
  } else if (r.code !== 0) {
    throw new SetupError(`apt-get download ${aptName} failed:\n${r.stderr.trim()}`);
  }
  const debs = readdirSync(dir).filter((n) => n.endsWith(".deb"));
  if (debs.length !== 1) throw new SetupError(`apt-get download ${aptName}: expected one .deb in ${dir}`);
  const x = join(dir, "x");
  await run("dpkg-deb", ["-x", join(dir, debs[0]), x]);
  return x;
}

async function buildBundle(arch, info, target) {
  const tmp = join(kernelsDir(), tempName(`${info.release}-${arch}`));
  rmSync(tmp, { recursive: true, force: true });
  const dl = join(tmp, "dl");
  say(`kernel ${arch}: downloading ${info.pkg} ${info.debVersion}`);
  const x = await downloadDeb(info.aptName, dl);
  const modSrc = existsSync(join(x, "lib/modules", info.release))
    ? join(x, "lib/modules", info.release)
    : join(x, "usr/lib/modules", info.release);
  const kernelSrc = [
    join(x, "boot", `vmlinuz-${info.release}`),
    join(x, "boot", `vmlinux-${info.release}`),
  ].find((p) => existsSync(p));
  if (!kernelSrc || !existsSync(modSrc))
    throw new SetupError(`${info.pkg}: no kernel or modules in the package`);
  // Debian generates modules.dep in postinst; we run depmod ourselves against the unpacked tree.
  await run(which("depmod") ?? "depmod", [
    "-b",
    modSrc.includes("/usr/lib/") ? join(x, "usr") : x,
    info.release,
  ]);
  const bundle = join(tmp, "bundle");
  mkdirSync(bundle);
  copyFileSync(kernelSrc, join(bundle, "vmlinuz"));
  renameSync(modSrc, join(bundle, "modules"));
  writeJsonAtomic(join(bundle, "bundle.json"), {
    release: info.release,
    arch,
    package: info.pkg,
    debVersion: info.debVersion,
    kernel: "vmlinuz",
  });
  const problem = bundleProblem(bundle, { arch, release: info.release });
  if (problem) throw new SetupError(`kernel bundle for ${arch} failed verification: ${problem}`);
  replaceDir(bundle, target);
  rmSync(tmp, { recursive: true, force: true });
  say(`kernel ${arch}: ${target}`);
}

/** Ask @supermachine/hypervisor (if built) to derive vmlinux from the bzImage now instead of lazily. */
async function deriveVmlinux(dir) {
  const dist = join(REPO_ROOT, "packages/hypervisor/dist/index.js");
  if (!existsSync(dist) || existsSync(join(dir, "vmlinux"))) return null;
  try {
    const mod = await import(pathToFileURL(dist).href);
    const fn = mod.ensureVmlinux;
    if (typeof fn !== "function")
      return "hypervisor package does not export ensureVmlinux yet (done lazily on first boot)";
    say("kernel x86_64: deriving vmlinux via @supermachine/hypervisor");
    const kernel = readJson(join(dir, "bundle.json"))?.kernel ?? "vmlinuz";
    await fn(join(dir, kernel)); // ensureVmlinux(kernelPath) → writes <dir>/vmlinux (temp + rename)
    if (!existsSync(join(dir, "vmlinux"))) return "ensureVmlinux did not write vmlinux next to the kernel";
    return null;
  } catch (e) {
    return `vmlinux derivation failed (${e.message}); the hypervisor does it lazily on first boot`;
  }
}

/**
 * Keep the 2 newest bundles per arch, through @supermachine/hypervisor (if built), which warns before
 * evicting. Without the built package nothing is evicted (the hypervisor prunes on its own use).
 */
async function pruneOldBundles(arch) {
  const dist = join(REPO_ROOT, "packages/hypervisor/dist/index.js");
  if (!existsSync(dist)) return null;
  try {
    const mod = await import(pathToFileURL(dist).href);
    if (typeof mod.pruneKernelCache !== "function") return null;
    mod.pruneKernelCache({ arch, cacheDir: join(kernelsDir(), ".."), warn: (m) => say(m) });
    return null;
  } catch (e) {
    return `kernel ${arch}: cache pruning skipped (${e.message})`;
  }
}

/**
 * Ensure a kernel bundle per arch. Returns { arch: dir } and notes.
 * Offline / no apt metadata: an existing valid bundle is used.
 */
export async function ensureKernels() {
  mkdirSync(kernelsDir(), { recursive: true });
  cleanStaleTemps(kernelsDir());
  const result = {};
  const notes = [];
  for (const arch of Object.keys(ARCHES)) {
    const { deb } = ARCHES[arch];
    if (!(await ensureForeignArch(deb))) {
      const have = existingBundles(arch)[0];
      if (have) {
        result[arch] = have;
        continue;
      }
      const err = new SetupError(
        `the ${arch} kernel needs the ${deb} dpkg architecture. Run:\n  sudo dpkg --add-architecture ${deb} && sudo apt-get update\nthen run setup again.`,
      );
      err.exitCode = 2;
      throw err;
    }
    const info = await resolvePackage(arch);
    if (!info) {
      const have = existingBundles(arch)[0];
      if (have) {
        notes.push(`kernel ${arch}: apt metadata unavailable, using ${have}`);
        result[arch] = have;
        continue;
      }
      throw new SetupError(
        `cannot resolve ${ARCHES[arch].meta} through apt-cache (is the Debian archive reachable?)`,
      );
    }
    const target = join(kernelsDir(), `${info.release}-${arch}`);
    const problem = bundleProblem(target, { arch, release: info.release, debVersion: info.debVersion });
    if (problem) {
      if (existsSync(target))
        note(`kernel ${arch}: ${target} is not a complete bundle (${problem}); rebuilding`);
      await buildBundle(arch, info, target);
    }
    result[arch] = target;
    if (arch === "x86_64") {
      const n = await deriveVmlinux(target);
      if (n) notes.push(n);
    }
    const p = await pruneOldBundles(arch);
    if (p) notes.push(p);
  }
  return { bundles: result, notes };
}
