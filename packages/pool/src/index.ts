export type { PoolErrorCode, PoolErrorOptions } from "./errors";
export { isPoolError, POOL_ERROR_CODES, PoolError } from "./errors";
export { MAX_TIMER_MS } from "./options";
export { createPool } from "./pool";
export type {
  AcquireOptions,
  CreateContext,
  DestroyReason,
  Pool,
  PoolClock,
  PoolEventName,
  PoolEvents,
  PoolListener,
  PoolOptions,
  PoolStats,
} from "./types";
