/**
 * The backend contract core programs against (versioned by `VmmBackend.version`).
 * Config (`VmConfig`, validated) is separate from the live object (`Vm`) and from the persisted
 * state (`SnapshotManifest` in a snapshot directory).
 */
import type { Duplex } from "node:stream";
import type { GuestArch } from "@supermachine/base";
import type { BACKEND_CONTRACT_VERSION, SNAPSHOT_FORMAT_VERSION } from "./constants";
import type { HypervisorError } from "./errors";

/** Accelerator request. "auto" probes the platform's hardware accelerator and falls back to TCG with one warning. */
export type Accel = "auto" | "kvm" | "hvf" | "tcg";
/** Accelerator a VM actually runs on. */
export type ResolvedAccel = "kvm" | "hvf" | "tcg";

/**
 * Guest networking.
 * - "none": no NIC (default).
 * - "restricted": user-mode NIC with `restrict=on`: the guest can reach nothing outside (no internet, no host);
 *   only explicitly forwarded ports (none by default). Useful to give the guest a configured interface.
 * - "nat": user-mode NAT with outbound access — the guest can open connections to the internet AND to every
 *   service listening on the host's loopback (via 10.0.2.2). Only for trusted guests.
 */
export type NetworkMode = "none" | "restricted" | "nat";

/** Explicit VM lifecycle states. */
export type VmState = "starting" | "running" | "paused" | "stopping" | "stopped" | "failed";

export interface BackendCapabilities {
  /** snapshot() / restore() supported. */
  snapshot: boolean;
  /** Restores map the snapshot memory copy-on-write (MAP_PRIVATE); untouched pages stay shared page cache. */
  cowRestore: boolean;
  /** prepareRestore() pre-starts a paused VMM so a restore only pays the state load. */
  prepareRestore: boolean;
  /** /dev/vhost-vsock exists on this host (VmConfig.vsock can be used). */
  vsock: boolean;
  /** virtiofsd is installed (virtio-fs shares are possible; not wired in contract v1). */
  virtiofs: boolean;
  /** Guest architecture of this backend. */
  arch: GuestArch;
  /** Accelerators this backend can use on this host kind (before probing). */
  accels: ResolvedAccel[];
}

export interface VolumeConfig {
  /** Host file (raw image). Must exist. */
  path: string;
  /** Attach read-only (default false). */
  readOnly?: boolean;
}

/** Input configuration of `boot()`. Validated by `validateVmConfig` (unknown keys rejected). */
export interface VmConfig {
  /** VM id: [A-Za-z0-9._-]{1,64}; names the runtime dir. Default: generated. */
  id?: string;
  /** Kernel bundle dir or kernel file. Default: SUPERMACHINE_KERNEL_DIR, then the cache. */
  kernel?: string;
  /** initramfs (cpio, optionally compressed). Required. */
  initrd: string;
  /** Root filesystem image attached read-only as the FIRST virtio-blk device (/dev/vda). */
  rootfs?: string;
  /** Volumes attached after the rootfs, in order (/dev/vdb, /dev/vdc, ...), read-write by default. */
  volumes?: VolumeConfig[];
  /** Guest RAM in MiB (default 256). Committed lazily by the host. */
  memoryMib?: number;
  /** vCPUs (default 1). */
  vcpus?: number;
  /** Appended to the base kernel command line (`console=… quiet reboot=t panic=-1 rdinit=/init`). */
  kernelArgs?: string[];
  /** Default "none". */
  network?: NetworkMode;
  /** Attach vhost-vsock (guest CID = `vsockCid`, default 3). Requires capabilities.vsock. Default false. */
  vsock?: boolean;
  vsockCid?: number;
  /** Default "auto". */
  accel?: Accel;
  /** Parent of per-VM runtime dirs. Default /dev/shm/supermachine (else <tmpdir>/supermachine). */
  runtimeRoot?: string;
  /** QEMU binary override (default: the backend's qemu-system-<arch> on PATH). */
  qemuBinary?: string;
  /** Extra QEMU arguments appended verbatim (escape hatch; not persisted in snapshots). */
  extraQemuArgs?: string[];
}

