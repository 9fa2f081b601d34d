/**
 * Every error thrown by this package is an `OciError` with a stable string `code`.
 * Match on `err.code`, not on `instanceof` (several copies of the package may be installed).
 * The shape (`code`, `message`, `cause`, `details`; options `{ cause, details }`) is the same in every
 * supermachine package.
 */
import { codeGuard, SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";

/** Every code this package defines (each supermachine code is defined in exactly one package). */
export const OCI_ERROR_CODES = [
  "SM_INVALID_REFERENCE",
  "SM_IMAGE_NOT_FOUND",
  "SM_REGISTRY_AUTH",
  "SM_REGISTRY_UNREACHABLE",
  "SM_REGISTRY_ERROR",
  "SM_UNSUPPORTED_MEDIA_TYPE",
  "SM_IMAGE_NOT_CACHED",
  "SM_DIGEST_MISMATCH",
  "SM_PLATFORM_NOT_FOUND",
  "SM_INVALID_IMAGE",
  "SM_INSECURE_REGISTRY",
  "SM_OCI_OPTIONS",
  /** No Docker-API daemon (docker, podman) answered on the sockets tried, or it went away mid-request. */
  "SM_DAEMON_UNREACHABLE",
  /** The Docker-API daemon answered a request with an unexpected error. */
  "SM_DAEMON_ERROR",
] as const;

export type OciErrorCode = (typeof OCI_ERROR_CODES)[number];

/** `{ cause, details }`, as in every supermachine package. */
export type OciErrorOptions = SupermachineErrorBaseOptions;

/** The one error class of this package (its shape comes from @supermachine/base). */
export class OciError extends SupermachineErrorBase<OciErrorCode> {
  override readonly name = "OciError";
}

const ociGuard = codeGuard(OCI_ERROR_CODES, "OciError");

/** True for an OciError (from any copy of this package), optionally with the given code. */
export function isOciError(err: unknown, code?: OciErrorCode): err is OciError {
  return ociGuard(err, code);
}
