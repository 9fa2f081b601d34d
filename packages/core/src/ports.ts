/**
 * The narrow interfaces core programs against, one per lower package. `runtime.ts` adapts the real
 * packages to them; unit tests substitute test doubles. Keeping them here means a change in a lower
 * package's API touches one adapter, not the Image/Vm/Pool logic.
 */
import type { Duplex, Readable, Writable } from "node:stream";
import type { EgressPort } from "./network/egress";

/** Result of the agent's collect-mode `exec` (SPEC 6.1), output already concatenated. */
export interface AgentExecResult {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  peakRssKib: number;
  stdout: Buffer;
  stderr: Buffer;
}

export interface AgentExecArgs {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  stage: { path: string; data: Buffer; mode: number }[];
  timeoutMs: number;
  chain: { argv: string[]; env?: Record<string, string>; cwd?: string } | null;
  tty: boolean;
  cols: number;
  rows: number;
  /** exec only: host-side cap on collected stdout + stderr (SM_AGENT_OUTPUT_LIMIT above it). */
  maxOutputBytes?: number;
  /** Host-side deadline for the agent's answer (exec: the result; spawn: the start), SM_AGENT_TIMEOUT after it. */
  answerTimeoutMs?: number;
}

export interface AgentChild {
  pid: number;
  /** Streams are created lazily on first access (an unread stream is drained by wait()). */
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly stdin: Writable;
  /** Pull-style access without creating streams. */
  readStdout(maxBytes: number): Promise<Buffer>;
  readStderr(maxBytes: number): Promise<Buffer>;
  writeStdin(data: Buffer): Promise<void>;
  closeStdin(): Promise<void>;
  wait(): Promise<{ exitCode: number; signal: number | null; timedOut: boolean; peakRssKib: number }>;
  signal(signum: number): Promise<void>;
  resize(cols: number, rows: number): Promise<void>;
}

export interface AgentHelloInfo {
  agentVersion: string;
  caps: string[];
  ready: boolean;
  listening: number | null;
  bootMs: number;
}

/** One established agent session (SPEC.md). */
export interface AgentPort {
  readonly hello: AgentHelloInfo;
  exec(args: AgentExecArgs): Promise<AgentExecResult>;
  spawn(args: Omit<AgentExecArgs, "timeoutMs">): Promise<AgentChild>;
  /** `answerTimeoutMs`: host-side deadline for the answer (SM_AGENT_TIMEOUT after it). */
  writeFile(path: string, data: Buffer, mode: number, answerTimeoutMs?: number): Promise<void>;
  readFile(path: string, answerTimeoutMs?: number): Promise<{ data: Buffer; mode: number }>;
  workloadSignal(signum: number): Promise<void>;
  tcpConnect(port: number): Promise<Duplex>;
  /** Attach a live host share (SPEC §6.4): the guest mounts it; the Duplex carries raw FUSE messages. */
  fsAttach(tag: string, path?: string): Promise<Duplex>;
  /** Unmount every mount of the share in the guest and drop its FUSE connection. */
  fsDetach(tag: string): Promise<void>;
  resume(timeNs: bigint, entropy: Buffer): Promise<void>;
  ping(): Promise<void>;
  shutdown(): Promise<void>;
  /** Resolves at the `ready` event (or at once when hello said ready). */
  waitReady(timeoutMs: number): Promise<void>;
  /** Resolves once guestPort was seen listening. */
  waitListening(timeoutMs: number): Promise<void>;
  /** Called once when the session dies (transport closed, protocol error). */
  onLost(cb: (err: Error) => void): void;
  /** Called once when the image's workload exits (agent `workload-exit`), at once if it already did. */
  onWorkloadExit?(cb: (e: { exitCode: number; signal: number | null }) => void): void;
  /** Guest egress (SPEC 6.5); undefined when the agent lacks the `egress` cap. */
  readonly egress?: EgressPort | undefined;
  close(): void;
}

export interface VolumeAttachment {
  hostPath: string;
  readOnly?: boolean;
}

export interface BootSpec {
  kernelDir: string | undefined;
  initramfsPath: string;
  rootfsPath: string;
  memoryMib: number;
  vcpus: number;
  volumes: VolumeAttachment[];
  network: "none" | "nat";
  extraKernelArgs: string[];
  accel: "auto" | "kvm" | "hvf" | "tcg";
}

export interface RestoreSpec {
  snapshotDir: string;
  /** Backend data recorded at snapshot time. */
  backendState: Record<string, unknown>;
  rootfsPath: string;
  initramfsPath: string;
  kernelDir: string | undefined;
  volumes: VolumeAttachment[];
  memoryMib: number;
  vcpus: number;
  accel: "auto" | "kvm" | "hvf" | "tcg";
}

/** A running VM as the backend exposes it. */
export interface LiveVmPort {
  readonly pid: number | undefined;
  readonly runtimeDir: string;
  /** Host-side path of the agent transport socket (virtio-serial chardev, or hybrid vsock UDS). */
  readonly agentSocketPath: string;
  readonly accel: string;
  /** The guest serial console log (the workload's stdout/stderr go there). */
  readonly consoleLogPath?: string;
  /** Resolves when the VMM process is gone (crash or stop) with a description. */
  readonly exited: Promise<{ expected: boolean; error?: Error }>;
  agentStream(): Promise<Duplex>;
  /** Pause, write device state + memory into dir, resume. Returns backend data for metadata. */
  snapshot(dir: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
  /** Synchronous SIGKILL + runtime dir removal, for process-exit cleanup. */
  killSync(): void;
  /** Last lines of the guest serial console (for error messages). */
  consoleTail?(lines?: number): string;
  /** Memory usage of the VMM process (PSS when available). */
  memory?(): Promise<{ rssBytes: number; pssBytes?: number }>;
  /**
   * Stop the whole VMM process (SIGSTOP): an idle pooled VM then costs no CPU at all (idle.ts). The
   * guest's clock runs on (it follows the host's). Synchronous; throws when the VMM is gone. Optional:
   * a backend without freeze/thaw never has its VMs frozen.
   */
  freeze?(): void;
  /** Continue the VMM after freeze() (SIGCONT). Idempotent; a no-op once the process is gone. */
  thaw?(): void;
  /**
   * Synchronous liveness check of the VMM process: false once it is gone or a zombie, even before its
   * exit was observed (`exited`). Lets a pool never hand out a VM killed while idle.
   */
  alive?(): boolean;
}

/** A pre-started VMM waiting for the state (pays only the incoming part on use). */
export interface PreparedRestorePort {
  restore(): Promise<LiveVmPort>;
  discard(): Promise<void>;
  /** Synchronous SIGKILL for process-exit cleanup. */
  killSync?(): void;
}

export interface BackendPort {
  readonly name: string;
  readonly version: string;
  boot(spec: BootSpec): Promise<LiveVmPort>;
  restore(spec: RestoreSpec): Promise<LiveVmPort>;
  prepareRestore?(spec: RestoreSpec): Promise<PreparedRestorePort>;
}
