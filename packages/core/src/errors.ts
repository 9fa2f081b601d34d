/**
 * Errors of @supermachine/core. Match on `err.code`, never on `instanceof`: several copies of the
 * package may be installed side by side. Errors coming from the lower packages (oci, rootfs,
 * hypervisor, agent-protocol, pool) keep their own `code` (e.g. `SM_ACQUIRE_TIMEOUT`,
 * `SM_IMAGE_NOT_FOUND`) and pass through unchanged.
 */

import type { AgentErrorCode } from "@supermachine/agent-protocol";
import { SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";
import type { HypervisorErrorCode } from "@supermachine/hypervisor";
import type { PoolErrorCode } from "@supermachine/pool";

/**
 * Every code this package defines itself (each supermachine code is defined in exactly one package; the
 * codes core raises that a lower package owns are imported below).
 */
export const SUPERMACHINE_ERROR_CODES = [
  /** An option has the wrong type, an unknown key, or an out-of-range value. The message names the field. */
  "SM_INVALID_OPTIONS",
  /** The Vm was released/disposed; acquire a new one from the pool. */
  "SM_VM_RELEASED",
  /**
   * The guest agent did not answer in time (exec: timeoutMs + 15 s; writeFile/readFile/spawn: 90 s): the
   * guest is wedged or overloaded (e.g. a fork bomb). The Vm is out of service; release it, the pool
   * replaces it.
   */
  "SM_GUEST_UNRESPONSIVE",
  /**
   * A snapshot would be written to a directory that supermachine did not write (no metadata.json of
   * format "supermachine-snapshot", e.g. another tool's layout): it is never deleted or replaced.
   * Choose another `name` / `snapshotsDir` (or vm.snapshot destination). `details.dir` names it.
   */
  "SM_SNAPSHOT_FOREIGN",
  /** The bake (boot → ready → warmup → capture) failed; nothing was written under the final name. */
  "SM_BAKE_FAILED",
  /**
   * A host filesystem ran out of space (ENOSPC) or quota (EDQUOT) while a snapshot was written
   * (Image.build, vm.snapshot); nothing partial was kept. `details`: step, errno, dir, freeMib.
   */
  "SM_NO_SPACE",
  /** exec output went over `maxOutputBytes` (default 64 MiB); the command was killed. Use spawn() to stream. */
  "SM_OUTPUT_LIMIT",
  /** The WarmupVm was used after the warmup callback returned. */
  "SM_WARMUP_OVER",
  /** The operation is not available on this object (e.g. vsockPath on a WarmupVm). */
  "SM_UNSUPPORTED",
  /**
   * A pool's memoryMib/vcpus override is above what the snapshot allows (its RAM ceiling / baked vCPU
   * count); the message names the allowed range. Lower it, or re-bake with maxMemoryMib / maxVcpus.
   */
  "SM_POOL_OVERRIDE",
  /**
   * The pool's min/max idle VMs (or one more VM) would not fit in the host's available memory
   * (/proc/meminfo MemAvailable; the estimate per VM is in README "Memory admission"). The message names
   * the memory needed and available; `details`: neededMib, availableMib, perVmMib, count.
   */
  "SM_POOL_MEMORY",
  /** A VM did not restore within restoreTimeoutMs. */
  "SM_RESTORE_TIMEOUT",
  /** A required host component (backend package, agent binary, mke2fs) is missing. */
  "SM_DEPENDENCY_MISSING",
  /** A volume's host file could not be created or formatted, or a guest mount of it failed. */
  "SM_VOLUME_INVALID",
  /**
   * A writable volume would be used by two VMs at once (a pool with max > 1, a second pool, another
   * process): refused, since two guests on one filesystem corrupt it. Use max: 1, or `readOnly: true`.
   */
  "SM_VOLUME_SHARED",
  /** A `mounts` entry is unusable (hostPath missing / not a directory, bad or duplicate tag) or attaching it failed. */
  "SM_MOUNT_INVALID",
  /** The guest agent returned an error for a file or process operation (errno-like code in `agentCode`). */
  "SM_AGENT_ERROR",
] as const;

/** Codes owned by a lower package that core also raises with its own SupermachineError. */
type BorrowedCode =
  /** writeFile/readFile above the 4 MiB cap (agent-protocol's code); use stageFiles in pieces or a volume. */
  | Extract<AgentErrorCode, "SM_FILE_TOO_LARGE">
  /** The guest or its VMM process died while in use; the pool replaces the VM (hypervisor's code). */
  | Extract<HypervisorErrorCode, "SM_GUEST_CRASHED">
  /** A snapshot directory is missing a file, has a wrong size, or an unknown format version (hypervisor's code). */
  | Extract<HypervisorErrorCode, "SM_SNAPSHOT_INVALID">
  /** The pool was shut down (pool's code). */
  | Extract<PoolErrorCode, "SM_POOL_CLOSED">;

/** Every code a SupermachineError carries: core's own and the borrowed ones. */
export type SupermachineErrorCode = (typeof SUPERMACHINE_ERROR_CODES)[number] | BorrowedCode;

/** `{ cause, details }`, as in every supermachine package; `details` holds the field name, file name... */
export type SupermachineErrorOptions = SupermachineErrorBaseOptions;

/**
 * The one error class of @supermachine/core. The shape (`code`, `message`, `cause`, `details`; options
 * `{ cause, details }`) comes from @supermachine/base and is the same in every supermachine package.
 */
export class SupermachineError extends SupermachineErrorBase<SupermachineErrorCode> {
  override readonly name = "SupermachineError";
}

/** Shortcut for the validation errors: always name the field. */
export function invalidOption(field: string, problem: string): SupermachineError {
  return new SupermachineError("SM_INVALID_OPTIONS", `Invalid option \`${field}\`: ${problem}`, {
    details: { field },
  });
}

/** True when `err` carries the given code (works across package copies). */
export function hasCode(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}

/** The first ENOSPC / EDQUOT in an error's `cause` chain (lower packages wrap fs errors), if any. */
export function diskFullErrno(err: unknown): "ENOSPC" | "EDQUOT" | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 8 && typeof e === "object" && e !== null; depth++) {
    const c = (e as { code?: unknown }).code;
    if (c === "ENOSPC" || c === "EDQUOT") return c;
    const d = (e as { details?: { errno?: unknown } }).details?.errno;
    if (d === "ENOSPC" || d === "EDQUOT") return d;
    const m = (e as { message?: unknown }).message;
    if (typeof m === "string" && /\bENOSPC\b|No space left on device/.test(m)) return "ENOSPC";
    if (typeof m === "string" && /\bEDQUOT\b|Disk quota exceeded/.test(m)) return "EDQUOT";
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The `code` of an error-like value, if any. */
export function codeOf(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null) {
    const c = (err as { code?: unknown }).code;
    if (typeof c === "string") return c;
  }
  return undefined;
}
