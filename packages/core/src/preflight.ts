/**
 * Preflight: QEMU (binary for the guest arch, minimum version), kernel bundle and guest agent are checked
 * before Image.build pulls or builds anything, so a missing piece is one error naming the fix instead of a
 * failure after minutes of work. `supermachine setup` (cli/setup.ts) runs the same checks plus host ones.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { findExecutable, resolveKernelBundle } from "@supermachine/hypervisor";
import { SupermachineError } from "./errors";
import { agentCandidates, type GuestArch, guestPackageName, kernelDirFor, usableGuestPackage } from "./guest";

/**
 * Oldest QEMU the driver's command line works with: `-M microvm` finding its virtio-mmio devices through
 * ACPI (QEMU 5.2) and the machine `memory-backend=` property (5.0); x-ignore-shared migration is 4.0.
 * Tested with 7.2 (Debian 12).
 */
export const MIN_QEMU_VERSION = "5.2.0";

export const qemuBinaryFor = (arch: GuestArch): string => `qemu-system-${arch}`;

/** Compare dotted numeric versions ("7.2.22" vs "5.2.0"). */
export function compareDotted(a: string, b: string): number {
  const pa = a.split(/[.+-]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.+-]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The version number `qemu-system-* --version` prints ("QEMU emulator version 7.2.22 (...)"). */
export function parseQemuVersion(out: string): string | undefined {
  return /version\s+(\d+\.\d+(?:\.\d+)?)/.exec(out)?.[1];
}

const versionCache = new Map<string, string | undefined>();
export function qemuVersionOf(binary: string): string | undefined {
  if (versionCache.has(binary)) return versionCache.get(binary);
  let v: string | undefined;
  try {
    v = parseQemuVersion(execFileSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 }));
  } catch {
    v = undefined;
  }
  versionCache.set(binary, v);
  return v;
}

// ------------------------------------------------------------------ package managers

export type PackageManager = "apt" | "dnf" | "pacman" | "apk" | "zypper" | "brew";
export const PACKAGE_MANAGERS: readonly PackageManager[] = ["apt", "dnf", "pacman", "apk", "zypper", "brew"];

/** The command that installs QEMU for `arch` guests with each package manager. */
export function qemuInstallCommand(pm: PackageManager, arch: GuestArch): string {
  const x86 = arch === "x86_64";
  switch (pm) {
    case "apt":
      return `sudo apt-get install -y ${x86 ? "qemu-system-x86" : "qemu-system-arm"}`;
    case "dnf":
      return `sudo dnf install -y ${x86 ? "qemu-system-x86-core" : "qemu-system-aarch64-core"}`;
    case "pacman":
      return `sudo pacman -S --needed ${x86 ? "qemu-system-x86" : "qemu-system-aarch64"}`;
    case "apk":
      return `sudo apk add ${x86 ? "qemu-system-x86_64" : "qemu-system-aarch64"}`;
    case "zypper":
      return `sudo zypper install -y ${x86 ? "qemu-x86" : "qemu-arm"}`;
    case "brew":
      return "brew install qemu";
  }
}

/**
 * This host's package manager: brew on macOS; on Linux the one /etc/os-release names (ID, ID_LIKE), else
 * the first whose command is on PATH. Undefined when none is recognised.
 */
