export type { ProbeResult } from "./accel";
export { cachedProbe, isPvmHost, kvmPrecheck, probeAccelBoot } from "./accel";
export type { MachineProfile, QemuLaunchSpec } from "./argv";
export { baseCmdline, buildQemuArgv, devicesFor, qemuEscape } from "./argv";
export { validateVmConfig } from "./config";
export {
  BACKEND_CONTRACT_VERSION,
  MIGRATION_TIMEOUT_MS,
  QMP_COMMAND_TIMEOUT_MS,
  SNAPSHOT_FORMAT_VERSION,
  STOP_GUEST_SHUTDOWN_TIMEOUT_MS,
  STOP_QMP_QUIT_TIMEOUT_MS,
  STOP_SIGKILL_TIMEOUT_MS,
  STOP_SIGTERM_TIMEOUT_MS,
} from "./constants";
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
  readBundleJson,
  resolveKernelBundle,
  VSOCK_GUEST_MODULES,
} from "./kernel";
export { lz4DecodeBlock, lz4DecodeLegacy } from "./lz4";
export { PACKAGE_NAME } from "./package-name";
export type { GuestArch } from "./paths";
export { cacheRoot, hostArch } from "./paths";
export { findExecutable } from "./process";
export type { QmpEvent } from "./qmp";
export { QmpClient } from "./qmp";
export {
  defaultRuntimeRoot,
  markExitCleanupListener,
  onlyExitCleanupListeners,
  sweepStaleRuntimeDirs,
} from "./runtime";
export { MANIFEST_FILE, MEMORY_FILE, readSnapshotManifest, STATE_FILE } from "./snapshot-files";
export { bzImageToVmlinux, ensureVmlinux, findPvhEntry, parseBzImage } from "./vmlinux";
