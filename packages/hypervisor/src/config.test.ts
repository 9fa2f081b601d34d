import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { validateVmConfig } from "./config";

const dir = mkdtempSync(join(tmpdir(), "sm-config-"));
const initrd = join(dir, "initrd");
writeFileSync(initrd, "x");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("validateVmConfig", () => {
  it("applies defaults", () => {
    const c = validateVmConfig({ initrd });
    expect(c).toMatchObject({
      initrd,
      memoryMib: 256,
      vcpus: 1,
      network: "none",
      accel: "auto",
      volumes: [],
      kernelArgs: [],
      vsock: false,
    });
    expect(c.id).toMatch(/^vm-\d+-\d+-[0-9a-f]{6}$/);
  });

  it("rejects unknown keys, bad enums, missing files and bad ids with SM_VMM_CONFIG", () => {
    const bad = (c: unknown, re: RegExp) =>
      expect(() => validateVmConfig(c)).toThrow(
        expect.objectContaining({ code: "SM_VMM_CONFIG", message: expect.stringMatching(re) }),
      );
    bad({ initrd, memMib: 1 }, /unknown VM config key "memMib"/);
    bad({ initrd, network: "bridge" }, /network must be one of/);
    bad({ initrd, accel: "xen" }, /accel must be one of/);
    bad({ initrd: join(dir, "missing") }, /does not exist/);
    bad({ initrd, id: "../x" }, /id must match/);
    bad({ initrd, memoryMib: 1.5 }, /memoryMib/);
    bad({ initrd, volumes: [{ path: initrd, mode: "rw" }] }, /unknown key mode/);
  });

  it("keeps volumes in order with their read-only flag", () => {
    const c = validateVmConfig({ initrd, volumes: [{ path: initrd }, { path: initrd, readOnly: true }] });
    expect(c.volumes).toEqual([
      { path: initrd, readOnly: false },
      { path: initrd, readOnly: true },
    ]);
  });
});
