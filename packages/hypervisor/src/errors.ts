/**
 * Errors of @supermachine/hypervisor (codes documented in README.md). Match on `code`, not instanceof.
 * The shape (`code`, `message`, `cause`, `details`; options `{ cause, details }`) is the same in every
 * supermachine package.
 */

/** Every code this package defines (each supermachine code is defined in exactly one package). */
export const HYPERVISOR_ERROR_CODES = [
  "SM_VMM_NOT_FOUND",
  "SM_VMM_START",
  "SM_VMM_CONFIG",
  "SM_KERNEL_NOT_FOUND",
  "SM_KERNEL_FORMAT",
  "SM_GUEST_CRASHED",
  "SM_VMM_CRASHED",
  "SM_SNAPSHOT_INVALID",
  "SM_VM_STATE",
  "SM_QMP",
  "SM_TIMEOUT",
] as const;

export type HypervisorErrorCode = (typeof HYPERVISOR_ERROR_CODES)[number];

export interface HypervisorErrorOptions {
  cause?: unknown;
  /** Extra machine-readable context (file path, console tail, stderr tail...). */
  details?: Record<string, unknown>;
}

/** The one error class of this package. `code` is stable; `message` says what to do. */
export class HypervisorError extends Error {
  override readonly name = "HypervisorError";
  readonly code: HypervisorErrorCode;
  /** Extra machine-readable context (empty when there is none). */
  readonly details: Record<string, unknown>;

  constructor(code: HypervisorErrorCode, message: string, options: HypervisorErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

/**
 * True when `err` carries one of this package's codes (optionally the given one). Matches on the code only,
 * so it works across package copies and for the same code re-raised by a package built on this one.
 */
export function isHypervisorError(err: unknown, code?: HypervisorErrorCode): err is HypervisorError {
  if (typeof err !== "object" || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return (HYPERVISOR_ERROR_CODES as readonly unknown[]).includes(c) && (code === undefined || c === code);
}
