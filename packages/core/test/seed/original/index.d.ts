/**
 * The published declarations of the ORIGINAL @supermachine/core (0.4.25 plus the 0.7.1 additions),
 * written out member by member from a description of that surface. This file is the record of the
 * original's surface in this repository; nothing else is needed to read it. Not our API: the compatibility test
 * (src/seed-compat.test.ts) compiles programs written against this file and checks that they compile
 * unchanged against ours. Shapes follow napi-rs output: classes without a callable constructor,
 * optional inputs `T | undefined | null` where the surface says so.
 */
/// <reference types="node" />

export interface ExtraFileSpec {
  hostPath: string;
  guestPath: string;
}

export interface MountSpec {
  hostPath: string;
  guestTag: string;
  /** "deny" | "opaque" | "follow"; default "opaque" */
  symlinks?: string;
}

export interface VolumeSpec {
  hostPath: string;
  guestPath: string;
  sizeMib?: number;
}

export interface WarmupVm {
  exec(options: ExecOptions): Promise<ExecOutput>;
}

export interface BuildOptions {
  ref: string;
  name?: string;
  memoryMib?: number;
  vcpus?: number;
  /** "always" | "missing" | "never" */
  pullPolicy?: string;
  guestPort?: number;
  cmd?: Array<string>;
  env?: Record<string, string>;
  listenerRequired?: boolean;
  snapshotsDir?: string;
  extraFiles?: Array<ExtraFileSpec>;
  warmupTag?: string;
  warmup?: (vm: WarmupVm) => Promise<void>;
  mounts?: Array<MountSpec>;
  volumes?: Array<VolumeSpec>;
  extraKernelArgs?: Array<string>;
}

export interface PoolOptions {
  min?: number;
  max?: number;
  acquireTimeoutMs?: number;
  idleTimeoutMs?: number;
  restoreOnRelease?: boolean;
  memoryMib?: number;
  vcpus?: number;
  restoreTimeoutMs?: number;
}

export interface PoolStats {
  alive: number;
  inUse: number;
  idle: number;
  waiting: number;
  min: number;
  max: number;
}

export interface StagedFileMode {
  guestPath: string;
  bytes: Buffer;
  mode?: number | null;
}

export interface Winsize {
  cols: number;
  rows: number;
}

export interface ExecOptions {
  argv: Array<string>;
  stageFiles?: Record<string, Buffer>;
  stageFilesMode?: Array<StagedFileMode>;
  timeoutMs?: number;
  env?: Record<string, string>;
  cwd?: string;
  chain?: Array<string>;
  tty?: boolean;
  winsize?: Winsize;
}

export interface ExecOutput {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

export interface ExecWaitResult {
  exitCode: number;
  timedOut: boolean;
  peakRssKib?: number;
}

export declare class Image {
  private constructor();
  static build(options: BuildOptions): Promise<Image>;
  static fromSnapshot(path: string): Promise<Image>;
  pool(options?: PoolOptions | undefined | null): Promise<Pool>;
  get snapshotPath(): string;
  get memoryMib(): number;
  get vcpus(): number;
}

export declare class Pool {
  private constructor();
  acquire(): Promise<Vm>;
  shutdown(): Promise<void>;
  stats(): PoolStats;
}

export declare class Vm {
  private constructor();
  exec(options: ExecOptions): Promise<ExecOutput>;
  spawn(options: ExecOptions): Promise<ExecChild>;
  release(): Promise<void>;
  dispose(): Promise<void>;
  writeFile(path: string, bytes: Buffer): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  snapshot(destDir: string): Promise<Image>;
  workloadSignal(signum: number): Promise<void>;
  exposeTcp(hostPort: number, guestPort: number): Promise<TcpForwarder>;
  get vsockPath(): string;
  get execPath(): string;
}

export declare class ExecChild {
  private constructor();
  writeStdin(bytes: Buffer): Promise<void>;
  closeStdin(): Promise<void>;
  readStdout(maxBytes?: number | undefined | null): Promise<Buffer>;
  readStderr(maxBytes?: number | undefined | null): Promise<Buffer>;
  resize(cols: number, rows: number): Promise<void>;
  signal(signum: number): Promise<void>;
  wait(): Promise<ExecWaitResult>;
}

export declare class TcpForwarder {
  private constructor();
  get localAddr(): string;
  stop(): Promise<void>;
}
