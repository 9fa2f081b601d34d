/**
 * @supermachine/core — run OCI images as microVMs: bake once, restore from a warm pool.
 * The public API is spec/api.md; everything exported here is listed in exports.test.ts.
 */
import { shareInstanceofAcrossCopies } from "./brand";
import { SupermachineError } from "./errors";
import { Image } from "./image";
import { createDefaultRuntime } from "./runtime";
import { setRuntimeFactory } from "./runtime-port";
import { Vm } from "./vm";

setRuntimeFactory(createDefaultRuntime);
// ESM and CJS copies of core in one process: instanceof accepts either copy's objects (brand.ts).
shareInstanceofAcrossCopies({ Image, Vm, SupermachineError });

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
