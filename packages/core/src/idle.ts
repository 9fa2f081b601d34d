/**
 * Idle freezing of pooled VMs (README "Idle pooled VMs"): a VM that sits idle in a pool has its whole
 * VMM process stopped (LiveVmPort.freeze, SIGSTOP), so it costs no CPU at all — QEMU's own main loop
 * included. The guest's clock runs on while frozen (it follows the host's clock), and a thawed VM is
 * the same VM, not a clone (its RNG needs no reseed), so waking it is the thaw alone (SIGCONT): no
 * QMP command, no agent round trip. At acquire the handle is returned at once and the thaw is sent
 * after the caller's turn (setImmediate); requests the handle sends before it wait in the agent
 * socket, in order, and are read as soon as the VMM runs again.
 *
 * SM_POOL_IDLE_PAUSE=0 turns freezing off (a bench/diagnostic switch: measures the before/after).
 */
import type { LiveVmPort } from "./ports";

/** False when SM_POOL_IDLE_PAUSE=0 (bench/diagnostic switch); read when a pool starts. */
export function idlePauseEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.SM_POOL_IDLE_PAUSE;
  return !(v === "0" || v === "false" || v === "off");
}

/** The wall clock as the agent's `resume` wants it (unix epoch, ns). */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n + BigInt(process.hrtime()[1] % 1_000_000);
}

/** Whether a VM's backend can freeze it (LiveVmPort.freeze and thaw). */
export function canFreeze(live: LiveVmPort): boolean {
  return typeof live.freeze === "function" && typeof live.thaw === "function";
}

/** The freeze state of one pooled VM. */
export class IdleVm {
  /** True while the VMM is frozen (or its thaw is still to be sent). */
  paused = false;
  /** Checked out by a caller (never frozen while true). */
  checkedOut = false;
  /** The thaw of the last wake, until it is sent. */
  #thaw: NodeJS.Immediate | undefined;
  readonly #live: LiveVmPort;

  constructor(live: LiveVmPort) {
    this.#live = live;
  }

  /** Whether this VM can be frozen at all (the backend offers freeze/thaw). */
  get pausable(): boolean {
    return canFreeze(this.#live);
  }

  /** Freeze the VMM unless the VM is checked out (or frozen already). Never throws. */
  pause(): void {
    if (this.paused || this.checkedOut || !this.pausable) return;
    if (this.#thaw) {
      // woken and idle again before its thaw was sent: it never ran, it stays frozen
      clearImmediate(this.#thaw);
      this.#thaw = undefined;
      this.paused = true;
      return;
    }
    try {
      this.#live.freeze?.();
      this.paused = true;
    } catch {
      // its VMM is gone: the exit marks the VM dead
    }
  }

  /**
   * Mark the VM checked out; if it is frozen, thaw it after the current turn (the caller has its
   * handle first; what the handle sends meanwhile waits in the socket).
   */
  wake(): void {
    this.checkedOut = true;
    if (!this.paused) return;
    this.paused = false;
    this.#thaw = setImmediate(() => {
      this.#thaw = undefined;
      this.#live.thaw?.();
    });
  }

  /** Thaw now (before a clean guest shutdown, whose agent request needs a running VM). */
  thawNow(): void {
    const pending = this.#thaw !== undefined;
    if (this.#thaw) clearImmediate(this.#thaw);
    this.#thaw = undefined;
    if (!this.paused && !pending) return;
    this.paused = false;
    this.#live.thaw?.();
  }
}