/** Fully validated config with defaults applied (what `vm.config` holds). */
export interface ResolvedVmConfig {
  id: string;
  kernel?: string;
  initrd: string;
  rootfs?: string;
  volumes: Required<VolumeConfig>[];
  memoryMib: number;
  vcpus: number;
  kernelArgs: string[];
  network: NetworkMode;
  vsock: boolean;
  vsockCid: number;
  accel: Accel;
  runtimeRoot: string;
  qemuBinary?: string;
  extraQemuArgs: string[];
}

/** What may differ between the snapshot and the restored VM. Device count/shape must stay the same. */
export interface RestoreOverrides {
  id?: string;
  /** New location of the rootfs image (same content!). */
  rootfs?: string;
  /** New volume files; must have the same length as in the snapshot. */
  volumes?: VolumeConfig[];
  /** Kernel / initrd files (same content) when the snapshot's recorded paths moved. */
  kernel?: string;
  initrd?: string;
  /** Switch between "nat" and "restricted" (a snapshot without NIC cannot gain one). */
  network?: NetworkMode;
  accel?: Accel;
  runtimeRoot?: string;
  qemuBinary?: string;
  extraQemuArgs?: string[];
}

/** A guest device recorded in vm.json, in QEMU creation order. */
export type SnapshotDevice =
  | { kind: "blk"; role: "rootfs" | "volume"; path: string; readOnly: boolean }
  | { kind: "agent-serial" }
  | { kind: "rng" }
  | { kind: "net"; mode: Exclude<NetworkMode, "none"> }
  | { kind: "vsock"; cid: number };

/** `vm.json` of a snapshot directory (persisted state; `format` is versioned). */
export interface SnapshotManifest {
  format: typeof SNAPSHOT_FORMAT_VERSION;
  backend: string;
  arch: GuestArch;
  machine: string;
  accel: ResolvedAccel;
  memoryMib: number;
  vcpus: number;
  kernelPath: string;
  kernelRelease?: string;
  initrdPath: string;
  cmdline: string;
  devices: SnapshotDevice[];
  /**
   * false: `memory` holds guest RAM and `state` only device state (x-ignore-shared) — restores map `memory`
   * copy-on-write. true: `state` is a full migration stream including RAM (`memory` is a sparse placeholder);
   * produced by snapshotting a restored VM.
   */
  ramInState: boolean;
  qemuVersion?: string;
  createdAt: string;
  stateBytes: number;
}

/** Paths of a snapshot's files (`restore()` accepts a directory or this). */
export interface SnapshotFiles {
  /** vm.json */
  manifest: string;
  state: string;
  memory: string;
}

export interface SnapshotResult {
  dir: string;
  manifest: SnapshotManifest;
  /** Milliseconds: paused (VM not running), device-state migration, memory copy, total. */
  timings: { pausedMs: number; stateMs: number; memoryMs: number; totalMs: number };
}

/** Why a VM's process ended. */
export type VmExitCause =
  /** stop() was called. */
  | "stop"
  /** The guest powered off on its own (not during stop()). error = SM_GUEST_CRASHED. */
  | "guest-shutdown"
  /** Guest kernel panic / reset (panic=-1 + -no-reboot) / GUEST_PANICKED. error = SM_GUEST_CRASHED. */
  | "guest-panic"
  /** QEMU exited or was killed without a guest shutdown (e.g. SIGKILL, crash). error = SM_VMM_CRASHED. */
  | "vmm-crashed";

export interface VmExit {
  cause: VmExitCause;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Set for every cause except "stop". */
  error?: HypervisorError;
  /** Last console lines (read before the runtime dir is removed). */
  consoleTail: string;
}

export interface MemoryStats {
  /** Resident set size of the VMM process. */
  rssBytes: number;
  /** Proportional set size (shared pages divided among sharers); null where the OS does not expose it. */
  pssBytes: number | null;
  pssAnonBytes: number | null;
  pssFileBytes: number | null;
  pssShmemBytes: number | null;
}

export interface StopOptions {
  /**
   * Polite step: ask the guest to power off (e.g. agent `shutdown` RPC). Resolves when the request was sent;
   * the VMM must then exit within `guestShutdownTimeoutMs`. Omit to go straight to QMP quit.
   */
  guestShutdown?: () => Promise<void>;
  guestShutdownTimeoutMs?: number;
  qmpQuitTimeoutMs?: number;
  sigtermTimeoutMs?: number;
}

export interface VmEvents {
  state: [next: VmState, prev: VmState];
  exit: [VmExit];
}

