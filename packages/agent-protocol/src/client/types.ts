/**
 * The public types of AgentClient: options, call options, op specs and results, events.
 */
import type { AgentError } from "../errors";
/** Connection state of an AgentClient. */
export type AgentClientState = "idle" | "connecting" | "connected" | "closed" | "failed";

export interface AgentClientOptions {
  /** Largest frame we accept, bytes; MIN_MAX_FRAME..MAX_FRAME (default 5 MiB). */
  maxFrame?: number;
  /** Receive window we grant per channel, bytes; MIN_WINDOW..MAX_WINDOW (default 256 KiB). */
  window?: number;
  /** Handshake deadline, ms (default 10000). */
  helloTimeoutMs?: number;
  /** Hello resend period, ms (default 200). */
  helloResendMs?: number;
  /** Version text sent as `host` in hello (default: this package's version). */
  hostVersion?: string;
  /** highWaterMark of the Readable/Writable streams handed out, bytes (default 64 KiB). */
  streamHighWaterMark?: number;
}

/** Per-call options accepted by every request method. */
export interface CallOptions {
  /** Rejects the call with SM_AGENT_ABORTED (and cancels the work in the guest where possible). */
  signal?: AbortSignal | undefined;
  /** Host-side deadline for the answer, ms; SM_AGENT_TIMEOUT when it passes. 0/undefined = none. */
  timeoutMs?: number | undefined;
}

/** What the agent said in its hello answer (SPEC §4.2). */
export interface AgentHello {
  protocolVersion: number;
  agentVersion: string;
  caps: string[];
  maxFrame: number;
  window: number;
  ready: boolean;
  listening: number | null;
  bootMs: number;
}

export interface CommandSpec {
  argv: string[];
  env?: Record<string, string> | undefined;
  cwd?: string | undefined;
  user?: string | undefined;
}
export interface StageFileSpec {
  path: string;
  data: Uint8Array;
  mode?: number | undefined;
}
export interface ProcessSpec extends CommandSpec {
  /** Files written before the command starts (SPEC §6). */
  stage?: StageFileSpec[] | undefined;
  /** Run after argv only if it exits 0 (SPEC §6.1). */
  chain?: CommandSpec | null | undefined;
  tty?: boolean | undefined;
  winsize?: { cols: number; rows: number } | undefined;
}
export interface ExecSpec extends ProcessSpec {
  /** Guest-side kill timeout for the process group, ms; 0/undefined = none. */
  timeoutMs?: number | undefined;
  /**
   * Host-side cap on collected stdout + stderr, bytes (default: none). When exceeded the process
   * group is killed and the call rejects with SM_AGENT_OUTPUT_LIMIT. Set it for untrusted guests.
   */
  maxOutputBytes?: number | undefined;
}
export interface ExecResult {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  peakRssKib: number;
  stdout: Buffer;
  stderr: Buffer;
}
export interface ExitInfo {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  peakRssKib: number;
}
export interface ExitEvent extends ExitInfo {
  pid: number;
}
export interface AgentStats {
  memTotalKib: number;
  memAvailKib: number;
  uptimeMs: number;
  /** 1-minute load average × 1000. */
  loadAvg1Milli: number;
}
/** A live host share to attach (SPEC §6.4). */
export interface FsAttachSpec {
  /** 1..35 characters of [A-Za-z0-9._-], not "." or ".."; unique among attached shares. */
  tag: string;
  /** Absolute guest path where the share is also bind-mounted (created if missing). */
  path?: string | undefined;
}
export interface ResumeSpec {
  /** Unix epoch time in ns (default: now). */
  timeNs?: bigint | undefined;
  /** 32..512 random bytes (default: 64 fresh bytes). */
  entropy?: Uint8Array | undefined;
}
export interface WriteFileOptions extends CallOptions {
  /** File mode (default 0o644). */
  mode?: number | undefined;
  /** Create parent directories (default true). */
  mkdirs?: boolean | undefined;
}

/** Typed events of AgentClient. */
export interface AgentClientEvents {
  ready: [{ bootMs: number }];
  listening: [{ port: number }];
  exit: [ExitEvent];
  "workload-exit": [{ exitCode: number; signal: number | null }];
  /** A guest process connects to addr:port (SPEC §6.5); answer with dialAccept or dialRefuse. */
  dial: [{ id: number; addr: string; port: number }];
  /** A DNS query reached the guest's stub (SPEC §6.5); answer with dnsAnswer (or not at all). */
  dns: [{ id: number; q: Buffer }];
  state: [AgentClientState];
  /** The session failed (protocol violation or transport loss); always emitted, never throws. */
  failed: [AgentError];
  /** Same as `failed`, only emitted when someone listens for it. */
  error: [AgentError];
}
