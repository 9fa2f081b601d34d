/**
 * Memory admission of pools (README "Memory admission"): a pool asked for more VMs than the host can
 * hold fails with SM_POOL_MEMORY instead of pushing the host into OOM.
 *
 * The rule, per VM, for an idle pooled VM restored from a snapshot:
 *   private = VMM overhead (measured per accelerator: QEMU's own allocations, the TCG translation
 *             cache, device state) + the guest pages an idle VM writes after its restore (the agent's
 *             hello/resume; a fixed allowance, measured)
 *   shared  = the snapshot's memory file as far as it is allocated on disk: restores map it
 *             copy-on-write, so its pages sit once in the page cache for all VMs of the snapshot.
 * needed(n) = n × private + shared + reserve, where reserve = max(256 MiB, 5 % of MemTotal) is left
 * to the host. It is compared with /proc/meminfo MemAvailable: at image.pool() for `min` and for
 * `max`, and again before each VM is restored (for one more VM). A VM that then runs a workload can
 * use up to its memoryMib on top: the rule bounds idle pools, not busy ones.
 */
import { readFileSync, statSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import { SupermachineError } from "./errors";
import type { Image } from "./image";
import { VM_DIR } from "./snapshot";

const MIB = 2 ** 20;

/**
 * Private memory of one idle pooled VM besides the guest pages it writes, in MiB, by accelerator.
 * bench/core-idle.mjs (busybox fixture, QEMU 7.2 microvm, TCG) measured the USS of a paused pooled VM
 * at ~28.6 MiB, of which ~11 MiB TCG translations; 40 + 8 MiB leaves room for the translation cache to
 * grow toward its tb-size bound (64 MiB) once the VM has run more code. KVM/HVF have no translation
 * cache: TCG's figure without it (not measured here: the project's machines have no KVM).
 */
export const VMM_OVERHEAD_MIB: Record<string, number> = { tcg: 40, kvm: 24, hvf: 24 };
/** Guest pages an idle pooled VM has written since its restore (hello, resume, the no-op process). */
export const GUEST_DIRTY_MIB = 8;

export interface VmMemoryEstimate {
  /** Private MiB per VM (VMM overhead + guest pages written). */
  privateMib: number;
  /** MiB shared by all VMs of the snapshot (its memory file's allocated pages), counted once. */
  sharedMib: number;
  accel: string;
}

/** The per-VM estimate for pools of `image` (see the module comment for the rule). */
export function vmMemoryEstimate(image: Pick<Image, "dir" | "meta">): VmMemoryEstimate {
  const accel = image.meta.accel === "kvm" || image.meta.accel === "hvf" ? image.meta.accel : "tcg";
  let sharedMib = 0;
  try {
    const st = statSync(join(image.dir, VM_DIR, "memory"));
    sharedMib = Math.ceil((st.blocks * 512) / MIB);
  } catch {
    sharedMib = 0; // another layout: nothing known to be shared
  }
  return { privateMib: (VMM_OVERHEAD_MIB[accel] ?? 40) + GUEST_DIRTY_MIB, sharedMib, accel };
}

/** MemAvailable and MemTotal in MiB (undefined where /proc/meminfo does not exist). */
export function hostMemory(
  meminfo = (() => {
    try {
      return readFileSync("/proc/meminfo", "utf8");
    } catch {
      return undefined;
    }
  })(),
): { availableMib: number; totalMib: number } | undefined {
  if (meminfo === undefined) return undefined;
  const avail = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo);
  const total = /^MemTotal:\s+(\d+) kB/m.exec(meminfo);
  if (!avail) return undefined;
  return {
    availableMib: Math.floor(Number(avail[1]) / 1024),
    totalMib: total ? Math.floor(Number(total[1]) / 1024) : Math.floor(totalmem() / MIB),
  };
}

/** What the host keeps for itself: max(256 MiB, 5 % of MemTotal). */
export function reserveMib(totalMib: number): number {
  return Math.max(256, Math.ceil(totalMib * 0.05));
}

/**
 * Throws SM_POOL_MEMORY when `min` or `max` idle VMs (the larger) would not fit in MemAvailable.
 * No-op where MemAvailable is unknown (no /proc).
 */
export function poolMemoryCheck(
  est: VmMemoryEstimate,
  want: { min: number; max: number },
  mem = hostMemory(),
): void {
  if (!mem) return;
  const n = Math.max(want.min, want.max);
  const reserve = reserveMib(mem.totalMib);
  const needed = n * est.privateMib + est.sharedMib + reserve;
  if (needed <= mem.availableMib) return;
  const which = want.min >= want.max ? `min: ${want.min}` : `max: ${want.max}`;
  const fits = Math.max(0, Math.floor((mem.availableMib - reserve - est.sharedMib) / est.privateMib));
  throw new SupermachineError(
    "SM_POOL_MEMORY",
    `A pool of ${which} needs about ${needed} MiB (${n} × ${est.privateMib} MiB per idle VM under ${est.accel} + ${est.sharedMib} MiB of snapshot memory shared + ${reserve} MiB kept for the host) but only ${mem.availableMib} MiB is available (MemAvailable). About ${fits} VMs of this image fit: lower min/max, or free memory.`,
    {
      details: {
        neededMib: needed,
        availableMib: mem.availableMib,
        perVmMib: est.privateMib,
        sharedMib: est.sharedMib,
        reserveMib: reserve,
        count: n,
        fits,
      },
    },
  );
}

/** Throws SM_POOL_MEMORY when one more VM would not fit (checked before each restore). */
export function oneMoreVmCheck(est: VmMemoryEstimate, mem = hostMemory()): void {
  if (!mem) return;
  const reserve = reserveMib(mem.totalMib);
  const needed = est.privateMib + reserve;
  if (needed <= mem.availableMib) return;
  throw new SupermachineError(
    "SM_POOL_MEMORY",
    `Restoring one more VM needs about ${est.privateMib} MiB (+ ${reserve} MiB kept for the host) but only ${mem.availableMib} MiB is available (MemAvailable): the host is out of memory for more VMs.`,
    {
      details: {
        neededMib: needed,
        availableMib: mem.availableMib,
        perVmMib: est.privateMib,
        reserveMib: reserve,
        count: 1,
      },
    },
  );
}