/** A live VM. */
export interface Vm {
  readonly id: string;
  readonly state: VmState;
  /** VMM (QEMU) process id. */
  readonly pid: number;
  readonly arch: GuestArch;
  readonly accel: ResolvedAccel;
  readonly config: ResolvedVmConfig;
  /** Per-VM runtime dir (0700; removed when the VM ends). */
  readonly runtimeDir: string;
  /** Serial console log (inside runtimeDir: copy it before stop if you need it afterwards). */
  readonly consoleLogPath: string;
  /** Unix socket of the agent virtio-serial port (one client at a time; agentStream() manages it). */
  readonly agentSocketPath: string;
  /** Snapshot dir this VM was restored from, if any. */
  readonly restoredFrom?: string;
  /** Set when the last snapshot() of this restored VM could not be compacted (it then has ramInState: true). */
  readonly compactionError?: Error;
  /** Resolves (never rejects) once the VMM process has exited and been reaped and the runtime dir removed. */
  readonly exited: Promise<VmExit>;
  /**
   * A Duplex connected to the guest agent's virtio-serial port. Calling it again closes the previous stream
   * and returns a new one (e.g. after a protocol error). The stream ends when the VM exits.
   */
  agentStream(): Promise<Duplex>;
  /** QMP `stop`: the vCPUs stop and the guest's clock stands still until resume(). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /**
   * SIGSTOP the VMM process: no CPU at all until thaw(); the guest's clock runs on (it follows the
   * host's). For idle VMs; QMP operations and stop() thaw first. Synchronous; SM_VM_STATE unless running.
   */
  freeze(): void;
  /** SIGCONT after freeze(). Idempotent; a no-op once the process is gone. */
  thaw(): void;
  /** True between freeze() and thaw() (or the VMM's exit). */
  readonly frozen: boolean;
  /** Capture to `dir` (must not exist; written atomically via a temp dir + rename). The VM keeps its run state. */
  snapshot(dir: string): Promise<SnapshotResult>;
  /** Escalating stop (guest hook → QMP quit → SIGTERM → SIGKILL). Idempotent; resolves with the exit. */
  stop(options?: StopOptions): Promise<VmExit>;
  memoryStats(): Promise<MemoryStats>;
  /** Last `lines` lines of the serial console. */
  consoleTail(lines?: number): string;
  on<K extends keyof VmEvents>(event: K, listener: (...args: VmEvents[K]) => void): this;
  off<K extends keyof VmEvents>(event: K, listener: (...args: VmEvents[K]) => void): this;
}

/** A VMM pre-started in `-incoming defer` for one snapshot; `start()` only loads state and resumes. */
export interface PreparedRestore {
  readonly id: string;
  readonly pid: number;
  readonly snapshotDir: string;
  /** Load the device state (+ RAM when ramInState) and resume. Single use. */
  start(): Promise<Vm>;
  /** Kill the pre-started process without using it. Idempotent. */
  dispose(): Promise<void>;
}

export interface AccelResolution {
  accel: ResolvedAccel;
  /** Why the requested/hardware accelerator was not used (present on fallback). */
  fallbackReason?: string;
}

/** The backend contract, version 1. */
export interface VmmBackend {
  readonly version: typeof BACKEND_CONTRACT_VERSION;
  /** Short name: "kvm" | "hvf". */
  readonly name: string;
  readonly capabilities: BackendCapabilities;
  /** Resolve an accelerator request on this host (probes and caches for "auto"). */
  resolveAccel(requested?: Accel): Promise<AccelResolution>;
  /** Boot a fresh VM. Resolves once QEMU runs and QMP is connected (not when the guest agent is ready). */
  boot(config: VmConfig): Promise<Vm>;
  /** Restore from a snapshot dir (or its files). Resolves once the guest is running again. */
  restore(snapshot: string | SnapshotFiles, overrides?: RestoreOverrides): Promise<Vm>;
  /** Pre-start a VMM for `snapshot` in `-incoming defer`; call `start()` to finish the restore. */
  prepareRestore(snapshot: string | SnapshotFiles, overrides?: RestoreOverrides): Promise<PreparedRestore>;
  /** Validate and read a snapshot's vm.json (SM_SNAPSHOT_INVALID naming the bad file). */
  readSnapshot(snapshot: string | SnapshotFiles): Promise<SnapshotManifest>;
}
