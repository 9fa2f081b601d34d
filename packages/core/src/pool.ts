/**
 * Pool: VMs restored from an Image's snapshot, on the generic @supermachine/pool.
 *
 * - create  = restore → agent hello → `resume {timeNs, entropy}` (clock + RNG reseed; starts the
 *             workload) → pool memoryMib/vcpus limits applied → volume mounts of the snapshot mounted
 *             again. When the backend has prepareRestore, the next VM is restored
 *             and greeted in the background (the "spare"), so a create pays only the resume.
 *             The first create may adopt the bake's own VM instead (warm handoff).
 * - release = restoreOnRelease true: destroy + replace (a clean VM every acquire); false: dirty reuse.
 * - a VM whose VMM died is never handed out (validate) and is destroyed on release.
 * - idle = frozen (idle.ts): an idle VM (and the spare) has its VMM process stopped (SIGSTOP; no CPU
 *   at all, the guest's clock runs on); acquire returns the handle at once and thaws the VM after the
 *   caller's turn; what the handle sends meanwhile waits in the agent socket.
 * - memory admission (memory.ts): min/max beyond what MemAvailable holds fail with SM_POOL_MEMORY.
 */

import { join } from "node:path";
import {
  createPool,
  type Pool as GenericPool,
  type PoolEventName,
  type PoolEvents,
} from "@supermachine/pool";
import { registerForCleanup } from "./cleanup";
import { SupermachineError } from "./errors";
import { internalExec } from "./exec";
import { canFreeze, IdleVm, idlePauseEnabled } from "./idle";
import type { Image } from "./image";
import { applyLimits, ceilings, type RuntimeLimits } from "./limits";
import { oneMoreVmCheck, poolMemoryCheck, type VmMemoryEstimate, vmMemoryEstimate } from "./memory";
import { poolNetwork } from "./network/vm-network";
import type { AgentPort, LiveVmPort, PreparedRestorePort, RestoreSpec, VolumeAttachment } from "./ports";
import type { Runtime } from "./runtime-port";
import { INITRAMFS_FILE, ROOTFS_FILE, VM_DIR } from "./snapshot";
import type { AcquireOptions, PoolStats } from "./types";
import { checkKeys, checkObject, type ResolvedPoolOptions } from "./validate";
import { createVm, type Vm } from "./vm";
import { VmHandle } from "./vm-handle";
import { volumeDevice } from "./volume-guest";
import { volumeLockError } from "./volumes";

