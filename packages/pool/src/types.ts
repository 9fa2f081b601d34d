/** Counters of a pool; `stats()` builds this object from counters in O(1). */
export interface PoolStats {
  /** Resources that exist: `inUse + idle`. Resources being created or destroyed are not counted. */
  alive: number;
  /** Resources not available for checkout: held by a caller, being reset after release, or being validated. */
  inUse: number;
  /** Resources ready for checkout. */
  idle: number;
  /** `acquire()` calls not yet settled. */
  waiting: number;
  /** Creations in progress (an attempt running or a retry scheduled). Each counts toward `max`. */
  creating: number;
  min: number;
  max: number;
}

/**
 * Time source and timers. Inject one to drive the pool from a fake clock in tests; the default uses
 * `performance.now()` and the global `setTimeout`/`clearTimeout` (looked up on every call, so test
 * frameworks' fake timers also apply).
 */
export interface PoolClock {
  /** Milliseconds on a monotonic scale (any origin). */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Passed to `create`. */
export interface CreateContext {
  /** The id the resource will carry in events (stable across retries of the same creation). */
  resourceId: number;
  /** 1 for the first attempt of this creation, then 2, 3, ... */
  attempt: number;
  /** Aborted when the attempt exceeds `createTimeoutMs` or the pool shuts down. Honour it to free resources early. */
  signal: AbortSignal;
}

export interface PoolOptions<T> {
  /** Makes a new resource. Its promise must settle; it may honour `ctx.signal`. */
  create: (ctx: CreateContext) => Promise<T> | T;
  /** Disposes of a resource. Failures are reported as `destroy-fail` events; the resource is gone either way. */
  destroy: (resource: T) => Promise<void> | void;
  /** Runs on every release before the resource becomes idle again. A throw/rejection destroys it (`reset-fail`). */
  reset?: (resource: T) => Promise<void> | void;
  /**
   * Runs on checkout of a resource that was idle or just released (not on freshly created ones).
   * Anything but `true` (or a throw) destroys it and the acquirer gets another resource.
   */
  validate?: (resource: T) => Promise<boolean> | boolean;
  /** Resources kept alive (created eagerly in the background). Integer, default 0. */
  min?: number;
  /** Upper bound of `alive + creating`. Integer >= 1, default 1. */
  max?: number;
  /** How long `acquire()` waits; 0 = forever. Milliseconds, default 60000. */
  acquireTimeoutMs?: number;
  /** Idle resources above `min` are destroyed after being idle this long; 0 = never. Milliseconds, default 0. */
  idleTimeoutMs?: number;
  /** Deadline of one `create` attempt; 0 = none. Milliseconds, default 30000. */
  createTimeoutMs?: number;
  /** Failed attempts retried before the oldest waiter is rejected with SM_CREATE_FAILED. Integer, default 2. */
  createRetries?: number;
  /** Delay before the first retry; doubles per attempt. Milliseconds, default 100. */
  createBackoffMs?: number;
  /** Cap of the retry delay. Milliseconds, default 10000. */
  createBackoffMaxMs?: number;
  /** Idle resources are handed out oldest-first (true) or most-recently-released-first (false). Default true. */
  fifo?: boolean;
  /** Bound on creations in progress at once (eager fill and demand). Integer >= 1, default 4. */
  maxConcurrentCreates?: number;
  /**
   * Already-created resources adopted at construction; they count toward `max`, sit idle before the eager fill
   * and (with `fifo: true`) are the first handed out. Length <= max, distinct objects.
   */
  initial?: readonly T[];
  /** Time source; see PoolClock. */
  clock?: PoolClock;
}

export interface AcquireOptions {
  /** Aborting removes the waiter; the acquire rejects with SM_ACQUIRE_ABORTED. */
  signal?: AbortSignal;
}

export type DestroyReason =
  /** `pool.destroy(resource)` */
  | "destroyed"
  /** idle longer than idleTimeoutMs with alive > min */
  | "idle"
  | "reset-fail"
  | "validate-fail"
  | "shutdown"
  /** a creation finished after its attempt timed out or after shutdown; the late resource is disposed of */
  | "late-create";

/** Event payloads. `requestId` identifies one `acquire()` call, `resourceId` one resource (or its creation). */
export interface PoolEvents {
  "acquire-request": { requestId: number };
  "acquire-success": { requestId: number; resourceId: number; waitedMs: number };
  "acquire-timeout": { requestId: number; waitedMs: number };
  "acquire-abort": { requestId: number };
  /** The acquirer was rejected because creation failed (SM_CREATE_FAILED) or the pool shut down. */
  "acquire-fail": { requestId: number; error: Error };
  "create-request": { resourceId: number; attempt: number };
  "create-success": { resourceId: number; attempt: number; durationMs: number };
  "create-fail": {
    resourceId: number;
    attempt: number;
    error: unknown;
    willRetry: boolean;
    retryInMs: number;
  };
  release: { resourceId: number };
  "reset-fail": { resourceId: number; error: unknown };
  /** `requestId`: the acquire the resource was being validated for (it goes back to the front of the line). */
  "validate-fail": { resourceId: number; requestId: number; error: unknown };
  destroy: { resourceId: number; reason: DestroyReason };
  "destroy-fail": { resourceId: number; error: unknown };
}

export type PoolEventName = keyof PoolEvents;
export type PoolListener<K extends PoolEventName> = (event: PoolEvents[K]) => void;

export interface Pool<T> {
  /** Resolves with a resource checked out for the caller. Rejects with SM_POOL_CLOSED, SM_ACQUIRE_TIMEOUT, SM_ACQUIRE_ABORTED or SM_CREATE_FAILED. */
  acquire(options?: AcquireOptions): Promise<T>;
  /** Returns a checked-out resource (reset, then idle or straight to the next waiter). Throws SM_POOL_FOREIGN / SM_POOL_DOUBLE_RELEASE. No-op after shutdown. */
  release(resource: T): void;
  /** Destroys a checked-out resource instead of returning it; a replacement is created if needed. Throws like release(); the promise settles when `destroy` finished (never rejects). */
  destroy(resource: T): Promise<void>;
  /** Adopts an already-created resource (counts toward max). Throws SM_POOL_FULL, SM_POOL_CLOSED, SM_POOL_CONFIG (not an object / already pooled). */
  add(resource: T): void;
  /** Synchronous O(1) counters. */
  stats(): PoolStats;
  /** Graceful close: new acquires fail, queued waiters are still served, resolves after every resource was returned and everything was destroyed. */
  drain(): Promise<void>;
  /** Immediate close: rejects waiters, waits for in-flight creations/resets, destroys every resource (in use too). Idempotent. */
  shutdown(): Promise<void>;
  on<K extends PoolEventName>(event: K, listener: PoolListener<K>): this;
  off<K extends PoolEventName>(event: K, listener: PoolListener<K>): this;
}
