/**
 * Errors of @supermachine/hypervisor (codes documented in README.md). Match on `code`, not instanceof.
 * The shape (`code`, `message`, `cause`, `details`; options `{ cause, details }`) is the same in every
 * supermachine package.
 */
import { codeGuard, SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";

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

/** `{ cause, details }`, as in every supermachine package; `details` holds file paths, console or stderr tails... */
export type HypervisorErrorOptions = SupermachineErrorBaseOptions;

/** The one error class of this package (shape from @supermachine/base). `code` is stable; `message` says what to do. */
export class HypervisorError extends SupermachineErrorBase<HypervisorErrorCode> {
  override readonly name = "HypervisorError";
}

const hypervisorGuard = codeGuard(HYPERVISOR_ERROR_CODES);

/**
 * True when `err` carries one of this package's codes (optionally the given one). Matches on the code only,
 * so it works across package copies and for the same code re-raised by a package built on this one.
 */
export function isHypervisorError(err: unknown, code?: HypervisorErrorCode): err is HypervisorError {
  return hypervisorGuard(err, code);
}
