/**
 * Linux backend: QEMU `microvm` (x86_64, PVH boot of the ELF vmlinux, ACPI on) or `virt` (aarch64 Linux hosts),
 * accelerated by KVM, falling back to TCG with one warning. A thin configuration of the shared QEMU driver.
 */
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  type Accel,
  type AccelResolution,
  cachedProbe,
  cacheRoot,
  createQemuBackend,
  ensureVmlinux,
  type GuestArch,
  HypervisorError,
  hostArch,
  isPvmHost,
  type KernelBundle,
  kvmPrecheck,
  type MachineProfile,
  type VmmBackend,
} from "@supermachine/hypervisor";

/**
 * x86_64 microvm: no PCI, virtio-mmio devices described by ACPI, no RTC (the agent sets the clock on resume).
 *
 * TCG only: measured on QEMU 7.2 + Debian 6.1 cloud kernel, microvm's ACPI MADT has no IRQ0 override, the guest
 * cannot calibrate the TSC against the PIT and stalls in early boot waiting for timer ticks. Giving the TSC
 * frequency (`tsc_early_khz`, from the host: TCG's guest TSC runs at the host TSC rate) and `lpj` skips both
 * calibrations; the TSC-deadline LAPIC timer then drives the guest. With KVM, kvmclock makes this unnecessary.
 */
export const microvmX86Profile: MachineProfile = {
  backend: "kvm",
  arch: "x86_64",
  qemuBinary: "qemu-system-x86_64",
  machine: "microvm,rtc=off",
  extraKernelArgs: (accel) => (accel === "tcg" ? tcgTimerArgs() : []),
  consoleDevice: "ttyS0",
  cpuFor: (accel) => (accel === "kvm" ? "host" : "max"),
  accelArg: (accel) => (accel === "tcg" ? tcgAccelArg() : accel),
  installHint: "sudo apt-get install qemu-system-x86   (Fedora: sudo dnf install qemu-system-x86-core)",
};

/** aarch64 Linux hosts: the `virt` machine with virtio-mmio devices. */
export const virtArm64KvmProfile: MachineProfile = {
  backend: "kvm",
  arch: "aarch64",
  qemuBinary: "qemu-system-aarch64",
  machine: "virt,gic-version=max",
  consoleDevice: "ttyAMA0",
  cpuFor: (accel) => (accel === "kvm" ? "host" : "max"),
  accelArg: (accel) => (accel === "tcg" ? tcgAccelArg() : accel),
  installHint: "sudo apt-get install qemu-system-arm   (Fedora: sudo dnf install qemu-system-aarch64-core)",
};

/**
 * Size of QEMU's TCG translation cache per VM, in MiB. QEMU 7.2's default reserves 1 GiB per process
 * and keeps what it translated resident, so a VM that ran a lot of different code can hold up to that
 * much. bench/core-idle.mjs (busybox, sizes 16/32/64/default): an idle pooled VM holds ~11 MiB of
 * translations whatever the size, and exec latency did not differ beyond the noise of a loaded host;
 * 64 MiB caps the growth at 1/16 of the default with ~6x headroom over that idle need, so bigger
 * workloads do not thrash the cache.
 */
export const DEFAULT_TCG_TB_MIB = 64;

/**
 * `-accel` value under TCG: multi-threaded TCG, translation cache bounded to `tb-size` MiB.
 * SUPERMACHINE_TCG_TB_MIB overrides the size (0: QEMU's default).
 */
export function tcgAccelArg(env: NodeJS.ProcessEnv = process.env): string {
  const raw = env.SUPERMACHINE_TCG_TB_MIB;
  const n = raw !== undefined && /^\d+$/.test(raw.trim()) ? Number(raw) : DEFAULT_TCG_TB_MIB;
  return n > 0 ? `tcg,thread=multi,tb-size=${n}` : "tcg,thread=multi";
}

/** Host TSC frequency in kHz (model name "@ x.xxGHz", else "cpu MHz"); 2 GHz when unknown. */
export function hostTscKhz(cpuinfo = safeRead("/proc/cpuinfo")): number {
  const ghz = /model name\s*:.*@\s*([\d.]+)\s*GHz/i.exec(cpuinfo);
  if (ghz?.[1]) return Math.round(Number(ghz[1]) * 1_000_000);
  const mhz = /cpu MHz\s*:\s*([\d.]+)/i.exec(cpuinfo);
  if (mhz?.[1]) return Math.round(Number(mhz[1]) * 1000);
  return 2_000_000;
}

