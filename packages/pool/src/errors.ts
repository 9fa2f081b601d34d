import { codeGuard, SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";
import type { PoolStats } from "./types";

/**
 * Errors of @supermachine/pool. Match on `error.code`, not on `instanceof` (several copies of this package
 * may be installed side by side). The shape (`code`, `message`, `cause`, `details`; options
 * `{ cause, details }`) is the same in every supermachine package.
 */

/** Every code this package defines (each supermachine code is defined in exactly one package). */
export const POOL_ERROR_CODES = [
  /** An option is invalid; `details.field` (also `field`) names it. */
  "SM_POOL_CONFIG",
  /** `acquire()`/`add()` after `drain()` or `shutdown()`; also how waiters are rejected by `shutdown()`. */
  "SM_POOL_CLOSED",
  /** No resource became available within `acquireTimeoutMs`; `details.stats` (also `stats`) holds the counters then. */
  "SM_ACQUIRE_TIMEOUT",
  /** The acquire's AbortSignal fired before a resource was handed out; `cause` is the signal's reason. */
  "SM_ACQUIRE_ABORTED",
  /** `release()`/`destroy()` of a value this pool never handed out. */
  "SM_POOL_FOREIGN",
  /** `release()`/`destroy()` of a resource that is not checked out (already released or destroyed). */
  "SM_POOL_DOUBLE_RELEASE",
  /** `create` kept failing (`createRetries` + 1 attempts); `cause` is the last failure. */
  "SM_CREATE_FAILED",
  /** One `create` attempt exceeded `createTimeoutMs` (seen as the `cause` of SM_CREATE_FAILED and in `create-fail`). */
  "SM_CREATE_TIMEOUT",
  /** `add()` while `alive + creating` already equals `max`. */
  "SM_POOL_FULL",
] as const;

export type PoolErrorCode = (typeof POOL_ERROR_CODES)[number];

/** `{ cause, details }`, as in every supermachine package. */
export type PoolErrorOptions = SupermachineErrorBaseOptions;

/**
 * The one error class of @supermachine/pool; the shape (`code`, `message`, `cause`, `details`) comes from
 * @supermachine/base. `details` may hold `field` (SM_POOL_CONFIG) and `stats` (SM_ACQUIRE_TIMEOUT).
 */
export class PoolError extends SupermachineErrorBase<PoolErrorCode> {
  override readonly name = "PoolError";

  /** `details.field`: for SM_POOL_CONFIG, the offending option key. */
  get field(): string | undefined {
    return this.details.field as string | undefined;
  }
  /** `details.stats`: for SM_ACQUIRE_TIMEOUT, the counters when the timeout fired. */
  get stats(): PoolStats | undefined {
    return this.details.stats as PoolStats | undefined;
  }
}

const poolGuard = codeGuard(POOL_ERROR_CODES, "PoolError");

/** True for a PoolError (from any copy of this package), optionally with the given code. */
export function isPoolError(err: unknown, code?: PoolErrorCode): err is PoolError {
  return poolGuard(err, code);
}

export function formatStats(s: PoolStats): string {
  return `alive=${s.alive} inUse=${s.inUse} idle=${s.idle} waiting=${s.waiting} creating=${s.creating} min=${s.min} max=${s.max}`;
}
