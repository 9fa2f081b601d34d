/**
 * `supermachine setup`: checks this host for what supermachine needs — the guest bundle for the host's arch,
 * QEMU (binary and version), /dev/kvm access (Linux) or HVF (macOS), /dev/shm size — fixes what it can
 * without root (derives the x86_64 vmlinux into the user's cache ahead of the first boot) and prints the
 * exact command for the rest. It never runs sudo and never installs system packages. Exit 0 when ready.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync,
  constants,
  createReadStream,
  existsSync,
  readFileSync,
  statfsSync,
  statSync,
} from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { findGuestPackage, type GuestArch, guestPackageName } from "../guest";
import { hostArch } from "../paths";
import {
  checkDependencies,
  detectPackageManager,
  PACKAGE_MANAGERS,
  type PackageManager,
  qemuInstallCommand,
} from "../preflight";
import { type CommandHelp, HELP_OPTION } from "./args";

export interface SetupIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

export type CheckStatus = "ok" | "warn" | "fail" | "fixed";

export interface HostCheck {
  name: string;
  status: CheckStatus;
  detail: string;
  /** Command(s) that fix it, when status is fail or warn. */
  fix?: string;
}

export interface HostCheckOptions {
  arch?: GuestArch;
  platform?: NodeJS.Platform;
  /** Apply the fixes that need no root (default true). */
  fix?: boolean;
}

const MIB = 1024 * 1024;
/** Below this the default 256 MiB VM cannot be backed by /dev/shm at all. */
export const SHM_MIN_BYTES = 512 * MIB;
/** Below this a pool of a few VMs runs out of /dev/shm. */
export const SHM_WARN_BYTES = 2048 * MIB;

/** `supermachine setup --help` (the CLI prints it from this; SETUP_USAGE is the same text for runSetup). */
export const SETUP_HELP: CommandHelp = {
  usage: "setup [--no-fix] [--json]",
  summary: "check this host (QEMU, guest bundle, /dev/kvm, /dev/shm) and fix or explain what is missing",
  description:
    "Checks this host for what supermachine needs and fixes what it can without root. Missing system\npackages are never installed: setup prints the command (apt, dnf, pacman, apk, zypper, brew) and\nexits non-zero. Exit 0 when the host is ready.",
  options: [
    { names: ["--no-fix"], help: "only report; change nothing" },
    { names: ["--json"], help: "print the checks as JSON" },
    HELP_OPTION,
  ],
  examples: ["supermachine setup", "supermachine setup --no-fix --json"],
};

export const SETUP_USAGE = `Usage: supermachine setup [--no-fix] [--json]

Checks this host for what supermachine needs and fixes what it can without root:
  guest bundle   ${guestPackageName("x86_64")} / ${guestPackageName("aarch64")} for this machine's arch
  qemu           qemu-system-<arch> on PATH, version
  kernel, agent  where they are found (options, SUPERMACHINE_KERNEL_DIR / SUPERMACHINE_AGENT, the guest bundle)
  kvm            /dev/kvm access on Linux (hvf on macOS); without it VMs run under slow TCG emulation
  /dev/shm       size (VM memory is backed by files there)
Missing system packages are never installed: setup prints the command (apt, dnf, pacman, apk, zypper, brew)
and exits non-zero. Exit 0 when the host is ready.

Options:
  --no-fix   only report; change nothing
  --json     print the checks as JSON
  -h, --help this text
`;

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest("hex");
}

async function checkGuestBundle(arch: GuestArch): Promise<HostCheck> {
  const name = guestPackageName(arch);
  const pkg = findGuestPackage(arch);
  if (!pkg) {
    const dev = process.env.SUPERMACHINE_KERNEL_DIR || process.env.SUPERMACHINE_AGENT;
    return {
      name: "guest bundle",
      status: dev ? "warn" : "fail",
      detail: `${name} is not installed${dev ? " (SUPERMACHINE_KERNEL_DIR / SUPERMACHINE_AGENT are set and used instead)" : ""}`,
      fix: `npm install ${name}   (installed with @supermachine/core unless optional dependencies were omitted)`,
    };
  }
  if (pkg.missing.length) {
    return {
      name: "guest bundle",
      status: "fail",
      detail: `${name}@${pkg.version} at ${pkg.root} lacks ${pkg.missing.join(", ")}`,
      fix: `npm install --force ${name}   (reinstall it)`,
    };
  }
  let manifest: { files?: Record<string, string>; kernel?: { release?: string } };
  try {
    manifest = JSON.parse(readFileSync(pkg.manifestPath, "utf8"));
  } catch (err) {
    return {
      name: "guest bundle",
      status: "fail",
      detail: `${pkg.manifestPath}: ${(err as Error).message}`,
      fix: `npm install --force ${name}`,
    };
  }
  const bad: string[] = [];
  for (const [rel, sum] of Object.entries(manifest.files ?? {})) {
    const p = join(pkg.bundleDir, rel);
    if (!existsSync(p) || (await sha256File(p)) !== sum) bad.push(rel);
  }
  if (bad.length) {
    return {
      name: "guest bundle",
      status: "fail",
      detail: `${name}@${pkg.version}: ${bad.length} file(s) do not match the manifest's sha256 (${bad.slice(0, 3).join(", ")})`,
      fix: `npm install --force ${name}`,
    };
  }
  return {
    name: "guest bundle",
    status: "ok",
    detail: `${name}@${pkg.version} (kernel ${manifest.kernel?.release ?? "?"}, ${Object.keys(manifest.files ?? {}).length} files verified)`,
  };
}

