import { describe, expect, it } from "vitest";
import * as api from "./index";

describe("@supermachine/hypervisor-kvm exports", () => {
  it("exposes exactly the documented API", () => {
    expect(Object.keys(api).sort()).toEqual(["PACKAGE_NAME", "createKvmBackend", "x86KernelFile"].sort());
  });
});
