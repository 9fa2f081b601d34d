/**
 * @supermachine/core — run OCI images as microVMs: bake once, restore from a warm pool.
 * The public API is spec/api.md; everything exported here is listed in exports.test.ts.
 */
import { createDefaultRuntime } from "./runtime";
import { setRuntimeFactory } from "./runtime-port";

setRuntimeFactory(createDefaultRuntime);

export type { SupermachineErrorCode } from "./errors";
export { SupermachineError } from "./errors";
export { Image } from "./image";
export type { Pool } from "./pool";
export type {
  Accelerator,
  AcquireOptions,
  BuildOptions,
  BuildProgress,
  ExecChild,
  ExecExit,
  ExecOptions,
  ExecOutput,
  ExtraFile,
  ImageSource,
  MountSpec,
  NetworkMode,
  PoolOptions,
  PoolStats,
  StagedFile,
  SymlinkPolicy,
  TcpForwarder,
  VolumeSpec,
  WarmupVm,
} from "./types";
export { Vm } from "./vm";
export const PACKAGE_NAME = "@supermachine/core";
export { type NetworkBlockedEvent, onNetworkBlocked } from "./network/egress";
