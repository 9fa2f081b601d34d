import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createKvmBackend, hostTscKhz, microvmX86Profile, resolveKvmAccel, tcgTimerArgs } from "./backend";

describe("hypervisor-kvm", () => {
  it("implements contract v1 for x86_64 microvm", () => {
    const b = createKvmBackend({ arch: "x86_64" });
    expect(b.version).toBe(1);
    expect(b.name).toBe("kvm");
    expect(b.capabilities).toMatchObject({
      arch: "x86_64",
      snapshot: true,
      cowRestore: true,
      prepareRestore: true,
      accels: ["kvm", "tcg"],
    });
    expect(microvmX86Profile.machine).toBe("microvm,rtc=off");
    expect(microvmX86Profile.cpuFor("kvm")).toBe("host");
    expect(microvmX86Profile.cpuFor("tcg")).toBe("max");
  });

  it("gives the TCG guest its TSC frequency (host) and lpj; nothing for KVM", () => {
    expect(hostTscKhz("model name : Intel(R) Xeon(R) CPU @ 2.20GHz\ncpu MHz : 1200.000\n")).toBe(2_200_000);
    expect(hostTscKhz("model name : AMD EPYC\ncpu MHz : 2445.422\n")).toBe(2_445_422);
    expect(hostTscKhz("")).toBe(2_000_000);
    expect(tcgTimerArgs(2_000_000)).toEqual(["tsc_early_khz=2000000", "lpj=8000000"]);
    expect(microvmX86Profile.extraKernelArgs?.("kvm")).toEqual([]);
  });

  it('accel "tcg" is used as asked; "hvf" is refused on this backend', async () => {
    const ctx = { qemuBinary: "/nonexistent", kernelPath: "/nonexistent" };
    await expect(resolveKvmAccel(microvmX86Profile, "tcg", ctx)).resolves.toEqual({ accel: "tcg" });
    await expect(resolveKvmAccel(microvmX86Profile, "hvf", ctx)).rejects.toMatchObject({
      code: "SM_VMM_CONFIG",
    });
  });
});

describe("hypervisor-kvm bad input (no VM started)", () => {
  const dir = mkdtempSync(join(tmpdir(), "sm-kvm-unit-"));
  const initrd = join(dir, "initrd");
  writeFileSync(initrd, "x");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("QEMU missing → SM_VMM_NOT_FOUND with the install command", async () => {
    const b = createKvmBackend({ arch: "x86_64" });
    await expect(
      b.boot({ initrd, qemuBinary: "qemu-system-does-not-exist", accel: "tcg" }),
    ).rejects.toMatchObject({
      code: "SM_VMM_NOT_FOUND",
      message: expect.stringContaining("apt-get install qemu-system-x86"),
    });
  });

  it("kernel missing → SM_KERNEL_NOT_FOUND saying how to provision", async () => {
    const b = createKvmBackend({ arch: "x86_64", env: { SUPERMACHINE_KERNEL_DIR: join(dir, "no-kernels") } });
    await expect(b.boot({ initrd, accel: "tcg" })).rejects.toMatchObject({
      code: "SM_KERNEL_NOT_FOUND",
      message: expect.stringContaining("npx supermachine setup"),
    });
  });

  it("unknown config keys → SM_VMM_CONFIG before anything starts", async () => {
    const b = createKvmBackend({ arch: "x86_64" });
    await expect(b.boot({ initrd, memory: 512 } as never)).rejects.toMatchObject({ code: "SM_VMM_CONFIG" });
  });
});

describe("hypervisor-kvm vsock capability", () => {
  it.skipIf(existsSync("/dev/vhost-vsock"))(
    "refuses vsock with a clear SM_VMM_CONFIG where /dev/vhost-vsock is absent",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "sm-kvm-vsock-"));
      const initrd = join(dir, "initrd");
      writeFileSync(initrd, "x");
      const b = createKvmBackend({ arch: "x86_64" });
      expect(b.capabilities.vsock).toBe(false);
      await expect(b.boot({ initrd, vsock: true, accel: "tcg" })).rejects.toMatchObject({
        code: "SM_VMM_CONFIG",
        message: expect.stringContaining("/dev/vhost-vsock"),
      });
      rmSync(dir, { recursive: true, force: true });
    },
  );
});
