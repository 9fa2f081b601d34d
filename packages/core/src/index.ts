/**
 * @supermachine/core — run OCI images as microVMs: bake once, restore from a warm pool.
 * The public API is the README's "API" section; everything exported here is listed in exports.test.ts.
 * Internals (handles, runtime, validation, share server, test fakes) are imported from their files.
 */
import { shareInstanceofAcrossCopies } from "./brand";
import { SupermachineError } from "./errors";
import { ExecChild } from "./exec-child";
import { TcpForwarder } from "./forwarder";
import { Image } from "./image";
import { Pool } from "./pool-facade";
import { createDefaultRuntime } from "./runtime";
import { setRuntimeFactory } from "./runtime-port";
import { Vm } from "./vm";

setRuntimeFactory(createDefaultRuntime);
// ESM and CJS copies of core in one process: instanceof accepts either copy's objects (brand.ts).
shareInstanceofAcrossCopies({ Image, Pool, Vm, ExecChild, TcpForwarder, SupermachineError });

export type { SupermachineErrorCode } from "./errors";
export { SupermachineError } from "./errors";
export { ExecChild } from "./exec-child";
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
export { Vm } from "./vm";
export const PACKAGE_NAME = "@supermachine/core";
export { type NetworkBlockedEvent, onNetworkBlocked } from "./network/egress";
