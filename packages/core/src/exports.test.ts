import { describe, expect, it } from "vitest";
import * as core from "./index";

describe("public exports", () => {
  it("are exactly the documented runtime values", () => {
    expect(Object.keys(core).sort()).toEqual([
      "Image",
      "PACKAGE_NAME",
      "SupermachineError",
      "Vm",
      "onNetworkBlocked",
    ]);
    expect(typeof core.Image.build).toBe("function");
    expect(typeof core.Image.fromSnapshot).toBe("function");
    expect(new core.SupermachineError("SM_VM_RELEASED", "x").code).toBe("SM_VM_RELEASED");
  });
});
