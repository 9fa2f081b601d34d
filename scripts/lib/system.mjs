// System packages: check for the binaries we need; install them through apt when root, else print the
// exact command and fail without touching anything.
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { cacheDir, isRoot, readJson, run, SetupError, say, which, writeJsonAtomic } from "./util.mjs";

/** binary → Debian package providing it. Order = install line order. */
export const REQUIRED = [
  ["qemu-system-x86_64", "qemu-system-x86"],
  ["qemu-system-aarch64", "qemu-system-arm"],
  ["docker-registry", "docker-registry"],
  ["skopeo", "skopeo"],
  ["sqfs2tar", "squashfs-tools-ng"],
  ["mksquashfs", "squashfs-tools"],
  ["musl-gcc", "musl-tools"],
  ["aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"],
  ["cpio", "cpio"],
  ["mke2fs", "e2fsprogs"],
  ["busybox", "busybox-static"], // must be the static build (checked below)
  ["debootstrap", "debootstrap"],
  ["umoci", "umoci"],
  ["lz4", "lz4"],
  ["zstd", "zstd"],
  ["htpasswd", "apache2-utils"],
  ["setpriv", "util-linux"],
  ["make", "make"],
  ["depmod", "kmod"], // modules.dep for the kernel bundles (Debian ships it only via postinst)
  ["gzip", "gzip"],
  ["tar", "tar"],
  ["dpkg-deb", "dpkg"],
  // The build and the tests use these too; a minimal Debian root has none of them.
  ["cc", "gcc"], // host C tests of the guest agent (HOSTCC ?= cc); musl-gcc runs gcc; the share tests' relay
  ["/usr/include/stdint.h", "libc6-dev"], // host C tests of the guest agent
  ["/usr/aarch64-linux-gnu/include/stdint.h", "libc6-dev-arm64-cross"], // aarch64 agent build
  ["pgrep", "procps"],
  ["openssl", "openssl"],
  ["python3", "python3"],
  ["ip", "iproute2"], // test hosts in network namespaces
  ["git", "git"],
  ["xz", "xz-utils"], // xz-compressed kernel modules (rootfs) and their tests
  ["update-ca-certificates", "ca-certificates"],
  // musl for the aarch64 agent (~190 KiB instead of ~800 KiB with static glibc; the Makefile falls back)
  ["/usr/lib/aarch64-linux-musl/musl-gcc.specs", "musl-dev:arm64"],
];
/** Nice to have, never installed automatically. */
export const OPTIONAL = [["clang", "clang"]];

/** True when the ELF file has no PT_INTERP program header (statically linked). */
export function isStaticElf(path) {
  let fd;
  try {
    fd = openSync(path, "r");
    const h = Buffer.alloc(64);
    readSync(fd, h, 0, 64, 0);
    if (h.readUInt32BE(0) !== 0x7f454c46) return false;
    const is64 = h[4] === 2;
    const le = h[5] === 1;
    const u16 = (b, o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b, o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const phoff = is64 ? Number(le ? h.readBigUInt64LE(32) : h.readBigUInt64BE(32)) : u32(h, 28);
    const phentsize = u16(h, is64 ? 54 : 42);
    const phnum = u16(h, is64 ? 56 : 44);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (u32(ph, i * phentsize) === 3) return false; // PT_INTERP
    return true;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** @returns {string[]} Debian packages whose binaries are missing. */
export function missingPackages() {
  const missing = [];
  for (const [bin, pkg] of REQUIRED) {
    const p = bin.startsWith("/") ? (existsSync(bin) ? bin : null) : which(bin);
    const ok = p && (bin !== "busybox" || isStaticElf(p));
    if (!ok && !missing.includes(pkg)) missing.push(pkg);
  }
  return missing;
}

let aptUpdated = false;
/** Forget the last update: the next aptUpdate() runs again (after `dpkg --add-architecture`). */
export function aptListsChanged() {
  aptUpdated = false;
}
/** `apt-get update`, at most once per process (again after aptListsChanged()). */
export async function aptUpdate() {
  if (aptUpdated) return;
  say("apt-get update");
  await run("apt-get", ["update", "-q"], { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  aptUpdated = true;
}

/**
 * Ensure the system packages. Not root + something missing → prints the exact command and throws
 * (exit code 2 in the CLI) without changing anything.
 */
export async function ensureSystemPackages() {
  const missing = missingPackages();
  if (missing.length === 0) return;
  if (!which("apt-get")) {
    throw new SetupError(
      `missing system tools and no apt-get on this machine; install the equivalents of: ${missing.join(" ")}`,
    );
  }
  // Packages of a foreign architecture (musl-dev:arm64) need that dpkg architecture first.
  const foreign = [...new Set(missing.map((p) => p.split(":")[1]).filter((a) => a !== undefined))];
  if (!isRoot()) {
    const addArch = foreign.map((a) => `sudo dpkg --add-architecture ${a} && `).join("");
    const err = new SetupError(
      `missing system packages. Run:\n  ${addArch}sudo apt-get update && sudo apt-get install -y ${missing.join(" ")}\nthen run setup again.`,
    );
    err.exitCode = 2;
    err.instructions = `sudo apt-get install -y ${missing.join(" ")}`;
    throw err;
  }
  const have = (await run("dpkg", ["--print-foreign-architectures"])).stdout.split(/\s+/);
  for (const a of foreign.filter((x) => !have.includes(x))) {
    say(`dpkg --add-architecture ${a}`);
    await run("dpkg", ["--add-architecture", a]);
    aptListsChanged();
  }
  await aptUpdate();
  say(`installing ${missing.join(" ")}`);
  await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  const still = missingPackages();
  if (still.length) throw new SetupError(`apt-get install did not provide: ${still.join(" ")}`);
}

// apt-cache is slow here (~1 s per call: no pkgcache.bin), but its answers only change when the package
// lists or the configured architectures change. Memoise answers keyed on those files' mtimes.
function aptStamp() {
  const parts = [];
  for (const p of [
    "/var/lib/apt/lists",
    "/var/lib/dpkg/arch",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/var/lib/dpkg/status",
  ]) {
    try {
      parts.push(`${p}:${statSync(p).mtimeMs}`);
    } catch {
      parts.push(`${p}:-`);
    }
  }
  return parts.join("|");
}

/** `apt-cache <args>` stdout (memoised across runs in CACHE/apt-cache.json). */
export async function aptCache(args) {
  const file = join(cacheDir(), "apt-cache.json");
  const stamp = aptStamp();
  let memo = readJson(file);
  if (!memo || memo.stamp !== stamp) memo = { stamp, answers: {} };
  const key = args.join(" ");
  if (key in memo.answers) return memo.answers[key];
  const r = await run("apt-cache", args, { allowFail: true });
  const out = r.code === 0 ? r.stdout : "";
  if (r.code === 0) {
    memo.answers[key] = out;
    try {
      mkdirSync(cacheDir(), { recursive: true });
      writeJsonAtomic(file, memo);
    } catch {}
  }
  return out;
}