export function detectPackageManager(
  platform: NodeJS.Platform = process.platform,
  osRelease: string | undefined = readOsRelease(),
  has: (cmd: string) => boolean = (c) => findExecutable(c) !== undefined,
): PackageManager | undefined {
  if (platform === "darwin") return "brew";
  const ids = (osRelease ?? "")
    .split("\n")
    .filter((l) => /^(ID|ID_LIKE)=/.test(l))
    .flatMap((l) =>
      l
        .slice(l.indexOf("=") + 1)
        .replace(/"/g, "")
        .split(/\s+/),
    );
  const byId: [string[], PackageManager][] = [
    [["debian", "ubuntu"], "apt"],
    [["fedora", "rhel", "centos"], "dnf"],
    [["arch", "archlinux"], "pacman"],
    [["alpine"], "apk"],
    [["suse", "opensuse", "sles", "opensuse-tumbleweed", "opensuse-leap"], "zypper"],
  ];
  for (const id of ids) for (const [names, pm] of byId) if (names.includes(id)) return pm;
  const byCmd: [string, PackageManager][] = [
    ["apt-get", "apt"],
    ["dnf", "dnf"],
    ["pacman", "pacman"],
    ["apk", "apk"],
    ["zypper", "zypper"],
    ["brew", "brew"],
  ];
  return byCmd.find(([cmd]) => has(cmd))?.[1];
}

function readOsRelease(): string | undefined {
  for (const f of ["/etc/os-release", "/usr/lib/os-release"]) {
    try {
      return readFileSync(f, "utf8");
    } catch {
      /* next */
    }
  }
  return undefined;
}

// ------------------------------------------------------------------ checks

export interface DependencyCheck {
  name: "qemu" | "kernel" | "agent";
  ok: boolean;
  /** What was found (path, version, source) or what is wrong. */
  detail: string;
  /** The command or step that fixes it (when !ok). */
  fix?: string;
}

export interface DependencyCheckOptions {
  arch: GuestArch;
  kernelDir?: string | undefined;
}

/** Where the kernel/agent came from, for messages. */
function sourceOf(path: string, arch: GuestArch, kernelDir?: string): string {
  if (kernelDir && path.startsWith(kernelDir)) return "kernelDir option";
  const pkg = usableGuestPackage(arch);
  if (pkg && path.startsWith(pkg.root)) return `${pkg.name}@${pkg.version}`;
  if (process.env.SUPERMACHINE_KERNEL_DIR && path.startsWith(process.env.SUPERMACHINE_KERNEL_DIR))
    return "SUPERMACHINE_KERNEL_DIR";
  if (process.env.SUPERMACHINE_AGENT && path === process.env.SUPERMACHINE_AGENT) return "SUPERMACHINE_AGENT";
  return "local build/cache";
}

/** QEMU, kernel and agent for `arch` guests: one entry each. */
export function checkDependencies(opts: DependencyCheckOptions): DependencyCheck[] {
  const { arch } = opts;
  const out: DependencyCheck[] = [];
  const pm = detectPackageManager();
  const install = pm ? qemuInstallCommand(pm, arch) : "install QEMU with your package manager";
  const qemuName = qemuBinaryFor(arch);
  const qemu = findExecutable(qemuName);
  if (!qemu) {
    out.push({ name: "qemu", ok: false, detail: `${qemuName} is not on PATH`, fix: install });
  } else {
    const v = qemuVersionOf(qemu);
    if (!v) {
      out.push({
        name: "qemu",
        ok: false,
        detail: `${qemu} --version failed (a broken QEMU install?)`,
        fix: install,
      });
    } else if (compareDotted(v, MIN_QEMU_VERSION) < 0) {
      out.push({
        name: "qemu",
        ok: false,
        detail: `${qemu} is QEMU ${v}; supermachine needs ${MIN_QEMU_VERSION} or newer`,
        fix: `upgrade QEMU (${install})`,
      });
    } else out.push({ name: "qemu", ok: true, detail: `${qemu} (QEMU ${v})` });
  }
  const pkgFix = `npm install ${guestPackageName(arch)} (or set SUPERMACHINE_KERNEL_DIR / SUPERMACHINE_AGENT)`;
  try {
    const dir = kernelDirFor(opts.kernelDir, arch);
    const b = resolveKernelBundle({ arch, ...(dir ? { path: dir } : {}) });
    out.push({
      name: "kernel",
      ok: true,
      detail: `${b.release} in ${b.dir} (${sourceOf(b.dir, arch, opts.kernelDir)})`,
    });
  } catch (err) {
    out.push({ name: "kernel", ok: false, detail: (err as Error).message, fix: pkgFix });
  }
  const candidates = agentCandidates(arch);
  const agent = candidates.find((c) => existsSync(c));
  out.push(
    agent
      ? { name: "agent", ok: true, detail: `${agent} (${sourceOf(agent, arch)})` }
      : {
          name: "agent",
          ok: false,
          detail: `no guest agent for ${arch} (looked in ${candidates.join(", ")})`,
          fix: pkgFix,
        },
  );
  return out;
}

/**
 * Throws SM_DEPENDENCY_MISSING when QEMU, the kernel or the agent is missing, naming every missing piece and
 * its fix. `details`: { arch, missing: ["qemu" | "kernel" | "agent"], problems: [{name, detail, fix}],
 * fix: "npx supermachine setup" }.
 */
export function preflight(opts: DependencyCheckOptions): void {
  const bad = checkDependencies(opts).filter((c) => !c.ok);
  if (bad.length === 0) return;
  const lines = bad.map((c) => `  - ${c.name}: ${c.detail}. Fix: ${c.fix}`);
  throw new SupermachineError(
    "SM_DEPENDENCY_MISSING",
    `supermachine cannot run ${opts.arch} VMs on this host yet:\n${lines.join("\n")}\nRun \`npx supermachine setup\` to check this host and print the commands for it.`,
    {
      details: {
        arch: opts.arch,
        missing: bad.map((c) => c.name),
        problems: bad.map(({ name, detail, fix }) => ({ name, detail, fix })),
        fix: "npx supermachine setup",
      },
    },
  );
}
