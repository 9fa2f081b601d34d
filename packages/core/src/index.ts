/**
 * @supermachine/core — run OCI images as microVMs: bake once, restore from a warm pool.
 * The public API is spec/api.md; everything exported here is listed in exports.test.ts.
 */
import { createDefaultRuntime } from "./runtime";
import { setRuntimeFactory } from "./runtime-port";

setRuntimeFactory(createDefaultRuntime);

export type { SupermachineErrorCode } from "./errors";
export { SupermachineError } from "./errors";
export { TcpForwarder } from "./forwarder";
export { Image } from "./image";
export { Pool } from "./pool-facade";
export type {
  Accelerator,
  AcquireOptions,
  BuildOptions,
  BuildProgress,
  ExecChain,
  ExecExit,
  ExecOptions,
  ExecOutput,
  ExecWaitResult,
  ExtraFile,
  ExtraFileSpec,
  ImageSource,
  MountSpec,
  NetworkMode,
  PoolOptions,
  PoolStats,
  StagedFile,
  StagedFileMode,
  SymlinkPolicy,
  VolumeSpec,
  WarmupVm,
  Winsize,
} from "./types";
export { ExecChild, Vm } from "./vm";
export const PACKAGE_NAME = "@supermachine/core";
