import { describe, expect, it } from "vitest";
import { createHvfBackend, hvfUnavailableReason, resolveHvfAccel, virtHvfProfile } from "./backend";

describe("hypervisor-hvf", () => {
  it("implements contract v1 for the arm64 virt machine with HVF (host CPU) or TCG (max CPU)", () => {
    const b = createHvfBackend();
    expect(b.version).toBe(1);
    expect(b.capabilities).toMatchObject({ arch: "aarch64", accels: ["hvf", "tcg"] });
    expect(virtHvfProfile.machine).toBe("virt");
    expect(virtHvfProfile.accelArg("hvf")).toBe("hvf");
    expect(virtHvfProfile.cpuFor("hvf")).toBe("host");
    expect(virtHvfProfile.cpuFor("tcg")).toBe("max");
    expect(virtHvfProfile.consoleDevice).toBe("ttyAMA0");
  });

  it.skipIf(process.platform === "darwin")(
    "off macOS: auto falls back to TCG naming the reason; forced hvf / kvm fail clearly",
    async () => {
      expect(hvfUnavailableReason()).toMatch(/only on macOS/);
      const r = await resolveHvfAccel("auto");
      expect(r.accel).toBe("tcg");
      expect(r.fallbackReason).toMatch(/only on macOS/);
      await expect(resolveHvfAccel("hvf")).rejects.toMatchObject({ code: "SM_VMM_CONFIG" });
      await expect(resolveHvfAccel("kvm")).rejects.toMatchObject({ code: "SM_VMM_CONFIG" });
    },
  );
});
