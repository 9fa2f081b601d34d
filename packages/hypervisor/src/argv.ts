/** QEMU command line builder (pure: no I/O). */

import type { GuestArch } from "@supermachine/base";
import type { ResolvedAccel, SnapshotDevice } from "./contract";

/** What differs between machine models; supplied by the thin backend packages. */
export interface MachineProfile {
  /** Backend short name recorded in snapshots ("kvm", "hvf"). */
  backend: string;
  arch: GuestArch;
  /** Default QEMU binary name (looked up on PATH). */
  qemuBinary: string;
  /** `-M` value, e.g. "microvm,rtc=off" or "virt". */
  machine: string;
  /** Serial console device name in the guest ("ttyS0" / "ttyAMA0"). */
  consoleDevice: string;
  /** `-cpu` for an accelerator ("host" for kvm/hvf, "max" for tcg). */
  cpuFor(accel: ResolvedAccel): string;
  /** `-accel` value for an accelerator. */
  accelArg(accel: ResolvedAccel): string;
  /** Kernel args the machine needs for an accelerator (appended after the base command line). */
  extraKernelArgs?(accel: ResolvedAccel): string[];
  /** Command to install the QEMU binary (for SM_VMM_NOT_FOUND). */
  installHint: string;
}

export interface QemuLaunchSpec {
  accel: ResolvedAccel;
  memoryMib: number;
  vcpus: number;
  kernelPath: string;
  initrdPath: string;
  cmdline: string;
  /** RAM backing file and mapping mode: share=true during boot (snapshotable), false on restore (CoW). */
  memPath: string;
  memShare: boolean;
  /** Devices in creation order (same list → same virtio-mmio layout → migratable). */
  devices: SnapshotDevice[];
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  /** Start in `-incoming defer` (restore). */
  incoming: boolean;
  /**
   * Snapshot-compaction helper: never runs the guest, so every drive is opened read-only without image locking
   * (the live VM being snapshotted still holds its volumes' write locks).
   */
  helperDrives?: boolean;
  extraArgs?: string[];
}

/** Base kernel command line (team contract) for a console device. */
export function baseCmdline(consoleDevice: string): string {
  return `console=${consoleDevice} quiet reboot=t panic=-1 rdinit=/init`;
}

/** Escape a value for a QEMU `key=value,...` option string (commas are doubled). */
export function qemuEscape(value: string): string {
  return value.replace(/,/g, ",,");
}

/**
 * The head of every QEMU command line: machine, accelerator and CPU model for `accel`, memory, vCPUs,
 * and no default devices, user config, display or reboot. The accelerator probe boots with the same
 * head as a real launch.
 */
export function qemuMachineArgs(
  profile: MachineProfile,
  accel: ResolvedAccel,
  machine: string,
  memory: string,
  vcpus: number,
): string[] {
  return [
    "-M",
    machine,
    "-accel",
    profile.accelArg(accel),
    "-cpu",
    profile.cpuFor(accel),
    "-m",
    memory,
    "-smp",
    String(vcpus),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
  ];
}

/** Build the argv (without the binary) for QEMU. */
export function buildQemuArgv(profile: MachineProfile, spec: QemuLaunchSpec): string[] {
  const e = qemuEscape;
  const a: string[] = [
    ...qemuMachineArgs(
      profile,
      spec.accel,
      `${profile.machine},memory-backend=mem`,
      `${spec.memoryMib}M`,
      spec.vcpus,
    ),
    "-kernel",
    spec.kernelPath,
    "-initrd",
    spec.initrdPath,
    "-append",
    spec.cmdline,
    "-object",
    `memory-backend-file,id=mem,size=${spec.memoryMib}M,mem-path=${e(spec.memPath)},share=${spec.memShare ? "on" : "off"}`,
  ];
  let blk = 0;
  for (const d of spec.devices) {
    switch (d.kind) {
      case "blk": {
        const id = d.role === "rootfs" ? "rootfs" : `vol${blk}`;
        if (d.role === "volume") blk++;
        a.push(
          "-drive",
          `id=${id},file=${e(d.path)},format=raw,if=none${d.readOnly || spec.helperDrives ? ",read-only=on" : ""}${spec.helperDrives ? ",file.locking=off" : ""}`,
          "-device",
          `virtio-blk-device,drive=${id}`,
        );
        break;
      }
      case "agent-serial":
        a.push(
          "-device",
          "virtio-serial-device,id=vser0",
          "-chardev",
          `socket,id=agent,path=${e(spec.agentSocket)},server=on,wait=off`,
          "-device",
          "virtserialport,bus=vser0.0,chardev=agent,name=agent",
        );
        break;
      case "rng":
        a.push(
          "-object",
          "rng-random,id=rng0,filename=/dev/urandom",
          "-device",
          "virtio-rng-device,rng=rng0",
        );
        break;
      case "net":
        a.push(
          "-netdev",
          `user,id=net0${d.mode === "restricted" ? ",restrict=on" : ""}`,
          "-device",
          "virtio-net-device,netdev=net0",
        );
        break;
      case "vsock":
        a.push("-device", `vhost-vsock-device,id=vsock0,guest-cid=${d.cid}`);
        break;
    }
  }
  // append=on: once the host trims the log (truncate to 0), QEMU's next writes start at its new end
  // instead of leaving a hole up to the old offset.
  a.push(
    "-qmp",
    `unix:${e(spec.qmpSocket)},server=on,wait=off`,
    "-chardev",
    `file,id=con0,path=${e(spec.consoleLog)},append=on`,
    "-serial",
    "chardev:con0",
  );
  if (spec.incoming) a.push("-incoming", "defer");
  if (spec.extraArgs) a.push(...spec.extraArgs);
  return a;
}

/** Device list for a config, in creation order: rootfs, volumes, agent serial, rng, net, vsock. */
export function devicesFor(cfg: {
  rootfs?: string;
  volumes: { path: string; readOnly: boolean }[];
  network: "none" | "restricted" | "nat";
  vsock: boolean;
  vsockCid: number;
}): SnapshotDevice[] {
  const d: SnapshotDevice[] = [];
  if (cfg.rootfs) d.push({ kind: "blk", role: "rootfs", path: cfg.rootfs, readOnly: true });
  for (const v of cfg.volumes) d.push({ kind: "blk", role: "volume", path: v.path, readOnly: v.readOnly });
  d.push({ kind: "agent-serial" }, { kind: "rng" });
  if (cfg.network !== "none") d.push({ kind: "net", mode: cfg.network });
  if (cfg.vsock) d.push({ kind: "vsock", cid: cfg.vsockCid });
  return d;
}
