/** Stable error codes of @supermachine/rootfs. Users match on `code`, never on `instanceof`. */
export type RootfsErrorCode =
  /** A layer is not a valid tar stream (malformed header, truncated data or compression) or an entry is unsafe. */
  | "SM_LAYER_INVALID"
  /** A file or symlink name exceeds squashfs limits (256 bytes per name component). */
  | "SM_NAME_TOO_LONG"
  /** Too many distinct uids/gids (> 65536) or another squashfs format limit. */
  | "SM_SQUASHFS_LIMIT"
  /** Bad options passed to buildRootfs / buildInitramfs (unknown key, bad block size, bad extra file). */
  | "SM_ROOTFS_CONFIG"
  /** A kernel module (or its dependency) is not in the modules directory. */
  | "SM_MODULE_NOT_FOUND"
  /** A kernel module is compressed in a format this package cannot decompress. */
  | "SM_MODULE_COMPRESSED"
  /** Kernel module dependencies form a cycle, or a module file is not a (little-endian ELF64) module. */
  | "SM_MODULE_INVALID"
  /** Writing the output or the spool failed (disk full, permissions). */
  | "SM_ROOTFS_IO";

export class RootfsError extends Error {
  readonly code: RootfsErrorCode;
  /** For SM_LAYER_INVALID: the digest of the offending layer. */
  readonly layer?: string;
  /** For SM_LAYER_INVALID / SM_NAME_TOO_LONG: the offending entry path. */
  readonly entry?: string;
  /** For SM_MODULE_*: the kernel module's name (the missing one for SM_MODULE_NOT_FOUND). */
  readonly module?: string;

  constructor(
    code: RootfsErrorCode,
    message: string,
    opts: { cause?: unknown; layer?: string; entry?: string; module?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "RootfsError";
    this.code = code;
    if (opts.layer !== undefined) this.layer = opts.layer;
    if (opts.entry !== undefined) this.entry = opts.entry;
    if (opts.module !== undefined) this.module = opts.module;
  }
}

export function isRootfsError(err: unknown): err is RootfsError {
  return (
    typeof err === "object" &&
    err !== null &&
    typeof (err as { code?: unknown }).code === "string" &&
    (err as { name?: unknown }).name === "RootfsError"
  );
}
