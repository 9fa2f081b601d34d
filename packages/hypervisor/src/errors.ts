/** Stable error codes of @supermachine/hypervisor (documented in README.md). Match on `code`, not instanceof. */
export type HypervisorErrorCode =
  | "SM_VMM_NOT_FOUND"
  | "SM_VMM_START"
  | "SM_VMM_CONFIG"
  | "SM_KERNEL_NOT_FOUND"
  | "SM_KERNEL_FORMAT"
  | "SM_GUEST_CRASHED"
  | "SM_VMM_CRASHED"
  | "SM_SNAPSHOT_INVALID"
  | "SM_VM_STATE"
  | "SM_QMP"
  | "SM_TIMEOUT";

/** The one error class of this package. `code` is stable; `message` says what to do. */
export class HypervisorError extends Error {
  readonly code: HypervisorErrorCode;
  /** Extra machine-readable context (file path, console tail, stderr tail...). */
  readonly details: Record<string, unknown>;

  constructor(
    code: HypervisorErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HypervisorError";
    this.code = code;
    this.details = options?.details ?? {};
  }
}

/** True when `err` carries the given supermachine hypervisor error code (works across package copies). */
export function isHypervisorError(err: unknown, code?: HypervisorErrorCode): err is HypervisorError {
  if (typeof err !== "object" || err === null) return false;
  const c = (err as { code?: unknown }).code;
  if (typeof c !== "string" || !c.startsWith("SM_")) return false;
  return code === undefined || c === code;
}
