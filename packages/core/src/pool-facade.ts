// The public Pool: a thin facade over PoolImpl (pool.ts). The facade is what users hold, so a pool
// that becomes unreachable can be shut down (FinalizationRegistry): the registry's held value is the
// PoolImpl, which never references the facade. Every Vm handed out keeps its facade reachable.
import type { PoolEventName, PoolEvents } from "@supermachine/pool";
import { SupermachineError } from "./errors";
import { whileHeld } from "./keepalive";
import type { PoolImpl } from "./pool";
import type { AcquireOptions, PoolStats } from "./types";
import { anchorVm, type Vm } from "./vm";

const POOL_TOKEN = Symbol("Pool");
let newPool: (impl: PoolImpl) => Pool;

/** A pool nobody can reach any more is shut down (its VMs stopped). */
const droppedPools = new FinalizationRegistry<PoolImpl>((impl) => {
  impl.shutdown().catch(() => undefined);
});

/** Wrap a started PoolImpl in the public Pool (image.pool()). */
export function createPool(impl: PoolImpl): Pool {
  return newPool(impl);
}

/**
 * VMs restored from an Image's snapshot (from `image.pool()`; no public constructor). An idle pool
 * does not keep the program running; one that becomes unreachable is shut down.
 */
export class Pool {
  readonly #impl: PoolImpl;

  private constructor(token: symbol, impl: PoolImpl) {
    if (token !== POOL_TOKEN)
      throw new SupermachineError("SM_UNSUPPORTED", "Pool has no public constructor: use image.pool().");
    this.#impl = impl;
    droppedPools.register(this, impl, this);
  }

  static {
    newPool = (impl) => new Pool(POOL_TOKEN, impl);
  }

  /**
   * An idle VM at once; else start one if below max; else wait (FIFO) up to acquireTimeoutMs.
   * Beyond: `options.signal` (an AbortSignal) withdraws the request.
   */
  acquire(options?: AcquireOptions | null): Promise<Vm> {
    return whileHeld(async () => {
      const vm = await this.#impl.acquire(options ?? undefined);
      anchorVm(vm, this);
      return vm;
    });
  }

  /**
   * Synchronous, cheap counters: `inUse` counts VMs checked out by callers only; `idle` those ready
   * for checkout; `alive` = inUse + idle. Beyond: `restoring` counts VMs being restored (after a
   * release, or to fill `min`), which are neither in use nor idle.
   */
  stats(): PoolStats {
    return this.#impl.stats();
  }

  /** Stop every VM and reject waiters; idempotent. */
  shutdown(): Promise<void> {
    droppedPools.unregister(this);
    return whileHeld(() => this.#impl.shutdown());
  }

  /**
   * Beyond: typed events of the underlying @supermachine/pool (`acquire-request`, `acquire-success`,
   * `acquire-timeout`, `create-success` (a VM restored), `create-fail`, `destroy`, ...), each with ids.
   */
  on<K extends PoolEventName>(event: K, listener: (e: PoolEvents[K]) => void): this {
    this.#impl.on(event, listener);
    return this;
  }

  off<K extends PoolEventName>(event: K, listener: (e: PoolEvents[K]) => void): this {
    this.#impl.off(event, listener);
    return this;
  }
}
