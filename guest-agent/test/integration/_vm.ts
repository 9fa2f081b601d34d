/** What the guest-agent VM tests share: the base module set and the probe that decides whether they can run. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type AgentClient, connectAgent, encodeBootConfig } from "@supermachine/agent-protocol";
import { findExecutable, listCachedBundles, type Vm, type VmmBackend } from "@supermachine/hypervisor";
import { buildInitramfs } from "@supermachine/rootfs";
import { buildAgent, buildBusyboxSquashfs } from "../../scripts/lib/image.mjs";

/** Kernel modules every test VM needs (dependencies such as virtio_ring are resolved by buildInitramfs). */
export const BASE_MODULES: readonly string[] = [
  "virtio_mmio",
  "virtio_blk",
  "virtio_console",
  "virtio-rng",
  "squashfs",
  "overlay",
];

/** Why the VM tests cannot run here (a real probe), or undefined when they can. */
export function vmSkipReason(): string | undefined {
  if (!findExecutable("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed";
  if (listCachedBundles("x86_64").length === 0) return "no x86_64 kernel bundle (npm run setup)";
  if (!findExecutable("musl-gcc")) return "musl-gcc is not installed (needed to build the agent)";
  if (!findExecutable("mksquashfs")) return "mksquashfs is not installed";
  if (!existsSync("/bin/busybox")) return "busybox-static is not installed";
  return undefined;
}

/**
 * Cold-boot the real agent (built now) as PID 1 over the hand-built busybox squashfs in `work`, with
 * `modules` in the initramfs and no workload; resolves once the agent answered the hello.
 */
export async function bootBusybox(
  backend: VmmBackend,
  work: string,
  opts: { modules: readonly string[]; hostname: string; helloTimeoutMs?: number },
): Promise<{ vm: Vm; agent: AgentClient }> {
  const init = buildAgent("x86_64");
  const rootfs = buildBusyboxSquashfs(work);
  const bundle = listCachedBundles("x86_64")[0];
  if (!bundle) throw new Error("no kernel bundle");
  const initrd = join(work, "initrd.cpio");
  await buildInitramfs({
    init,
    modulesDir: bundle.modulesDir,
    modules: [...opts.modules],
    config: encodeBootConfig({ hostname: opts.hostname, tmpfsMib: 64, startWorkload: "never" }),
    out: initrd,
  });
  const vm = await backend.boot({ initrd, rootfs, accel: "tcg", memoryMib: 256 });
  try {
    return { vm, agent: await connectAgent(await vm.agentStream(), { helloTimeoutMs: opts.helloTimeoutMs ?? 180_000 }) };
  } catch (err) {
    await vm.stop().catch(() => undefined);
    throw err;
  }
}
