/**
 * Pool `memoryMib` / `vcpus` overrides as runtime limits inside a restored guest (README "Pool
 * overrides"). QEMU 7.2 cannot load a migration stream into a machine of another RAM size or CPU count,
 * so a VM always restores with the RAM and vCPUs it was baked with (BuildOptions.maxMemoryMib / maxVcpus)
 * and the override is applied inside the guest at resume:
 * - memory: memory.max of the work cgroup `sm-work` (where commands and the workload run) = the
 *   override, capped by the value the agent chose at boot (what the guest really had available);
 * - vCPUs: CPUs 1..n-1 online or offline (`/sys/devices/system/cpu/cpuN/online`).
 * The writes are staged files of one no-op exec of the agent binary (`/proc/1/exe --version`), so no
 * shell is needed in the image.
 */
import { SupermachineError } from "./errors";
import type { AgentPort } from "./ports";
import type { SnapshotMetadata } from "./snapshot";

/** What a VmHandle applies at resume (see applyLimits). */
export interface RuntimeLimits {
  limits: Limits;
  maxVcpus: number;
  bootWorkMemoryMax: string | undefined;
}

export const WORK_MEMORY_MAX = "/sys/fs/cgroup/sm-work/memory.max";

export interface Limits {
  memoryMib: number;
  vcpus: number;
}

/** The RAM and vCPUs a snapshot's VMs have: what overrides must stay within. */
export function ceilings(meta: SnapshotMetadata): Limits {
  return { memoryMib: meta.maxMemoryMib ?? meta.memoryMib, vcpus: meta.maxVcpus ?? meta.vcpus };
}

/** Refuse (SM_POOL_OVERRIDE) an override the snapshot cannot honour; name what it allows. */
export function checkOverrides(meta: SnapshotMetadata, want: Partial<Limits>): void {
  const c = ceilings(meta);
  const bad: string[] = [];
  if (want.memoryMib !== undefined && want.memoryMib > c.memoryMib)
    bad.push(
      `memoryMib ${want.memoryMib} is above the snapshot's RAM ceiling of ${c.memoryMib} MiB (a restored VM cannot get more RAM than it was baked with; allowed: 64..${c.memoryMib})`,
    );
  if (want.vcpus !== undefined && want.vcpus > c.vcpus)
    bad.push(
      `vcpus ${want.vcpus} is above the ${c.vcpus} vCPU(s) the snapshot was baked with (allowed: 1..${c.vcpus})`,
    );
  if (bad.length === 0) return;
  throw new SupermachineError(
    "SM_POOL_OVERRIDE",
    `Pool override not possible from snapshot ${meta.name}: ${bad.join("; ")}. Lower the override, or re-bake with a higher \`maxMemoryMib\` / \`maxVcpus\` (unused RAM costs nothing until the guest uses it).`,
    {
      details: {
        field: want.memoryMib !== undefined && want.memoryMib > c.memoryMib ? "memoryMib" : "vcpus",
        maxMemoryMib: c.memoryMib,
        maxVcpus: c.vcpus,
      },
    },
  );
}

/** The sm-work memory.max value for a memory limit: the limit, capped by the agent's boot value. */
export function workMemoryMax(memoryMib: number, bootValue: string | undefined): string {
  const want = BigInt(memoryMib) * 1024n * 1024n;
  if (bootValue && /^\d+$/.test(bootValue) && BigInt(bootValue) < want) return bootValue;
  return String(want);
}

/** Apply limits in the guest (see the file comment). `maxVcpus`: the VM's vCPU count. */
export async function applyLimits(
  agent: AgentPort,
  limits: Limits,
  maxVcpus: number,
  bootWorkMemoryMax: string | undefined,
): Promise<void> {
  const stage: { path: string; data: Buffer; mode: number }[] = [
    {
      path: WORK_MEMORY_MAX,
      data: Buffer.from(workMemoryMax(limits.memoryMib, bootWorkMemoryMax)),
      mode: 0o644,
    },
  ];
  for (let n = 1; n < maxVcpus; n++)
    stage.push({
      path: `/sys/devices/system/cpu/cpu${n}/online`,
      data: Buffer.from(n < limits.vcpus ? "1" : "0"),
      mode: 0o644,
    });
  let r: Awaited<ReturnType<AgentPort["exec"]>>;
  try {
    r = await agent.exec({
      argv: ["/proc/1/exe", "--version"],
      env: {},
      cwd: "/",
      stage,
      timeoutMs: 30_000,
      chain: null,
      tty: false,
      cols: 80,
      rows: 24,
    });
  } catch (err) {
    throw new SupermachineError(
      "SM_POOL_OVERRIDE",
      `Applying memoryMib ${limits.memoryMib} / vcpus ${limits.vcpus} in the guest failed: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (r.exitCode !== 0)
    throw new SupermachineError(
      "SM_POOL_OVERRIDE",
      `Applying memoryMib ${limits.memoryMib} / vcpus ${limits.vcpus} in the guest failed (exit ${r.exitCode}): ${r.stderr.toString().trim()}`,
    );
}