function safeRead(p: string): string {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return "";
  }
}

/** Kernel args that let the x86_64 guest boot on TCG microvm (see microvmX86Profile). HZ=250 on Debian. */
export function tcgTimerArgs(khz = hostTscKhz()): string[] {
  return [`tsc_early_khz=${khz}`, `lpj=${Math.round((khz * 1000) / 250)}`];
}

function isElf(path: string): boolean {
  const b = Buffer.alloc(4);
  const fd = openSync(path, "r");
  try {
    readSync(fd, b, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  return b.readUInt32BE(0) === 0x7f454c46;
}

/** x86_64: boot the ELF vmlinux (PVH); derive it from the bzImage once, cached next to it (or under CACHE). */
export function x86KernelFile(bundle: KernelBundle): string {
  if (isElf(bundle.kernelPath)) return bundle.kernelPath;
  try {
    return ensureVmlinux(bundle.kernelPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EACCES" && code !== "EROFS" && code !== "EPERM") throw err;
    const st = statSync(bundle.kernelPath);
    const dir = join(cacheRoot(), "vmlinux", `${bundle.release}-${st.size}`);
    mkdirSync(dir, { recursive: true });
    return ensureVmlinux(bundle.kernelPath, join(dir, "vmlinux"));
  }
}

/**
 * Accelerator policy of the Linux backend: "tcg" as asked; "kvm" forced (fails fast if /dev/kvm is unusable);
 * "auto" = static checks + a cached tiny real boot under KVM, else TCG with the reason.
 */
export async function resolveKvmAccel(
  profile: MachineProfile,
  requested: Accel,
  ctx: { qemuBinary: string; kernelPath: string },
): Promise<AccelResolution> {
  if (requested === "tcg") return { accel: "tcg" };
  if (requested === "hvf") {
    throw new HypervisorError(
      "SM_VMM_CONFIG",
      'accel "hvf" is macOS-only: use @supermachine/hypervisor-hvf there, or accel "kvm" | "tcg" | "auto" on Linux',
    );
  }
  const pre = kvmPrecheck();
  if (requested === "kvm") {
    if (pre) throw new HypervisorError("SM_VMM_CONFIG", `accel "kvm" was forced but KVM is unusable: ${pre}`);
    return { accel: "kvm" };
  }
  if (pre) return { accel: "tcg", fallbackReason: pre };
  const probe = await cachedProbe(profile, ctx.qemuBinary, "kvm", ctx.kernelPath);
  if (probe.ok) return { accel: "kvm" };
  const reason = isPvmHost()
    ? `PVM host: /dev/kvm is provided by the kvm_pvm module, which runs only PVM-enabled guest kernels (probe: ${probe.reason})`
    : `KVM probe failed: ${probe.reason}`;
  return { accel: "tcg", fallbackReason: reason };
}

export interface KvmBackendOptions {
  /** Guest arch (default: the host's). */
  arch?: GuestArch;
  /** One-line warnings (TCG fallback). Default: process.emitWarning. */
  warn?: (message: string) => void;
  env?: NodeJS.ProcessEnv /** Default true; false: an idle VM does not keep Node's event loop alive (see QemuBackendOptions). */;
  keepEventLoopAlive?: boolean;
}

/** The Linux VMM backend (contract version 1). */
export function createKvmBackend(options: KvmBackendOptions = {}): VmmBackend {
  const arch = options.arch ?? hostArch() ?? "x86_64";
  const profile = arch === "x86_64" ? microvmX86Profile : virtArm64KvmProfile;
  return createQemuBackend({
    name: "kvm",
    profile,
    kernelFile: arch === "x86_64" ? x86KernelFile : (b) => b.kernelPath,
    resolveAccel: (requested, ctx) => resolveKvmAccel(profile, requested, ctx),
    accels: ["kvm", "tcg"],
    ...(options.warn ? { warn: options.warn } : {}),
    ...(options.env ? { env: options.env } : {}),
    ...(options.keepEventLoopAlive !== undefined ? { keepEventLoopAlive: options.keepEventLoopAlive } : {}),
  });
}