/** Group name of a gid from /etc/group (undefined when not listed). */
function groupName(gid: number): string | undefined {
  try {
    for (const l of readFileSync("/etc/group", "utf8").split("\n")) {
      const [n, , id] = l.split(":");
      if (n && Number(id) === gid) return n;
    }
  } catch {
    /* no /etc/group */
  }
  return undefined;
}

function checkKvm(): HostCheck {
  if (!existsSync("/dev/kvm")) {
    return {
      name: "kvm",
      status: "warn",
      detail: "/dev/kvm does not exist: VMs run under TCG software emulation (works, much slower)",
      fix: "enable VT-x/AMD-V (BIOS, or nested virtualization for a VM) and load the module: sudo modprobe kvm_intel   (AMD: kvm_amd)",
    };
  }
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return { name: "kvm", status: "ok", detail: "/dev/kvm is readable and writable" };
  } catch {
    const g = groupName(statSync("/dev/kvm").gid) ?? "kvm";
    const user = process.env.USER || userInfo().username;
    return {
      name: "kvm",
      status: "warn",
      detail: `/dev/kvm exists but ${user} cannot open it (group ${g}): VMs would run under slow TCG emulation`,
      fix: `sudo usermod -aG ${g} ${user}   (then log out and back in, or run: newgrp ${g})`,
    };
  }
}

function checkHvf(): HostCheck {
  let v = "";
  try {
    v = execFileSync("sysctl", ["-n", "kern.hv_support"], { encoding: "utf8", timeout: 5000 }).trim();
  } catch {
    /* reported below */
  }
  return v === "1"
    ? { name: "hvf", status: "ok", detail: "Hypervisor.framework is available (kern.hv_support=1)" }
    : {
        name: "hvf",
        status: "warn",
        detail:
          "Hypervisor.framework is not available (kern.hv_support != 1): VMs run under slow TCG emulation",
        fix: "run on Apple silicon macOS outside a VM without nested virtualization",
      };
}

function checkShm(): HostCheck {
  if (process.env.SUPERMACHINE_RUNTIME_DIR)
    return {
      name: "/dev/shm",
      status: "ok",
      detail: `not used (SUPERMACHINE_RUNTIME_DIR=${process.env.SUPERMACHINE_RUNTIME_DIR})`,
    };
  if (!existsSync("/dev/shm")) {
    return { name: "/dev/shm", status: "ok", detail: "absent: VM memory files go to the OS temp dir" };
  }
  try {
    const s = statfsSync("/dev/shm");
    const size = s.blocks * s.bsize;
    const free = s.bavail * s.bsize;
    const what = `${Math.round(size / MIB)} MiB, ${Math.round(free / MIB)} MiB free`;
    const fix =
      "sudo mount -o remount,size=4G /dev/shm   (or set SUPERMACHINE_RUNTIME_DIR to a directory on a larger tmpfs)";
    if (free < SHM_MIN_BYTES)
      return { name: "/dev/shm", status: "fail", detail: `${what}: too small for one 256 MiB VM`, fix };
    if (size < SHM_WARN_BYTES)
      return { name: "/dev/shm", status: "warn", detail: `${what}: enough for a few small VMs only`, fix };
    return { name: "/dev/shm", status: "ok", detail: what };
  } catch (err) {
    return { name: "/dev/shm", status: "warn", detail: `cannot stat /dev/shm: ${(err as Error).message}` };
  }
}

/** x86_64 boots the ELF vmlinux derived from the bzImage: derive it now (into the user's cache when the bundle dir is read-only). */
async function deriveVmlinux(arch: GuestArch): Promise<HostCheck | undefined> {
  if (arch !== "x86_64" || process.platform !== "linux") return undefined;
  try {
    const { resolveKernelBundle } = await import("@supermachine/hypervisor");
    const { x86KernelFile } = await import("@supermachine/hypervisor-kvm");
    const { kernelDirFor } = await import("../guest");
    const dir = kernelDirFor(undefined, arch);
    const b = resolveKernelBundle({ arch, ...(dir ? { path: dir } : {}) });
    const started = Date.now();
    const path = x86KernelFile(b);
    const derivedNow = statSync(path).mtimeMs >= started - 1000;
    return {
      name: "vmlinux",
      status: derivedNow ? "fixed" : "ok",
      detail: `${path} (${derivedNow ? "derived now from" : "derived earlier from"} ${b.kernelPath})`,
    };
  } catch (err) {
    return {
      name: "vmlinux",
      status: "warn",
      detail: `could not derive vmlinux ahead of the first boot: ${(err as Error).message}`,
    };
  }
}

