#!/usr/bin/env node
// Builds the guest bundle of @supermachine/guest-<arch> (run by its `prepack`):
//   packages/guest-<arch>/bundle/
//     manifest.json            arch, kernel (Debian source + binary package, version, where the GPL source is),
//                              agent, module list, sha256 of every file
//     sm-agent                 the static guest agent (make -C guest-agent ARCH=<arch>)
//     kernel/bundle.json       the kernel bundle contract of @supermachine/hypervisor
//     kernel/vmlinuz           the Debian cloud kernel image as shipped
//     kernel/modules/          only the modules the initramfs loads (+ their dependencies), modules.dep
// The kernel comes from the kernel cache that setup fills (scripts/lib/kernels.mjs); when the cache holds
// none for the arch, setup's kernel step provisions it from Debian's packages first.
//
// `cpu`: the guest packages are npm workspaces of the repo, and npm refuses to install a workspace whose `cpu`
// does not match the host (EBADPLATFORM; npm/cli#6138), so the committed package.json carries the value as
// `publishedCpu` and --prepack writes it as `cpu` for the tarball; --postpack restores the committed
// package.json byte for byte and removes bundle/ (so a checkout never resolves a stale packed agent).
// Usage: node scripts/guest-bundle.mjs x86_64|aarch64 [--out DIR] [--prepack | --postpack]
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ARCHES, ensureKernels, existingBundles } from "./lib/kernels.mjs";
import { aptCache, isStaticElf } from "./lib/system.mjs";
import { REPO_ROOT, readJson, replaceDir, run, sha256File } from "./lib/util.mjs";

/**
 * Modules the guest boot insmods: @supermachine/hypervisor's base + network lists, and "fuse" for live host
 * shares (SHARE_GUEST_MODULES in packages/core/src/runtime.ts). Dependencies are added by resolveModules.
 */
const SHARE_MODULES = ["fuse"];

function fail(msg) {
  process.stderr.write(`guest-bundle: ${msg}\n`);
  process.exit(1);
}

async function importDist(pkg) {
  const file = join(REPO_ROOT, "packages", pkg, "dist", "index.js");
  if (!existsSync(file)) fail(`${file} is missing: build first (npx lerna run build)`);
  return import(pathToFileURL(file).href);
}

/** Debian source package of a binary package (linux-signed-* for the cloud images), from apt's lists. */
async function sourceOf(pkg, version, arch) {
  const suffix = arch === "x86_64" ? "" : `:${ARCHES[arch].deb}`;
  const show = await aptCache(["show", `${pkg}${suffix}=${version}`]).catch(() => "");
  const m = /^Source:\s*(\S+)(?:\s+\((\S+)\))?/m.exec(show);
  if (m) return { name: m[1], version: m[2] ?? version };
  return { name: `linux-signed-${ARCHES[arch].deb}`, version: version.replace(/-(\d+)$/, "+$1") };
}

async function kernelSource(arch) {
  let dir = existingBundles(arch)[0];
  if (!dir) {
    process.stderr.write(
      `guest-bundle: no ${arch} kernel in the cache; provisioning it (scripts/lib/kernels.mjs)\n`,
    );
    dir = (await ensureKernels()).bundles[arch];
  }
  if (!dir) fail(`no ${arch} kernel bundle could be provisioned; run \`npm run setup\``);
  return dir;
}

async function listFiles(root, dir = root) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(root, p)));
    else out.push(relative(root, p));
  }
  return out.sort();
}

/** package.json of the guest package: the committed one is kept in .package.json.orig while packing. */
function pkgFiles(arch) {
  const dir = join(REPO_ROOT, "packages", `guest-${arch}`);
  return {
    pkg: join(dir, "package.json"),
    orig: join(dir, ".package.json.orig"),
    bundle: join(dir, "bundle"),
  };
}

function restorePackageJson(arch) {
  const f = pkgFiles(arch);
  if (existsSync(f.orig)) renameSync(f.orig, f.pkg);
}

/** Write `cpu` (from `publishedCpu`) into package.json for the tarball, keeping the committed bytes aside. */
function writePackedPackageJson(arch) {
  const f = pkgFiles(arch);
  restorePackageJson(arch); // a pack that died before its postpack
  const text = readFileSync(f.pkg, "utf8");
  const json = JSON.parse(text);
  if (!Array.isArray(json.publishedCpu)) fail(`${f.pkg} has no publishedCpu array`);
  const out = {};
  for (const [k, v] of Object.entries(json)) {
    if (k === "publishedCpu") out.cpu = v;
    else out[k] = v;
  }
  writeFileSync(f.orig, text);
  writeFileSync(`${f.pkg}.tmp`, `${JSON.stringify(out, null, 2)}\n`);
  renameSync(`${f.pkg}.tmp`, f.pkg);
}

