/**
 * Errors of @supermachine/rootfs. Users match on `code`, never on `instanceof`. The shape (`code`,
 * `message`, `cause`, `details`; options `{ cause, details }`) is the same in every supermachine package.
 */
import { codeGuard, SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";

/** Every code this package defines (each supermachine code is defined in exactly one package). */
export const ROOTFS_ERROR_CODES = [
  /** A layer is not a valid tar stream (malformed header, truncated data or compression) or an entry is unsafe. */
  "SM_LAYER_INVALID",
  /** A file or symlink name exceeds squashfs limits (256 bytes per name component). */
  "SM_NAME_TOO_LONG",
  /** Too many distinct uids/gids (> 65536) or another squashfs format limit. */
  "SM_SQUASHFS_LIMIT",
  /** Bad options passed to buildRootfs / buildInitramfs (unknown key, bad block size, bad extra file). */
  "SM_ROOTFS_CONFIG",
  /** A kernel module (or its dependency) is not in the modules directory. */
  "SM_MODULE_NOT_FOUND",
  /** A kernel module is compressed in a format this package cannot decompress. */
  "SM_MODULE_COMPRESSED",
  /** Kernel module dependencies form a cycle, or a module file is not a (little-endian ELF64) module. */
  "SM_MODULE_INVALID",
  /** Writing the output or the spool failed (disk full, permissions). */
  "SM_ROOTFS_IO",
] as const;

export type RootfsErrorCode = (typeof ROOTFS_ERROR_CODES)[number];

/** `{ cause, details }`, as in every supermachine package. */
export type RootfsErrorOptions = SupermachineErrorBaseOptions;

/**
 * The one error class of this package (its shape comes from @supermachine/base). `details` may hold
 * `layer` (SM_LAYER_INVALID: the offending layer's digest), `entry` (SM_LAYER_INVALID / SM_NAME_TOO_LONG:
 * the offending entry path) and `module` (SM_MODULE_*: the module's name).
 */
export class RootfsError extends SupermachineErrorBase<RootfsErrorCode> {
  override readonly name = "RootfsError";

  /** `details.layer`: for SM_LAYER_INVALID, the digest of the offending layer. */
  get layer(): string | undefined {
    return this.details.layer as string | undefined;
  }
  /** `details.entry`: for SM_LAYER_INVALID / SM_NAME_TOO_LONG, the offending entry path. */
  get entry(): string | undefined {
    return this.details.entry as string | undefined;
  }
  /** `details.module`: for SM_MODULE_*, the kernel module's name (the missing one for SM_MODULE_NOT_FOUND). */
  get module(): string | undefined {
    return this.details.module as string | undefined;
  }
}

const rootfsGuard = codeGuard(ROOTFS_ERROR_CODES, "RootfsError");

/** True for a RootfsError (from any copy of this package), optionally with the given code. */
export function isRootfsError(err: unknown, code?: RootfsErrorCode): err is RootfsError {
  return rootfsGuard(err, code);
}
