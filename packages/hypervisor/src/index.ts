export type { GuestArch } from "@supermachine/base";
export { cacheRoot, hostArch } from "@supermachine/base";
export type { ProbeResult } from "./accel";
export { cachedProbe, isPvmHost, kvmPrecheck } from "./accel";
export type { MachineProfile, QemuLaunchSpec } from "./argv";
export { BACKEND_CONTRACT_VERSION, SNAPSHOT_FORMAT_VERSION } from "./constants";
export type {
  Accel,
  AccelResolution,
  BackendCapabilities,
  MemoryStats,
  NetworkMode,
  PreparedRestore,
  ResolvedAccel,
  ResolvedVmConfig,
  RestoreOverrides,
  SnapshotDevice,
  SnapshotFiles,
  SnapshotManifest,
  SnapshotResult,
  StopOptions,
  Vm,
  VmConfig,
  VmEvents,
  VmExit,
  VmExitCause,
  VmmBackend,
  VmState,
  VolumeConfig,
} from "./contract";
export type { QemuBackendOptions } from "./driver";
export { createQemuBackend } from "./driver";
export type { HypervisorErrorCode, HypervisorErrorOptions } from "./errors";
export { HYPERVISOR_ERROR_CODES, HypervisorError, isHypervisorError } from "./errors";
export type { KernelBundle, PruneOptions, ResolveKernelOptions } from "./kernel";
export {
  BASE_GUEST_MODULES,
  listCachedBundles,
  NET_GUEST_MODULES,
  pruneKernelCache,
  resolveKernelBundle,
  VSOCK_GUEST_MODULES,
} from "./kernel";
export { PACKAGE_NAME } from "./package-name";
export { findExecutable } from "./process";
export type { QmpEvent } from "./qmp";
export { QmpClient } from "./qmp";
export { defaultRuntimeRoot, markExitCleanupListener, onlyExitCleanupListeners } from "./runtime";
export { ensureVmlinux } from "./vmlinux";