async function main() {
  const args = process.argv.slice(2);
  const arch = args[0];
  if (!ARCHES[arch])
    fail(
      `usage: node scripts/guest-bundle.mjs x86_64|aarch64 [--out DIR] [--prepack|--postpack] (got ${arch ?? "nothing"})`,
    );
  if (args.includes("--postpack")) {
    restorePackageJson(arch);
    rmSync(pkgFiles(arch).bundle, { recursive: true, force: true });
    return;
  }
  const oi = args.indexOf("--out");
  const out = resolve(oi >= 0 ? args[oi + 1] : pkgFiles(arch).bundle);

  const hv = await importDist("hypervisor");
  const { resolveModules } = await importDist("rootfs");
  const wanted = [...hv.BASE_GUEST_MODULES, ...hv.NET_GUEST_MODULES, ...SHARE_MODULES];

  const src = await kernelSource(arch);
  const meta = readJson(join(src, "bundle.json"));
  const srcModules = join(src, "modules");

  // Agent: always rebuilt from this checkout (make is incremental).
  await run("make", ["-C", join(REPO_ROOT, "guest-agent"), `ARCH=${arch}`]);
  const agent = join(REPO_ROOT, "guest-agent", "out", arch, "sm-agent");
  if (!isStaticElf(agent)) fail(`${agent} is not a static ELF binary`);

  const tmp = join(dirname(out), `.tmp-${process.pid}-bundle`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    const kdir = join(tmp, "kernel");
    mkdirSync(join(kdir, "modules"), { recursive: true });
    copyFileSync(join(src, meta.kernel), join(kdir, "vmlinuz"));
    copyFileSync(agent, join(tmp, "sm-agent"));

    const resolved = await resolveModules(srcModules, wanted);
    const keep = new Set(resolved.map((m) => m.path));
    for (const m of resolved) {
      mkdirSync(dirname(join(kdir, "modules", m.path)), { recursive: true });
      copyFileSync(join(srcModules, m.path), join(kdir, "modules", m.path));
    }
    const dep = readFileSync(join(srcModules, "modules.dep"), "utf8")
      .split("\n")
      .filter((l) => keep.has(l.slice(0, l.indexOf(":")).trim()));
    writeFileSync(join(kdir, "modules", "modules.dep"), `${dep.join("\n")}\n`);
    // Requested modules that are built into this kernel: resolveModules skips them through modules.builtin.
    const norm = (s) =>
      s
        .replace(/^.*\//, "")
        .replace(/\.ko.*$/, "")
        .replace(/-/g, "_");
    const wantedSet = new Set(wanted.map(norm));
    const builtinFile = join(srcModules, "modules.builtin");
    const builtin = existsSync(builtinFile)
      ? readFileSync(builtinFile, "utf8")
          .split("\n")
          .filter((l) => l && wantedSet.has(norm(l)))
      : [];
    writeFileSync(join(kdir, "modules", "modules.builtin"), builtin.length ? `${builtin.join("\n")}\n` : "");
    // The trimmed tree must resolve the same set.
    const again = await resolveModules(join(kdir, "modules"), wanted);
    if (again.map((m) => m.path).join() !== resolved.map((m) => m.path).join())
      fail("the trimmed module tree does not resolve the same modules as the full one");

    writeFileSync(
      join(kdir, "bundle.json"),
      `${JSON.stringify({ release: meta.release, arch, package: meta.package, debVersion: meta.debVersion, kernel: "vmlinuz" }, null, 2)}\n`,
    );

    const source = await sourceOf(meta.package, meta.debVersion, arch);
    const files = {};
    for (const f of await listFiles(tmp)) files[f] = await sha256File(join(tmp, f));
    const manifest = {
      schema: 1,
      arch,
      kernel: {
        dir: "kernel",
        image: "kernel/vmlinuz",
        release: meta.release,
        license: "GPL-2.0-only",
        debian: {
          binaryPackage: meta.package,
          version: meta.debVersion,
          sourcePackage: source.name,
          sourceVersion: source.version,
        },
        correspondingSource: `Debian source package \`linux\`, version ${meta.debVersion} (the kernel tree that ${source.name} ${source.version} signs and packages): \`apt-get source linux=${meta.debVersion}\` on a Debian host with deb-src entries, or Debian's snapshot archive.`,
      },
      modules: resolved.map((m) => m.name),
      agent: {
        file: "sm-agent",
        license: "Apache-2.0",
        source: "guest-agent/ of the supermachine repository (make -C guest-agent ARCH=...)",
      },
      files,
    };
    writeFileSync(join(tmp, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    replaceDir(tmp, out);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  let bytes = 0;
  for (const f of await listFiles(out)) bytes += statSync(join(out, f)).size;
  if (args.includes("--prepack")) writePackedPackageJson(arch);
  process.stderr.write(
    `guest-bundle: ${out}: kernel ${meta.release} (${meta.package} ${meta.debVersion}), ${wanted.length} modules requested, ${(bytes / 1048576).toFixed(1)} MiB\n`,
  );
}

main().catch((err) => fail(err?.stack ?? String(err)));
