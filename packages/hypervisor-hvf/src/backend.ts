/**
 * macOS (Apple silicon) backend: QEMU `virt` with `-accel hvf -cpu host`, booting the arm64 kernel Image.
 * A thin configuration of the shared QEMU driver. On other hosts it runs the same machine with TCG.
 */
import { execFileSync } from "node:child_process";
import {
  type Accel,
  type AccelResolution,
  createQemuBackend,
  HypervisorError,
  type MachineProfile,
  type VmmBackend,
} from "@supermachine/hypervisor";

export const virtHvfProfile: MachineProfile = {
  backend: "hvf",
  arch: "aarch64",
  qemuBinary: "qemu-system-aarch64",
  machine: "virt",
  consoleDevice: "ttyAMA0",
  cpuFor: (accel) => (accel === "hvf" ? "host" : "max"),
  accelArg: (accel) => (accel === "tcg" ? "tcg,thread=multi" : accel),
  installHint: "brew install qemu   (Linux: sudo apt-get install qemu-system-arm)",
};

/** Why HVF cannot be used on this host, or undefined when it can. */
export function hvfUnavailableReason(): string | undefined {
  if (process.platform !== "darwin") return `HVF exists only on macOS (this host is ${process.platform})`;
  if (process.arch !== "arm64") return "this backend runs arm64 guests with HVF only on Apple silicon";
  try {
    const v = execFileSync("sysctl", ["-n", "kern.hv_support"], { encoding: "utf8" }).trim();
    if (v !== "1")
      return `kern.hv_support=${v} (Hypervisor.framework unavailable, e.g. inside a VM without nested virtualization)`;
  } catch (err) {
    return `cannot query kern.hv_support: ${(err as Error).message}`;
  }
  return undefined;
}

export async function resolveHvfAccel(requested: Accel): Promise<AccelResolution> {
  if (requested === "tcg") return { accel: "tcg" };
  if (requested === "kvm") {
    throw new HypervisorError(
      "SM_VMM_CONFIG",
      'accel "kvm" is Linux-only: use @supermachine/hypervisor-kvm there, or accel "hvf" | "tcg" | "auto" on macOS',
    );
  }
  const reason = hvfUnavailableReason();
  if (requested === "hvf") {
    if (reason) throw new HypervisorError("SM_VMM_CONFIG", `accel "hvf" was forced but ${reason}`);
    return { accel: "hvf" };
  }
  return reason ? { accel: "tcg", fallbackReason: reason } : { accel: "hvf" };
}

export interface HvfBackendOptions {
  warn?: (message: string) => void;
  env?: NodeJS.ProcessEnv /** Default true; false: an idle VM does not keep Node's event loop alive (see QemuBackendOptions). */;
  keepEventLoopAlive?: boolean;
}

/** The macOS VMM backend (contract version 1). */
export function createHvfBackend(options: HvfBackendOptions = {}): VmmBackend {
  return createQemuBackend({
    name: "hvf",
    profile: virtHvfProfile,
    kernelFile: (b) => b.kernelPath,
    resolveAccel: (requested) => resolveHvfAccel(requested),
    accels: ["hvf", "tcg"],
    ...(options.warn ? { warn: options.warn } : {}),
    ...(options.env ? { env: options.env } : {}),
    ...(options.keepEventLoopAlive !== undefined ? { keepEventLoopAlive: options.keepEventLoopAlive } : {}),
  });
}
