// Test helpers (not exported from the package).
import { createPool, type ResourcePool } from "./pool";
import type { CreateContext, PoolClock, PoolOptions } from "./types";

/** Deterministic clock: time only moves in advance(); timers fire in (time, creation) order. */
export class ManualClock implements PoolClock {
  private t = 0;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; cb: () => void }>();
  /** Called after every fired timer once promise callbacks settled (the harness checks invariants here). */
  onTick: (() => void) | undefined;

  now(): number {
    return this.t;
  }

  setTimeout(cb: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, cb });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promise chains settle after each. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    await flush(); // settle what is already in flight before time moves
    for (;;) {
      let nextId = -1;
      let nextAt = Number.POSITIVE_INFINITY;
      for (const [id, timer] of this.timers) {
        if (timer.at <= target && timer.at < nextAt) {
          nextAt = timer.at;
          nextId = id;
        }
      }
      if (nextId === -1) break;
      const timer = this.timers.get(nextId)!;
      this.timers.delete(nextId);
      this.t = Math.max(this.t, timer.at);
      timer.cb();
      await flush();
      this.onTick?.();
    }
    this.t = target;
    await flush();
    this.onTick?.();
  }
}

/** Lets every pending promise callback run (one macrotask turn drains the microtask queue). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class Res {
  constructor(readonly n: number) {}
}

export interface PendingCreate {
  ctx: CreateContext;
  resolve(): Res;
  reject(error?: Error): void;
}

/**
 * A pool over `Res` objects whose create() calls the test settles by hand (`manual: true`) or which succeed
 * at once. Records every created and destroyed resource.
 */
export function makeHarness(
  options: Partial<PoolOptions<Res>> & { manual?: boolean; failCreates?: number } = {},
) {
  const { manual = false, failCreates = 0, ...rest } = options;
  const clock = (rest.clock as ManualClock | undefined) ?? new ManualClock();
  const created: Res[] = [];
  const destroyed: Res[] = [];
  const createCalls: CreateContext[] = [];
  const createTimes: number[] = [];
  const pending: PendingCreate[] = [];
  let n = 0;
  let failuresLeft = failCreates;
  const pool = createPool<Res>({
    create: (ctx) => {
      createCalls.push(ctx);
      createTimes.push(clock.now());
      if (failuresLeft > 0) {
        failuresLeft--;
        return Promise.reject(new Error(`create failed (${failuresLeft} more)`));
      }
      if (!manual) {
        const r = new Res(++n);
        created.push(r);
        return Promise.resolve(r);
      }
      return new Promise<Res>((resolve, reject) => {
        pending.push({
          ctx,
          resolve: () => {
            const r = new Res(++n);
            created.push(r);
            resolve(r);
            return r;
          },
          reject: (error = new Error("create failed")) => reject(error),
        });
      });
    },
    destroy: (r) => {
      destroyed.push(r);
    },
    ...rest,
    clock,
  }) as ResourcePool<Res>;
  // Assert the pool's invariants after every operation: each method call (and the settlement of the promise it
  // returns) and every timer the clock fires.
  const check = () => pool.assertInvariants();
  clock.onTick = check;
  const checked = new Proxy(pool, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function" || prop === "assertInvariants") return value;
      return (...args: unknown[]) => {
        let out: unknown;
        try {
          out = (value as (...a: unknown[]) => unknown).apply(target, args);
        } finally {
          check();
        }
        if (out instanceof Promise) out.then(check, check);
        return out;
      };
    },
  });
  return {
    pool: checked,
    clock,
    created,
    destroyed,
    createCalls,
    createTimes,
    pending,
    setFailures(k: number) {
      failuresLeft = k;
    },
    /** Settle the oldest pending create successfully. */
    async resolveNext(): Promise<Res> {
      const p = pending.shift();
      if (p === undefined) throw new Error("no pending create");
      const r = p.resolve();
      await flush();
      pool.assertInvariants();
      return r;
    },
    async rejectNext(error?: Error): Promise<void> {
      const p = pending.shift();
      if (p === undefined) throw new Error("no pending create");
      p.reject(error);
      await flush();
      pool.assertInvariants();
    },
  };
}

/** Captures a promise's outcome without an unhandled rejection. */
export function track<T>(p: Promise<T>) {
  const out: { state: "pending" | "resolved" | "rejected"; value?: T; error?: unknown } = {
    state: "pending",
  };
  p.then(
    (value) => {
      out.state = "resolved";
      out.value = value;
    },
    (error: unknown) => {
      out.state = "rejected";
      out.error = error;
    },
  );
  return out;
}
