import { formatStats, PoolError } from "./errors";
import { type PoolConfig, resolveOptions } from "./options";
import type {
  AcquireOptions,
  DestroyReason,
  Pool,
  PoolEventName,
  PoolEvents,
  PoolListener,
  PoolOptions,
  PoolStats,
} from "./types";

/** Lifecycle of one pooled resource. `alive` = every state but DESTROYED. */
enum State {
  Idle = 0,
  /** handed to a caller */
  InUse = 1,
  /** released, `reset` running */
  Resetting = 2,
  /** bound to a waiter, `validate` running */
  Validating = 3,
  Destroyed = 4,
}

enum Phase {
  Open = 0,
  /** drain(): no new acquires, queued waiters still served */
  Draining = 1,
  /** shutdown() started */
  Closed = 2,
}

interface Entry<T> {
  readonly id: number;
  readonly resource: T;
  state: State;
  /** clock time when it became idle (only maintained when idleTimeoutMs > 0) */
  idleSince: number;
  /** intrusive doubly linked idle list; insertion order = idleSince order */
  prev: Entry<T> | null;
  next: Entry<T> | null;
}

interface Waiter<T> {
  readonly id: number;
  readonly startedAt: number;
  resolve: (resource: T) => void;
  reject: (error: Error) => void;
  settled: boolean;
  /** in the queue (false while bound to a validating resource) */
  queued: boolean;
  timer: unknown;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** One creation: attempts with retries and backoff until it succeeds or is no longer needed. */
interface Chain {
  readonly id: number;
  attempt: number;
  failuresSinceReject: number;
  /** pending retry timer */
  timer: unknown;
  /** the running attempt's controller */
  controller: AbortController | undefined;
  /** the running attempt's createTimeoutMs timer */
  attemptTimer: unknown;
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === "object" || typeof v === "function") &&
    v !== null &&
    typeof (v as { then?: unknown }).then === "function"
  );
}

function toError(v: unknown): Error {
  return v instanceof Error ? v : new Error(String(v));
}

/** FIFO of waiters with lazy deletion: settled waiters are skipped when shifted. */
class WaitQueue<T> {
  private items: (Waiter<T> | undefined)[] = [];
  private head = 0;

  push(w: Waiter<T>): void {
    this.items.push(w);
  }

  /** Put back at the front (a waiter whose validated resource failed keeps its place). */
  unshift(w: Waiter<T>): void {
    if (this.head > 0) this.items[--this.head] = w;
    else this.items.unshift(w);
  }

  /** Next unsettled waiter, or undefined. */
  shift(): Waiter<T> | undefined {
    while (this.head < this.items.length) {
      const w = this.items[this.head];
      this.items[this.head++] = undefined;
      if (w !== undefined && !w.settled) {
        this.compact();
        return w;
      }
    }
    this.items.length = 0;
    this.head = 0;
    return undefined;
  }

  /** Drop settled waiters when they dominate (aborts/timeouts leave holes). */
  prune(live: number): void {
    const size = this.items.length - this.head;
    if (size > 64 && size > live * 2) {
      this.items = this.items.slice(this.head).filter((w) => w !== undefined && !w.settled);
      this.head = 0;
    }
  }

  drainAll(): Waiter<T>[] {
    const out: Waiter<T>[] = [];
    for (let i = this.head; i < this.items.length; i++) {
      const w = this.items[i];
      if (w !== undefined && !w.settled) out.push(w);
    }
    this.items = [];
    this.head = 0;
    return out;
  }

