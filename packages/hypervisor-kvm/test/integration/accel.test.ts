import { isPvmHost, kvmPrecheck } from "@supermachine/hypervisor";
import { createKvmBackend } from "@supermachine/hypervisor-kvm";
import { describe, expect, it } from "vitest";

// Real probe on this host (a tiny KVM boot of the cached kernel, cached afterwards). On the project's machines
// /dev/kvm is PVM, so "auto" must fall back to TCG naming that reason, warning once.
describe("accelerator auto-detection (real probe)", () => {
  it("resolves auto to kvm where it boots, else to tcg with one warning naming the reason", async () => {
    const warnings: string[] = [];
    const b = createKvmBackend({ arch: "x86_64", warn: (m) => warnings.push(m) });
    const r1 = await b.resolveAccel("auto");
    const r2 = await b.resolveAccel("auto");
    expect(r2).toEqual(r1);
    if (r1.accel === "kvm") {
      expect(warnings).toEqual([]);
      return;
    }
    expect(r1.accel).toBe("tcg");
    expect(warnings).toHaveLength(1);
    const pre = kvmPrecheck();
    if (pre) expect(r1.fallbackReason).toBe(pre);
    else if (isPvmHost()) expect(r1.fallbackReason).toMatch(/PVM host.*kvm_pvm/);
    else expect(r1.fallbackReason).toMatch(/probe/);
    expect(warnings[0]).toContain(r1.fallbackReason);
    expect(await b.resolveAccel("tcg")).toEqual({ accel: "tcg" });
  });
});
