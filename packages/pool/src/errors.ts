import type { PoolStats } from "./types";

/**
 * Stable error codes. Match on `error.code`, not on `instanceof` (several copies of this package may be
 * installed side by side).
 */
export type PoolErrorCode =
  /** An option is invalid; `field` names it. */
  | "SM_POOL_CONFIG"
  /** `acquire()`/`add()` after `drain()` or `shutdown()`; also how waiters are rejected by `shutdown()`. */
  | "SM_POOL_CLOSED"
  /** No resource became available within `acquireTimeoutMs`; `stats` holds the pool counters at that time. */
  | "SM_ACQUIRE_TIMEOUT"
  /** The acquire's AbortSignal fired before a resource was handed out; `cause` is the signal's reason. */
  | "SM_ACQUIRE_ABORTED"
  /** `release()`/`destroy()` of a value this pool never handed out. */
  | "SM_POOL_FOREIGN"
  /** `release()`/`destroy()` of a resource that is not checked out (already released or destroyed). */
  | "SM_POOL_DOUBLE_RELEASE"
  /** `create` kept failing (`createRetries` + 1 attempts); `cause` is the last failure. */
  | "SM_CREATE_FAILED"
  /** One `create` attempt exceeded `createTimeoutMs` (seen as the `cause` of SM_CREATE_FAILED and in `create-fail`). */
  | "SM_CREATE_TIMEOUT"
  /** `add()` while `alive + creating` already equals `max`. */
  | "SM_POOL_FULL";

export interface PoolErrorOptions {
  cause?: unknown;
  /** SM_POOL_CONFIG: the offending option key. */
  field?: string;
  /** SM_ACQUIRE_TIMEOUT: the counters when the timeout fired. */
  stats?: PoolStats;
}

/** The one error class of @supermachine/pool. */
export class PoolError extends Error {
  override readonly name = "PoolError";
  readonly code: PoolErrorCode;
  readonly field: string | undefined;
  readonly stats: PoolStats | undefined;

  constructor(code: PoolErrorCode, message: string, options: PoolErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.field = options.field;
    this.stats = options.stats;
  }
}

export function formatStats(s: PoolStats): string {
  return `alive=${s.alive} inUse=${s.inUse} idle=${s.idle} waiting=${s.waiting} creating=${s.creating} min=${s.min} max=${s.max}`;
}