/**
 * Every check setup runs, in order. Reusable (e.g. by `doctor`): no output, no process exit. With `fix`
 * (default true) applies the fixes that need no root.
 */
export async function checkHost(opts: HostCheckOptions = {}): Promise<HostCheck[]> {
  const arch = opts.arch ?? hostArch();
  const platform = opts.platform ?? process.platform;
  const deps = checkDependencies({ arch });
  const bundle = await checkGuestBundle(arch);
  const installed = findGuestPackage(arch);
  if ((!installed || installed.missing.length) && deps.every((c) => c.name === "qemu" || c.ok)) {
    // A checkout (the workspace package has no bundle until packed) or SUPERMACHINE_KERNEL_DIR /
    // SUPERMACHINE_AGENT: the bundle is not needed.
    bundle.status = "ok";
    bundle.detail = `${guestPackageName(arch)} ${installed ? "has no bundle (a checkout)" : "not installed"}; kernel and agent found elsewhere (below)`;
    delete bundle.fix;
  }
  const out: HostCheck[] = [bundle];
  for (const c of deps) {
    out.push({
      name: c.name,
      status: c.ok ? "ok" : "fail",
      detail: c.detail,
      ...(c.fix ? { fix: c.fix } : {}),
    });
  }
  if (platform === "linux") {
    out.push(checkKvm());
    out.push(checkShm());
  } else if (platform === "darwin") {
    out.push(checkHvf());
  } else {
    out.push({
      name: "platform",
      status: "fail",
      detail: `${platform} is not supported`,
      fix: "run on Linux (KVM) or macOS (HVF)",
    });
  }
  const ready = out.every((c) => c.status !== "fail");
  if (ready && opts.fix !== false) {
    const v = await deriveVmlinux(arch);
    if (v) out.push(v);
  }
  return out;
}

/** The QEMU install command for every supported package manager, this host's first. */
export function qemuInstallLines(arch: GuestArch, detected: PackageManager | undefined): string[] {
  const order = detected
    ? [detected, ...PACKAGE_MANAGERS.filter((p) => p !== detected)]
    : [...PACKAGE_MANAGERS];
  return order.map(
    (pm) => `  ${pm.padEnd(7)} ${qemuInstallCommand(pm, arch)}${pm === detected ? "   <- this host" : ""}`,
  );
}

export async function runSetup(
  args: string[],
  io: SetupIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  let json = false;
  let fix = true;
  for (const a of args) {
    if (a === "-h" || a === "--help") {
      io.stdout.write(SETUP_USAGE);
      return 0;
    }
    if (a === "--json") json = true;
    else if (a === "--no-fix") fix = false;
    else {
      io.stderr.write(`supermachine setup: unknown argument ${a}\n${SETUP_USAGE}`);
      return 2;
    }
  }
  const arch = hostArch();
  const checks = await checkHost({ arch, fix });
  const failed = checks.filter((c) => c.status === "fail");
  const pm = detectPackageManager();
  if (json) {
    io.stdout.write(
      `${JSON.stringify({ ready: failed.length === 0, arch, platform: process.platform, packageManager: pm ?? null, checks }, null, 2)}\n`,
    );
    return failed.length === 0 ? 0 : 1;
  }
  const mark: Record<CheckStatus, string> = { ok: "ok   ", fixed: "fixed", warn: "warn ", fail: "FAIL " };
  io.stdout.write(`supermachine setup: ${process.platform} ${arch}\n`);
  for (const c of checks) {
    io.stdout.write(`${mark[c.status]} ${c.name.padEnd(13)} ${c.detail}\n`);
    if (c.fix && (c.status === "fail" || c.status === "warn"))
      io.stdout.write(`      ${"".padEnd(13)} fix: ${c.fix}\n`);
  }
  if (checks.some((c) => c.name === "qemu" && c.status === "fail")) {
    io.stdout.write(
      `\nInstall QEMU (needs root; setup does not run it for you):\n${qemuInstallLines(arch, pm).join("\n")}\n`,
    );
  }
  if (failed.length) {
    io.stdout.write(
      `\nnot ready: ${failed.map((c) => c.name).join(", ")}. Run the commands above, then \`npx supermachine setup\` again.\n`,
    );
    return 1;
  }
  io.stdout.write("\nready.\n");
  return 0;
}