  private compact(): void {
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

type ListenerMap = { [K in PoolEventName]?: PoolListener<K>[] };

const EVENT_NAMES = new Set<string>([
  "acquire-request",
  "acquire-success",
  "acquire-timeout",
  "acquire-abort",
  "acquire-fail",
  "create-request",
  "create-success",
  "create-fail",
  "release",
  "reset-fail",
  "validate-fail",
  "destroy",
  "destroy-fail",
]);

export class ResourcePool<T extends object> implements Pool<T> {
  private readonly cfg: PoolConfig<T>;
  private readonly entries = new Map<T, Entry<T>>();
  /** resources this pool destroyed (tells a double release from a foreign value) */
  private readonly retired = new WeakSet<T>();
  private idleHead: Entry<T> | null = null;
  private idleTail: Entry<T> | null = null;
  private idleCount = 0;
  private resettingCount = 0;
  private readonly queue = new WaitQueue<T>();
  /** unsettled waiters in the queue */
  private queued = 0;
  /** waiters bound to a validating resource */
  private readonly bound = new Set<Waiter<T>>();
  private readonly chains = new Set<Chain>();
  /** create() promises not settled yet (including attempts abandoned after a timeout) */
  private inflightCreates = 0;
  /** destroy() calls not settled yet */
  private pendingDestroys = 0;
  private nextResourceId = 1;
  private nextRequestId = 1;
  private phase = Phase.Open;
  private evictTimer: unknown = undefined;
  private evictArmed = false;
  private closed: Promise<void> | undefined;
  private resolveClosed: (() => void) | undefined;
  private listeners: ListenerMap = {};

  constructor(options: PoolOptions<T>) {
    this.cfg = resolveOptions(options);
    for (const r of this.cfg.initial) this.adopt(r);
    this.dispatch();
  }

  // ---------------------------------------------------------------- public API

  stats(): PoolStats {
    const alive = this.entries.size;
    return {
      alive,
      inUse: alive - this.idleCount,
      idle: this.idleCount,
      waiting: this.queued + this.bound.size,
      creating: this.chains.size,
      min: this.cfg.min,
      max: this.cfg.max,
    };
  }

  acquire(options?: AcquireOptions): Promise<T> {
    if (this.phase !== Phase.Open) return Promise.reject(this.closedError("acquire()"));
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const requestId = this.nextRequestId++;
    if (this.listeners["acquire-request"] !== undefined) this.emit("acquire-request", { requestId });

    // Fast path: an idle resource, nobody ahead in line, and nothing to validate or a validate that
    // answers `true` synchronously: handed out in this call, with no waiter, timer or listener.
    if (this.queued === 0 && this.idleHead !== null) {
      const check = this.cfg.validate;
      const e = this.takeIdle();
      let result: unknown = true;
      let threw = false;
      let error: unknown;
      if (check !== undefined) {
        e.state = State.Validating;
        try {
          result = check(e.resource);
        } catch (err) {
          threw = true;
          error = err;
        }
      }
      if (!threw && result === true) {
        e.state = State.InUse;
        if (this.listeners["acquire-success"] !== undefined) {
          this.emit("acquire-success", { requestId, resourceId: e.id, waitedMs: 0 });
        }
        return Promise.resolve(e.resource);
      }
      // Invalid, failed or still validating: this acquire waits like any other, bound to `e` meanwhile.
      return new Promise<T>((resolve, reject) => {
        const w = this.newWaiter(requestId, signal, resolve, reject, false);
        this.bound.add(w);
        this.routeValidation(e, w, result, threw, error);
      });
    }

    return new Promise<T>((resolve, reject) => {
      const w = this.newWaiter(requestId, signal, resolve, reject, true);
      this.queue.push(w);
      this.queued++;
      this.dispatch();
    });
  }

  /** A waiting acquire with its timeout and abort listener armed (`queued`: it goes into the line). */
  private newWaiter(
    id: number,
    signal: AbortSignal | undefined,
    resolve: (resource: T) => void,
    reject: (error: Error) => void,
    queued: boolean,
  ): Waiter<T> {
    const w: Waiter<T> = {
      id,
      startedAt: this.cfg.clock.now(),
      resolve,
      reject,
      settled: false,
      queued,
      timer: undefined,
      signal,
      onAbort: undefined,
    };
    if (this.cfg.acquireTimeoutMs > 0) {
      w.timer = this.cfg.clock.setTimeout(() => this.onAcquireTimeout(w), this.cfg.acquireTimeoutMs);
    }
    if (signal !== undefined) {
      w.onAbort = () => this.onAcquireAbort(w);
      signal.addEventListener("abort", w.onAbort, { once: true });
    }
    return w;
  }

  release(resource: T): void {
    const e = this.checkedOut(resource, "release");
    if (e === undefined) return;
    if (this.listeners.release !== undefined) this.emit("release", { resourceId: e.id });
    const reset = this.cfg.reset;
    if (reset === undefined) {
      this.makeAvailable(e, true);
      return;
    }
    e.state = State.Resetting;
    this.resettingCount++;
    let result: unknown;
    try {
      result = reset(resource);
    } catch (error) {
      this.afterReset(e, false, error);
      return;
    }
    if (isPromiseLike(result)) {
      result.then(
        () => this.afterReset(e, true, undefined),
        (error: unknown) => this.afterReset(e, false, error),
      );
    } else {
      this.afterReset(e, true, undefined);
    }
  }

  destroy(resource: T): Promise<void> {
    const e = this.checkedOut(resource, "destroy");
    if (e === undefined) return Promise.resolve();
    const done = this.destroyEntry(e, "destroyed");
    this.dispatch();
    return done;
  }

  add(resource: T): void {
    if (this.phase !== Phase.Open) throw this.closedError("add()");
    if ((typeof resource !== "object" && typeof resource !== "function") || resource === null) {
      throw new PoolError(
        "SM_POOL_CONFIG",
        "add(): resources must be objects (the pool tracks them by identity)",
        { details: { field: "resource" } },
      );
    }
    if (this.entries.has(resource)) {
      throw new PoolError("SM_POOL_CONFIG", "add(): this resource is already in the pool", {
        details: { field: "resource" },
      });
    }
    if (this.entries.size + this.chains.size >= this.cfg.max) {
      throw new PoolError(
        "SM_POOL_FULL",
        `add(): the pool is at max (${formatStats(this.stats())}); destroy a resource first or pass it as options.initial`,
        { details: { stats: this.stats() } },
      );
    }
    this.adopt(resource);
    this.dispatch();
  }

  drain(): Promise<void> {
    const closed = this.closedPromise();
    if (this.phase === Phase.Open) {
      this.phase = Phase.Draining;
      // Retries scheduled only to keep `min` are pointless now: cancel them rather than wait out their backoff.
      for (const chain of [...this.chains]) {
        if (chain.controller === undefined && this.entries.size + this.chains.size - 1 >= this.desired()) {
          this.cfg.clock.clearTimeout(chain.timer);
          this.endChain(chain);
        }
      }
      this.dispatch();
    }
    return closed;
  }

  shutdown(): Promise<void> {
    const closed = this.closedPromise();
    if (this.phase === Phase.Closed) return closed;
    this.phase = Phase.Closed;
    if (this.evictArmed) {
      this.cfg.clock.clearTimeout(this.evictTimer);
      this.evictArmed = false;
    }
    const err = () => this.closedError("acquire()", "the pool was shut down while this acquire was waiting");
    const waiters = this.queue.drainAll();
    for (const w of waiters) this.failWaiter(w, err());
    for (const w of [...this.bound]) this.failWaiter(w, err());
    for (const chain of [...this.chains]) {
      if (chain.controller !== undefined) {
        // An attempt is running: its settlement ends the chain and disposes of a late resource.
        if (chain.attemptTimer !== undefined) this.cfg.clock.clearTimeout(chain.attemptTimer);
        chain.controller.abort(this.closedError("create()", "the pool was shut down"));
      } else {
        this.cfg.clock.clearTimeout(chain.timer);
        this.chains.delete(chain);
      }
    }
    for (const e of [...this.entries.values()]) {
      // Resetting/validating resources are destroyed when that step settles.
      if (e.state === State.Idle || e.state === State.InUse) this.destroyEntry(e, "shutdown");
    }
    this.checkClosed();
    return closed;
  }

  on<K extends PoolEventName>(event: K, listener: PoolListener<K>): this {
    this.checkEvent(event, listener);
    const list = (this.listeners[event] ?? []) as PoolListener<K>[];
    // copy-on-write: emit() iterates the array it started with
    (this.listeners as Record<string, unknown>)[event] = [...list, listener];
    return this;
  }

  off<K extends PoolEventName>(event: K, listener: PoolListener<K>): this {
    this.checkEvent(event, listener);
    const list = this.listeners[event] as PoolListener<K>[] | undefined;
    if (list === undefined) return this;
    const i = list.indexOf(listener);
    if (i === -1) return this;
    const next = list.slice(0, i).concat(list.slice(i + 1));
    (this.listeners as Record<string, unknown>)[event] = next.length === 0 ? undefined : next;
    return this;
  }

  // ---------------------------------------------------------------- internals

  private checkEvent(event: string, listener: unknown): void {
    if (!EVENT_NAMES.has(event)) {
      throw new PoolError(
        "SM_POOL_CONFIG",
        `Unknown pool event "${event}" (known: ${[...EVENT_NAMES].join(", ")})`,
        { details: { field: "event" } },
      );
    }
    if (typeof listener !== "function") {
      throw new PoolError("SM_POOL_CONFIG", `Listener for "${event}" must be a function`, {
        details: { field: "listener" },
      });
    }
  }

  private emit<K extends PoolEventName>(event: K, payload: PoolEvents[K]): void {
    const list = this.listeners[event] as PoolListener<K>[] | undefined;
    if (list === undefined) return;
    for (const listener of list) {
      try {
        listener(payload);
      } catch (error) {
        // A throwing listener must not leave the pool half-updated: surface it as an uncaught error instead.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  private closedPromise(): Promise<void> {
    if (this.closed === undefined) {
      this.closed = new Promise<void>((resolve) => {
        this.resolveClosed = resolve;
      });
    }
    return this.closed;
  }

  private closedError(what: string, detail?: string): PoolError {
    const state = this.phase === Phase.Draining ? "draining" : "shut down";
    return new PoolError(
      "SM_POOL_CLOSED",
      `${what}: ${detail ?? `the pool is ${state}`}; create a new pool to get resources`,
    );
  }

  /** The entry of a resource the caller holds, or throws; undefined = ignore (pool already shut down). */
  private checkedOut(resource: T, what: "release" | "destroy"): Entry<T> | undefined {
    const e = this.entries.get(resource);
    if (e === undefined) {
      if (this.phase === Phase.Closed) return undefined;
      if (this.retired.has(resource)) {
        throw new PoolError(
          "SM_POOL_DOUBLE_RELEASE",
          `${what}(): this resource was already destroyed; release or destroy each acquired resource exactly once`,
        );
      }
      throw new PoolError(
        "SM_POOL_FOREIGN",
        `${what}(): this value was not acquired from this pool; only pass resources returned by acquire()`,
      );
    }
    if (e.state !== State.InUse) {
      throw new PoolError(
        "SM_POOL_DOUBLE_RELEASE",
        `${what}(): resource #${e.id} is not checked out (already released); release or destroy each acquired resource exactly once`,
      );
    }
    return e;
  }

  private adopt(resource: T): Entry<T> {
    const e: Entry<T> = {
      id: this.nextResourceId++,
      resource,
      state: State.InUse,
      idleSince: 0,
      prev: null,
      next: null,
    };
    this.entries.set(resource, e);
    this.makeAvailable(e, false);
    return e;
  }

  /** Idle list: push at the tail (newest); take from the head (fifo) or the tail (lifo); evict from the head. */
  private pushIdle(e: Entry<T>): void {
    e.state = State.Idle;
    if (this.cfg.idleTimeoutMs > 0) e.idleSince = this.cfg.clock.now();
    e.prev = this.idleTail;
    e.next = null;
    if (this.idleTail === null) this.idleHead = e;
    else this.idleTail.next = e;
    this.idleTail = e;
    this.idleCount++;
    if (this.cfg.idleTimeoutMs > 0 && !this.evictArmed) this.armEviction();
  }

  private unlinkIdle(e: Entry<T>): void {
    if (e.prev === null) this.idleHead = e.next;
    else e.prev.next = e.next;
    if (e.next === null) this.idleTail = e.prev;
    else e.next.prev = e.prev;
    e.prev = null;
    e.next = null;
    this.idleCount--;
  }

  private takeIdle(): Entry<T> {
    const e = (this.cfg.fifo ? this.idleHead : this.idleTail)!;
    this.unlinkIdle(e);
    return e;
  }

  private shiftWaiter(): Waiter<T> {
    const w = this.queue.shift()!;
    w.queued = false;
    this.queued--;
    return w;
  }

  /** Settle bookkeeping shared by every outcome of a waiter. */
  private settle(w: Waiter<T>): void {
    w.settled = true;
    if (w.timer !== undefined) this.cfg.clock.clearTimeout(w.timer);
    if (w.onAbort !== undefined) w.signal!.removeEventListener("abort", w.onAbort);
    if (w.queued) {
      w.queued = false;
      this.queued--;
      this.queue.prune(this.queued);
    } else {
      this.bound.delete(w);
    }
  }

  private failWaiter(w: Waiter<T>, error: PoolError): void {
    this.settle(w);
    w.reject(error);
    this.emit("acquire-fail", { requestId: w.id, error });
  }

  private give(e: Entry<T>, w: Waiter<T>): void {
    e.state = State.InUse;
    this.settle(w);
    w.resolve(e.resource);
    if (this.listeners["acquire-success"] !== undefined) {
      this.emit("acquire-success", {
        requestId: w.id,
        resourceId: e.id,
        waitedMs: this.cfg.clock.now() - w.startedAt,
      });
    }
  }

  /** Hand `e` to the next waiter or make it idle. `validate`: run options.validate before handing it out. */
  private makeAvailable(e: Entry<T>, validate: boolean): void {
    if (this.phase === Phase.Closed) {
      this.destroyEntry(e, "shutdown");
      return;
    }
    if (this.queued > 0) this.handOut(e, this.shiftWaiter(), validate);
    else this.pushIdle(e);
    if (this.phase === Phase.Draining) this.checkDrained();
  }

  private handOut(e: Entry<T>, w: Waiter<T>, validate: boolean): void {
    const check = validate ? this.cfg.validate : undefined;
    if (check === undefined) {
      this.give(e, w);
      return;
    }
    e.state = State.Validating;
    this.bound.add(w);
    let result: unknown;
    let threw = false;
    let error: unknown;
    try {
      result = check(e.resource);
    } catch (err) {
      threw = true;
      error = err;
    }
    this.routeValidation(e, w, result, threw, error);
  }

  /** Sends what options.validate returned (or threw) for `e`, bound to `w`, to afterValidate. */
  private routeValidation(e: Entry<T>, w: Waiter<T>, result: unknown, threw: boolean, error: unknown): void {
    if (threw) this.afterValidate(e, w, false, error);
    else if (isPromiseLike(result))
      result.then(
        (ok) => this.afterValidate(e, w, ok === true, undefined),
        (err: unknown) => this.afterValidate(e, w, false, err),
      );
    else this.afterValidate(e, w, result === true, undefined);
  }

  private afterValidate(e: Entry<T>, w: Waiter<T>, ok: boolean, error: unknown): void {
    if (this.phase === Phase.Closed) {
      this.destroyEntry(e, "shutdown");
      return;
    }
    if (ok) {
      if (w.settled) {
        // The waiter timed out or aborted meanwhile: the (valid) resource goes to the next one or idles.
        e.state = State.InUse;
        this.makeAvailable(e, false);
      } else {
        this.give(e, w);
      }
      return;
    }
    this.emit("validate-fail", { resourceId: e.id, requestId: w.id, error });
    this.destroyEntry(e, "validate-fail");
    if (!w.settled) {
      // Keep its place at the front of the line.
      this.bound.delete(w);
      w.queued = true;
      this.queued++;
      this.queue.unshift(w);
    }
    this.dispatch();
  }

  private afterReset(e: Entry<T>, ok: boolean, error: unknown): void {
    this.resettingCount--;
    if (ok) {
      e.state = State.InUse;
      this.makeAvailable(e, true);
      this.maybeCreate();
      return;
    }
    this.emit("reset-fail", { resourceId: e.id, error });
    if (this.phase === Phase.Closed) this.destroyEntry(e, "shutdown");
    else this.destroyEntry(e, "reset-fail");
    this.dispatch();
  }

  /** Removes the resource from the pool and runs options.destroy; the promise never rejects. */
  private destroyEntry(e: Entry<T>, reason: DestroyReason): Promise<void> {
    if (e.state === State.Idle) this.unlinkIdle(e);
    e.state = State.Destroyed;
    this.entries.delete(e.resource);
    this.retired.add(e.resource);
    return this.runDestroy(e.id, e.resource, reason);
  }

  private runDestroy(resourceId: number, resource: T, reason: DestroyReason): Promise<void> {
    this.emit("destroy", { resourceId, reason });
    this.pendingDestroys++;
    const done = (error?: unknown, failed?: boolean) => {
      if (failed) this.emit("destroy-fail", { resourceId, error });
      this.pendingDestroys--;
      this.checkClosed();
    };
    let result: unknown;
    try {
      result = this.cfg.destroy(resource);
    } catch (error) {
      done(error, true);
      return Promise.resolve();
    }
    if (!isPromiseLike(result)) {
      done();
      return Promise.resolve();
    }
    return Promise.resolve(result).then(
      () => done(),
      (error: unknown) => done(error, true),
    );
  }

  /** Pair idle resources with waiters, then start creations the demand calls for. */
  private dispatch(): void {
    if (this.phase === Phase.Closed) return;
    while (this.queued > 0 && this.idleHead !== null) {
      const w = this.shiftWaiter();
      this.handOut(this.takeIdle(), w, true);
    }
    this.maybeCreate();
    if (this.phase === Phase.Draining) this.checkDrained();
  }

  /** How many resources (alive + creating) the pool should have right now. */
  private desired(): number {
    // Resources held by callers or validating, plus queued waiters; resetting ones will come back by themselves.
    const busy = this.entries.size - this.idleCount - this.resettingCount;
    const floor = this.phase === Phase.Open ? this.cfg.min : 0;
    return Math.min(this.cfg.max, Math.max(floor, busy + this.queued));
  }

  private maybeCreate(): void {
    if (this.phase === Phase.Closed) return;
    const desired = this.desired();
    while (
      this.chains.size < this.cfg.maxConcurrentCreates &&
      this.entries.size + this.chains.size < desired
    ) {
      const chain: Chain = {
        id: this.nextResourceId++,
        attempt: 0,
        failuresSinceReject: 0,
        timer: undefined,
        controller: undefined,
        attemptTimer: undefined,
      };
      this.chains.add(chain);
      this.attempt(chain);
    }
  }

  private attempt(chain: Chain): void {
    chain.attempt++;
    const attempt = chain.attempt;
    const controller = new AbortController();
    chain.controller = controller;
    this.emit("create-request", { resourceId: chain.id, attempt });
    const startedAt = this.cfg.clock.now();
    let done = false;
    let timer: unknown;
    this.inflightCreates++;
    if (this.cfg.createTimeoutMs > 0) {
      timer = this.cfg.clock.setTimeout(() => {
        // After shutdown the attempt's settlement (which the abort should hasten) ends the chain.
        if (done || this.phase === Phase.Closed) return;
        done = true;
        const error = new PoolError(
          "SM_CREATE_TIMEOUT",
          `create() attempt ${attempt} for resource #${chain.id} took longer than createTimeoutMs (${this.cfg.createTimeoutMs} ms); raise createTimeoutMs or make create() faster`,
        );
        controller.abort(error);
        this.onCreateFailure(chain, error);
      }, this.cfg.createTimeoutMs);
      chain.attemptTimer = timer;
    }
    const onValue = (value: unknown) => {
      this.inflightCreates--;
      if (done || this.phase === Phase.Closed) {
        // Timed out, or the pool shut down meanwhile: nobody wants this resource any more.
        if (!done) this.endChain(chain);
        done = true;
        if (typeof value === "object" && value !== null && !this.entries.has(value as T)) {
          this.runDestroy(chain.id, value as T, "late-create");
        }
        this.checkClosed();
        return;
      }
      done = true;
      if (timer !== undefined) this.cfg.clock.clearTimeout(timer);
      if ((typeof value !== "object" && typeof value !== "function") || value === null) {
        this.onCreateFailure(
          chain,
          new TypeError(`create() must resolve with an object, got ${String(value)}`),
        );
        return;
      }
      if (this.entries.has(value as T)) {
        this.onCreateFailure(chain, new Error("create() returned a resource that is already in the pool"));
        return;
      }
      this.endChain(chain);
      const e: Entry<T> = {
        id: chain.id,
        resource: value as T,
        state: State.InUse,
        idleSince: 0,
        prev: null,
        next: null,
      };
      this.entries.set(e.resource, e);
      this.emit("create-success", {
        resourceId: chain.id,
        attempt,
        durationMs: this.cfg.clock.now() - startedAt,
      });
      this.makeAvailable(e, false);
      this.dispatch();
    };
    const onError = (error: unknown) => {
      this.inflightCreates--;
      if (done || this.phase === Phase.Closed) {
        if (!done) this.endChain(chain);
        done = true;
        this.checkClosed();
        return;
      }
      done = true;
      if (timer !== undefined) this.cfg.clock.clearTimeout(timer);
      this.onCreateFailure(chain, error);
    };
    let result: unknown;
    try {
      result = this.cfg.create({ resourceId: chain.id, attempt, signal: controller.signal });
    } catch (error) {
      // Keep a synchronous throw asynchronous, like a rejection, so callers see one behaviour.
      Promise.reject(error).then(undefined, onError);
      return;
    }
    Promise.resolve(result).then(onValue, onError);
  }

  private endChain(chain: Chain): void {
    chain.controller = undefined;
    this.chains.delete(chain);
  }

  private onCreateFailure(chain: Chain, error: unknown): void {
    chain.controller = undefined;
    if (this.phase === Phase.Closed) {
      this.endChain(chain);
      this.checkClosed();
      return;
    }
    chain.failuresSinceReject++;
    let rejected: Waiter<T> | undefined;
    if (chain.failuresSinceReject > this.cfg.createRetries) {
      chain.failuresSinceReject = 0;
      // Out of retries: the oldest waiter (the one this creation is serving in FIFO order) gets the failure.
      if (this.queued > 0) rejected = this.shiftWaiter();
    }
    // Still needed once the rejected waiter is gone? Then back off and try again (never stay below min).
    const stillNeeded = this.entries.size + this.chains.size - 1 < this.desired();
    const delay = stillNeeded
      ? Math.min(this.cfg.createBackoffMaxMs, this.cfg.createBackoffMs * 2 ** Math.min(chain.attempt - 1, 30))
      : 0;
    this.emit("create-fail", {
      resourceId: chain.id,
      attempt: chain.attempt,
      error,
      willRetry: stillNeeded,
      retryInMs: delay,
    });
    if (rejected !== undefined) {
      this.failWaiter(
        rejected,
        new PoolError(
          "SM_CREATE_FAILED",
          `acquire(): creating a resource failed ${this.cfg.createRetries + 1} time(s) in a row (last: ${toError(error).message}); check the create() function or raise createRetries`,
          { cause: error },
        ),
      );
    }
    if (!stillNeeded) {
      this.endChain(chain);
      this.dispatch();
      return;
    }
    chain.timer = this.cfg.clock.setTimeout(() => {
      chain.timer = undefined;
      if (this.phase === Phase.Closed || !this.chains.has(chain)) return;
      if (this.entries.size + this.chains.size - 1 >= this.desired()) {
        this.endChain(chain);
        this.dispatch();
        return;
      }
      this.attempt(chain);
    }, delay);
  }

  private onAcquireTimeout(w: Waiter<T>): void {
    if (w.settled) return;
    w.timer = undefined;
    const stats = this.stats();
    const waitedMs = this.cfg.clock.now() - w.startedAt;
    this.settle(w);
    w.reject(
      new PoolError(
        "SM_ACQUIRE_TIMEOUT",
        `acquire(): no resource available within acquireTimeoutMs (${this.cfg.acquireTimeoutMs} ms) [${formatStats(stats)}]; release resources sooner, raise max or acquireTimeoutMs`,
        { details: { stats } },
      ),
    );
    this.emit("acquire-timeout", { requestId: w.id, waitedMs });
    this.dispatch();
  }

  private onAcquireAbort(w: Waiter<T>): void {
    if (w.settled) return;
    w.onAbort = undefined; // the listener was registered with { once: true }
    this.settle(w);
    w.reject(abortError(w.signal!));
    this.emit("acquire-abort", { requestId: w.id });
    this.dispatch();
  }

  private armEviction(): void {
    const head = this.idleHead;
    if (head === null || this.entries.size <= this.cfg.min || this.phase === Phase.Closed) return;
    const delay = Math.max(0, head.idleSince + this.cfg.idleTimeoutMs - this.cfg.clock.now());
    this.evictArmed = true;
    this.evictTimer = this.cfg.clock.setTimeout(() => this.evictIdle(), delay);
    // An idle-eviction timer alone must not keep the process alive.
    (this.evictTimer as { unref?: () => void } | undefined)?.unref?.();
  }

  private evictIdle(): void {
    this.evictArmed = false;
    this.evictTimer = undefined;
    if (this.phase === Phase.Closed) return;
    const now = this.cfg.clock.now();
    let evicted = false;
    while (
      this.idleHead !== null &&
      this.entries.size > this.cfg.min &&
      now - this.idleHead.idleSince >= this.cfg.idleTimeoutMs
    ) {
      this.destroyEntry(this.idleHead, "idle");
      evicted = true;
    }
    this.armEviction();
    if (evicted && this.phase === Phase.Draining) this.checkDrained();
  }

  private checkDrained(): void {
    if (
      this.phase === Phase.Draining &&
      this.queued === 0 &&
      this.bound.size === 0 &&
      this.entries.size === this.idleCount &&
      this.chains.size === 0
    ) {
      void this.shutdown();
    }
  }

  private checkClosed(): void {
    if (
      this.phase === Phase.Closed &&
      this.resolveClosed !== undefined &&
      this.entries.size === 0 &&
      this.inflightCreates === 0 &&
      this.pendingDestroys === 0
    ) {
      const resolve = this.resolveClosed;
      this.resolveClosed = undefined;
      resolve();
    }
  }

  /** Test hook: recompute every counter from scratch and throw if the incremental ones disagree. */
  assertInvariants(): void {
    let idle = 0;
    let resetting = 0;
    let validating = 0;
    for (const e of this.entries.values()) {
      if (e.state === State.Destroyed) throw new Error(`destroyed entry #${e.id} still in the pool`);
      if (e.state === State.Idle) idle++;
      if (e.state === State.Resetting) resetting++;
      if (e.state === State.Validating) validating++;
    }
    let linked = 0;
    for (let e = this.idleHead; e !== null; e = e.next) {
      if (e.state !== State.Idle) throw new Error(`entry #${e.id} in the idle list is not idle`);
      if (this.entries.get(e.resource) !== e) throw new Error(`idle entry #${e.id} is not in the pool`);
      if (++linked > this.entries.size) throw new Error("idle list has a cycle");
    }
    const s = this.stats();
    const fail = (what: string) => {
      throw new Error(`pool invariant violated: ${what} [${formatStats(s)}]`);
    };
    if (linked !== idle || idle !== this.idleCount) fail(`idle count ${this.idleCount} != ${idle}/${linked}`);
    if (resetting !== this.resettingCount) fail(`resetting ${this.resettingCount} != ${resetting}`);
    // every bound waiter has a validating resource; a waiter that gave up leaves its resource validating
    if (validating < this.bound.size) fail(`validating ${validating} < bound waiters ${this.bound.size}`);
    for (const k of ["alive", "inUse", "idle", "waiting", "creating"] as const) {
      if (!(s[k] >= 0)) fail(`${k} negative`);
    }
    if (s.alive !== s.inUse + s.idle) fail("alive != inUse + idle");
    if (s.alive + s.creating > s.max && this.phase !== Phase.Closed) fail("alive + creating > max");
    if (s.creating > this.cfg.maxConcurrentCreates) fail("creating > maxConcurrentCreates");
    if (this.queued > 0 && this.idleCount > 0 && this.phase !== Phase.Closed)
      fail("waiters queued while idle");
  }
}

function abortError(signal: AbortSignal): PoolError {
  return new PoolError(
    "SM_ACQUIRE_ABORTED",
    "acquire(): aborted by its AbortSignal before a resource was available",
    {
      cause: signal.reason,
    },
  );
}

/** Creates a pool; see PoolOptions for every option and its default. */
export function createPool<T extends object>(options: PoolOptions<T>): Pool<T> {
  return new ResourcePool<T>(options);
}
