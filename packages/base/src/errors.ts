/**
 * The one error shape of every supermachine package: each package's error class extends
 * `SupermachineErrorBase` with its own code union and `name`, and its `is<Pkg>Error` guard is made by
 * `codeGuard` from its own code list. Users match on `err.code`, never on `instanceof` (several copies of a
 * package may be installed side by side).
 */

/** Constructor options of every supermachine error class. */
export interface SupermachineErrorBaseOptions {
  /** The underlying error; set as the standard `cause` (absent, not `undefined`, when not given). */
  cause?: unknown;
  /** Extra machine-readable context (field name, file path, digest...); `{}` when not given. */
  details?: Record<string, unknown>;
}

/**
 * The base class of every supermachine package's error class: a stable string `code` (one of the package's
 * codes), a `message` that says what to do, the standard `cause`, and `details` (always an object). A
 * package's class adds only its `name` (e.g. `override readonly name = "PoolError"`) and, where it has
 * package-specific fields, getters that read them from `details`.
 */
export class SupermachineErrorBase<Code extends string = string> extends Error {
  readonly code: Code;
  /** Extra machine-readable context (empty when there is none). */
  readonly details: Record<string, unknown>;

  constructor(code: Code, message: string, options: SupermachineErrorBaseOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

/**
 * A guard that is true when `err` carries one of `codes` (optionally exactly `code`). With `name`, the
 * error's `name` must also be that (a package's own class, from any copy of the package); without it the
 * code alone decides (so it also matches the same code re-raised by a package built on the owner).
 */
export function codeGuard<Code extends string>(
  codes: readonly Code[],
  name?: string,
): (err: unknown, code?: Code) => boolean {
  const own: readonly unknown[] = codes;
  return (err, code) => {
    if (typeof err !== "object" || err === null) return false;
    if (name !== undefined && (err as { name?: unknown }).name !== name) return false;
    const c = (err as { code?: unknown }).code;
    return own.includes(c) && (code === undefined || c === code);
  };
}