/** What the public Pool (pool-facade.ts) forwards to (README "`Pool`"). */
export interface PoolApi {
  /** An idle VM at once; else start one if below max; else wait (FIFO) up to acquireTimeoutMs. */
  acquire(options?: AcquireOptions): Promise<Vm>;
  /** Synchronous, cheap counters. */
  stats(): PoolStats;
  /** Stop every VM and reject waiters; idempotent. */
  shutdown(): Promise<void>;
  /**
   * Beyond: typed events of the underlying @supermachine/pool (`acquire-request`, `acquire-success`,
   * `acquire-timeout`, `create-success` (a VM restored), `create-fail`, `destroy`, ...), each with ids.
   */
  on<K extends PoolEventName>(event: K, listener: (e: PoolEvents[K]) => void): this;
  off<K extends PoolEventName>(event: K, listener: (e: PoolEvents[K]) => void): this;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A VM restored and greeted in the background, not yet resumed (see PoolImpl#prepareSpare). */
interface Spare {
  readonly live: LiveVmPort;
  readonly agent: AgentPort;
  /** The pool's memoryMib/vcpus limits are in place already (the resume need not apply them). */
  readonly limitsApplied: boolean;
  /** Drops its process-exit cleanup registration (the new owner registers its own). */
  readonly unregister: () => void;
  dead: boolean;
  /** Its VMM is frozen while it waits (idle freezing); thawed when taken. */
  frozen?: boolean;
}

/** A spare taken within this long of being ready is never frozen (see #prepareSpare). */
export const SPARE_PAUSE_DELAY_MS = 200;

/**
 * Run one no-op process in a spare before it is handed out: the agent binary asked for its version
 * (`/proc/1/exe --version`, present in every image). The first process started after a restore
 * otherwise pays for the guest's process-creation and exec paths being loaded (under TCG: translated)
 * again — about 200 ms on the first exec after hand-out. Only for agents announcing the
 * `agent-exe` cap (SPEC 1.2.0). Best effort: a failure changes nothing but that time.
 */
async function warmProcessStart(agent: AgentPort, timeoutMs: number): Promise<void> {
  // An agent without the cap (a snapshot baked by an older agent) would run its boot instead.
  if (!agent.hello.caps.includes("agent-exe")) return;
  await agent.exec(internalExec(["/proc/1/exe", "--version"], timeoutMs)).catch(() => undefined);
}

async function discardSpare(s: Spare): Promise<void> {
  s.unregister();
  s.agent.close();
  await s.live.stop().catch(() => undefined);
}

export class PoolImpl implements PoolApi {
  readonly #image: Image;
  readonly #opts: ResolvedPoolOptions;
  readonly #rt: Runtime;
  #pool: GenericPool<VmHandle> | undefined;
  #spare: { promise: Promise<Spare | undefined>; abandon: () => void } | undefined;
  #closed = false;
  #shutdown: Promise<void> | undefined;
  /** Limits applied in the guest at every resume when an override differs from the baked ones. */
  #limits: RuntimeLimits | undefined;
  /** VMs checked out by callers (stats().inUse): acquired and not yet released. */
  #checkedOut = 0;
  /** Serialises VMs that share volume files (QEMU holds a write lock on each). */
  #volumeTurn: Promise<void> = Promise.resolve();
  /** Idle VMs are paused (SM_POOL_IDLE_PAUSE=0 turns it off: a bench/diagnostic switch). */
  readonly #idlePause = idlePauseEnabled();
  /** Pause state of each pooled VM created by this pool (not the bake's handoff VM). */
  readonly #idle = new WeakMap<VmHandle, IdleVm>();
  /** Memory estimate per VM (memory.ts), set by start(). */
  #memory: VmMemoryEstimate | undefined;

  constructor(image: Image, opts: ResolvedPoolOptions, rt: Runtime) {
    this.#image = image;
    this.#opts = opts;
    this.#rt = rt;
    const memoryMib = opts.memoryMib ?? image.memoryMib;
    const vcpus = opts.vcpus ?? image.vcpus;
    // A snapshot's RAM size and vCPU count are fixed: every VM restores with them and an override is a
    // limit inside the guest, within what the snapshot allows (checked by image.pool; see limits.ts).
    if (memoryMib !== image.memoryMib || vcpus !== image.vcpus) {
      this.#limits = {
        limits: { memoryMib, vcpus },
        maxVcpus: ceilings(image.meta).vcpus,
        bootWorkMemoryMax: image.meta.workMemoryMax,
      };
    }
  }

  /** @internal */
  start(): void {
    const o = this.#opts;
    // min and max must fit in the host's available memory (SM_POOL_MEMORY), before any VM starts.
    this.#memory = vmMemoryEstimate(this.#image);
    poolMemoryCheck(this.#memory, { min: o.min, max: o.max });
    this.#pool = createPool<VmHandle>({
      create: () => this.#create(),
      destroy: async (h) => {
        // A frozen VM with volumes is thawed first: its clean guest shutdown flushes them.
        if (h.volumeDevices.length > 0) this.#idle.get(h)?.thawNow();
        await h.stop();
      },
      // A dead VM is never handed out: its exit was observed (dead), or its VMM is gone or a zombie
      // although the exit was not observed yet (a frozen VM killed a moment ago).
      validate: (h) => !h.dead && (!this.#idle.get(h)?.paused || h.live.alive?.() !== false),
      min: o.min,
      max: o.max,
      acquireTimeoutMs: o.acquireTimeoutMs,
      idleTimeoutMs: o.idleTimeoutMs ?? 0,
      createTimeoutMs: o.restoreTimeoutMs + 5_000,
      createRetries: 2,
      maxConcurrentCreates: 2,
    });
  }

  #restoreSpec(): RestoreSpec {
    const m = this.#image.meta;
    return {
      snapshotDir: join(this.#image.dir, VM_DIR),
      backendState: m.backendState,
      rootfsPath: join(this.#image.dir, ROOTFS_FILE),
      initramfsPath: join(this.#image.dir, INITRAMFS_FILE),
      kernelDir: m.kernel.dir,
      volumes: this.#volumeAttachments(),
      // the snapshot's machine: overrides are limits inside the guest (limits.ts)
      memoryMib: ceilings(m).memoryMib,
      vcpus: ceilings(m).vcpus,
      accel: "auto",
    };
  }

  #volumeAttachments(): VolumeAttachment[] {
    return this.#image.meta.volumes.map((v) => ({
      hostPath: v.hostPath,
      ...(v.readOnly ? { readOnly: true } : {}),
    }));
  }

  /** Writable volumes: one VM at a time (QEMU holds a write lock on each file). */
  get #writableVolumes(): boolean {
    return this.#image.meta.volumes.some((v) => !v.readOnly);
  }

  /** @internal true once shutdown() was called (releases its claim on writable volume files). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Restore the next VM in the background, up to and including the agent hello, but not its resume:
   * a create then pays only the resume. Nothing of the image runs in the spare (no command, no
   * workload; the clock and RNG are set by that resume), only one no-op process of the agent binary
   * (warmProcessStart). Unless taken within SPARE_PAUSE_DELAY_MS it then waits frozen (no CPU;
   * idle.ts), and it is stopped after idleTimeoutMs unused.
   * Only for pools without writable volumes (QEMU locks their files).
   */
  #prepareSpare(): void {
    if (this.#spare || this.#closed || this.#writableVolumes) return;
    let prep: PreparedRestorePort | undefined;
    let live: LiveVmPort | undefined;
    let agent: AgentPort | undefined;
    let unregister = () => {};
    let abandoned = false;
    const check = () => {
      if (abandoned) throw new Error("spare abandoned");
    };
    const work = (async (): Promise<Spare | undefined> => {
      const backend = await this.#rt.backend();
      if (!backend.prepareRestore) return undefined;
      if (this.#memory) oneMoreVmCheck(this.#memory);
      check();
      const p = await backend.prepareRestore(this.#restoreSpec());
      prep = p;
      unregister = registerForCleanup(() => p.killSync?.());
      check();
      const l = await p.restore();
      live = l;
      unregister();
      unregister = registerForCleanup(() => l.killSync());
      check();
      const a = await this.#rt.connectAgent(l, this.#opts.restoreTimeoutMs);
      agent = a;
      check();
      // A memoryMib/vcpus override is applied here already (it needs no clock or RNG); its staging
      // exec of the agent binary also warms the process start like warmProcessStart.
      const limits = this.#limits;
      if (limits) await applyLimits(a, limits.limits, limits.maxVcpus, limits.bootWorkMemoryMax);
      else await warmProcessStart(a, this.#opts.restoreTimeoutMs);
      check();
      const spare: Spare = { live: l, agent: a, unregister, dead: false, limitsApplied: !!limits };
      // A waiting spare costs no CPU: its VMM is frozen until a create takes it. Not at once: a busy
      // pool (restoreOnRelease, one create per acquire) takes its spare within moments, and the
      // freeze would only make its first request wait for the VMM's threads to be woken.
      if (this.#idlePause && canFreeze(l)) {
        const t = setTimeout(() => {
          // still the pool's unclaimed spare: not taken, abandoned or stopped meanwhile
          if (this.#spare?.promise !== promise || spare.dead) return;
          try {
            l.freeze?.();
            spare.frozen = true;
          } catch {
            spare.dead = true; // its VMM went away
          }
        }, SPARE_PAUSE_DELAY_MS);
        t.unref();
      }
      void l.exited.then(() => {
        spare.dead = true;
      });
      a.onLost(() => {
        spare.dead = true;
      });
      return spare;
    })();
    // Stops whatever exists of the spare: at once, and again when a step still under way returns.
    const release = async () => {
      unregister();
      agent?.close();
      if (live) await live.stop().catch(() => undefined);
      else await prep?.discard().catch(() => undefined);
    };
    let settle: (v: undefined) => void = () => {};
    const stopped = new Promise<undefined>((r) => {
      settle = r;
    });
    const abandon = () => {
      if (abandoned) return;
      abandoned = true;
      settle(undefined);
      void release();
      void work.then(release, release);
    };
    const timer = setTimeout(abandon, this.#opts.restoreTimeoutMs);
    timer.unref();
    const promise = Promise.race([work, stopped]).then(
      (spare) => spare,
      () => {
        abandon(); // failed: a create restores directly
        return undefined;
      },
    );
    void promise.finally(() => clearTimeout(timer));
    this.#spare = { promise, abandon };
    const idleMs = this.#opts.idleTimeoutMs ?? 0;
    if (idleMs > 0) {
      // Like an idle VM above min, an unused spare is stopped after idleTimeoutMs (the next create
      // restores directly and starts a new one).
      void promise.then((spare) => {
        if (!spare) return;
        const idle = setTimeout(() => {
          if (this.#spare?.promise !== promise) return; // taken meanwhile
          this.#spare = undefined;
          abandon();
        }, idleMs);
        idle.unref();
      });
    }
  }

  /** The spare, if one is ready and alive (a dead one is discarded); the caller owns it. */
  async #takeSpare(): Promise<Spare | undefined> {
    const pending = this.#spare;
    this.#spare = undefined;
    // Start the next one now, in the same turn: concurrent creates each take exactly one spare and
    // start exactly one, so at most one is ever unclaimed (and shutdown finds it). A dirty-reuse pool
    // that this create fills up creates again only to replace a crashed VM: no standing spare there.
    const s0 = this.#pool?.stats();
    if (this.#opts.restoreOnRelease || !s0 || s0.alive + 1 < this.#opts.max) this.#prepareSpare();
    const s = await pending?.promise;
    if (!s) return undefined;
    if (s.frozen) {
      s.frozen = false;
      // killed while frozen, its exit not yet observed: never used
      if (s.live.alive?.() === false) s.dead = true;
      else s.live.thaw?.();
    }
    if (s.dead) {
      await discardSpare(s);
      return undefined;
    }
    return s;
  }

  async #create(): Promise<VmHandle> {
    if (this.#closed) throw new SupermachineError("SM_POOL_CLOSED", "The pool was shut down.");
    const handoff = this.#image.takeHandoff();
    if (handoff) {
      handoff.limits = this.#limits;
      try {
        await handoff.resume();
        handoff.startNetwork(poolNetwork(this.#opts.network, this.#image.meta));
        return handoff;
      } catch {
        await handoff.stop().catch(() => undefined);
      }
    }
    if (this.#writableVolumes) {
      // Wait until the previous VM of these volumes has released its files.
      await this.#volumeTurn;
    }
    const deadline = this.#opts.restoreTimeoutMs;
    let live: LiveVmPort | undefined;
    let spareAgent: AgentPort | undefined;
    let spareLimited = false;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const work = (async () => {
      const backend = await this.#rt.backend();
      const spare = await this.#takeSpare();
      if (spare) {
        live = spare.live;
        spareAgent = spare.agent;
        spareLimited = spare.limitsApplied;
        spare.unregister(); // the VmHandle registers it again
      } else {
        if (this.#memory) oneMoreVmCheck(this.#memory);
        live = await backend.restore(this.#restoreSpec());
      }
      if (timedOut) throw new Error("late");
      const agent = spareAgent ?? (await this.#rt.connectAgent(live, deadline));
      const idle = new IdleVm(live);
      const handle = new VmHandle(
        live,
        agent,
        this.#image.meta.volumes.map((_, i) => volumeDevice(i)),
        this.#image.meta.mounts,
        this.#image.meta.guestPort,
      );
      handle.volumeMounts = this.#image.meta.volumeMounts ?? [];
      handle.limits = spareLimited ? undefined : this.#limits;
      handle.startNetwork(poolNetwork(this.#opts.network, this.#image.meta));
      try {
        await handle.resume();
      } catch (err) {
        await handle.stop().catch(() => undefined);
        throw err;
      }
      if (idle.pausable && this.#idlePause) {
        this.#idle.set(handle, idle);
        this.#pauseIfIdle(handle, idle);
      }
      return handle;
    })();
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        reject(
          new SupermachineError(
            "SM_RESTORE_TIMEOUT",
            `A VM did not restore within restoreTimeoutMs (${deadline} ms); it was discarded and will be replaced.`,
          ),
        );
      }, deadline);
      timer.unref();
    });
    try {
      const handle = await Promise.race([work, timeout]);
      if (this.#writableVolumes) {
        this.#volumeTurn = handle.live.exited.then(() => undefined);
      }
      return handle;
    } catch (err) {
      work.then(
        (h) => h.stop(),
        () => {
          spareAgent?.close();
          return live ? live.stop().catch(() => undefined) : undefined;
        },
      );
      throw (
        volumeLockError(
          err,
          this.#image.meta.volumes.map((v) => v.hostPath),
        ) ?? err
      );
    } finally {
      clearTimeout(timer);
    }
  }

  async acquire(options?: AcquireOptions): Promise<Vm> {
    if (options !== undefined) {
      const o = checkObject(options, "options");
      checkKeys(o, ["signal"], "");
      if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
        throw new SupermachineError(
          "SM_INVALID_OPTIONS",
          "Invalid option `signal`: expected an AbortSignal",
          {
            details: { field: "signal" },
          },
        );
      }
    }
    if (this.#closed || !this.#pool)
      throw new SupermachineError(
        "SM_POOL_CLOSED",
        "The pool was shut down; create a new one with image.pool().",
      );
    const handle = await this.#pool.acquire(options?.signal ? { signal: options.signal } : undefined);
    const pool = this.#pool;
    this.#checkedOut++;
    // A frozen VM is thawed after this turn: the handle is returned now.
    const idle = this.#idle.get(handle);
    idle?.wake();
    return createVm(handle, {
      release: async (h) => {
        this.#checkedOut--;
        if (this.#closed) return;
        // Discarding happens in the background: release() returns at once and the pool restores a
        // replacement (for volumes, the next VM waits until this one has released the files).
        if (this.#opts.restoreOnRelease || h.dead) void pool.destroy(h);
        else {
          if (idle) idle.checkedOut = false;
          pool.release(h);
          if (idle) this.#pauseIfIdle(h, idle);
        }
      },
      snapshot: async (h, destDir) => this.#image.capture(h, destDir),
    });
  }

  /**
   * Freeze `h` once it is idle: after the current turn, unless a caller checked it out meanwhile (a VM
   * created for a waiting acquire, or released to one, is handed over in the same turn and never frozen).
   */
  #pauseIfIdle(h: VmHandle, idle: IdleVm): void {
    const t = setTimeout(() => {
      if (!this.#closed && !h.dead && !h.stopping && !idle.checkedOut) idle.pause();
    }, 0);
    t.unref();
  }

  on<K extends PoolEventName>(event: K, listener: (e: PoolEvents[K]) => void): this {
    this.#pool?.on(event, listener);
    return this;
  }

  off<K extends PoolEventName>(event: K, listener: (e: PoolEvents[K]) => void): this {
    this.#pool?.off(event, listener);
    return this;
  }

  stats(): PoolStats {
    const { min, max } = this.#opts;
    if (!this.#pool) return { alive: 0, inUse: 0, idle: 0, waiting: 0, min, max, restoring: 0 };
    const s = this.#pool.stats();
    // The generic pool's inUse also counts VMs being reset or validated: only callers' VMs count here.
    const inUse = this.#checkedOut;
    const restoring = s.creating + Math.max(0, s.inUse - inUse);
    return { alive: inUse + s.idle, inUse, idle: s.idle, waiting: s.waiting, min, max, restoring };
  }

  shutdown(): Promise<void> {
    this.#shutdown ??= (async () => {
      this.#closed = true;
      await this.#pool?.shutdown();
      // A spare still being prepared is abandoned (its VMM stopped) rather than awaited.
      const pending = this.#spare;
      this.#spare = undefined;
      pending?.abandon();
      const spare = await pending?.promise;
      if (spare) await discardSpare(spare);
      const h = this.#image.takeHandoff();
      await h?.stop().catch(() => undefined);
      await sleep(0);
    })();
    return this.#shutdown;
  }
}
