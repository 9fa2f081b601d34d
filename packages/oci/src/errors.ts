/**
 * Every error thrown by this package is an `OciError` with a stable string `code`.
 * Match on `err.code`, not on `instanceof` (several copies of the package may be installed).
 */
export type OciErrorCode =
  | "SM_INVALID_REFERENCE"
  | "SM_IMAGE_NOT_FOUND"
  | "SM_REGISTRY_AUTH"
  | "SM_REGISTRY_UNREACHABLE"
  | "SM_REGISTRY_ERROR"
  | "SM_UNSUPPORTED_MEDIA_TYPE"
  | "SM_IMAGE_NOT_CACHED"
  | "SM_DIGEST_MISMATCH"
  | "SM_PLATFORM_NOT_FOUND"
  | "SM_INVALID_IMAGE"
  | "SM_INSECURE_REGISTRY"
  | "SM_OCI_OPTIONS"
  /** No Docker-API daemon (docker, podman) answered on the sockets tried, or it went away mid-request. */
  | "SM_DAEMON_UNREACHABLE"
  /** The Docker-API daemon answered a request with an unexpected error. */
  | "SM_DAEMON_ERROR";

export class OciError extends Error {
  readonly code: OciErrorCode;
  constructor(code: OciErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "OciError";
    this.code = code;
  }
}

export function isOciError(err: unknown, code?: OciErrorCode): err is OciError {
  return (
    typeof err === "object" &&
    err !== null &&
    (err as { name?: unknown }).name === "OciError" &&
    typeof (err as { code?: unknown }).code === "string" &&
    (code === undefined || (err as { code: string }).code === code)
  );
}
