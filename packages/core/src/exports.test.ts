import { describe, expect, it } from "vitest";
import * as core from "./index";

describe("public exports", () => {
  it("are exactly the documented runtime values", () => {
    expect(Object.keys(core).sort()).toEqual([
      "ExecChild",
      "Image",
      "PACKAGE_NAME",
      "Pool",
      "SupermachineError",
      "TcpForwarder",
      "Vm",
      "onNetworkBlocked",
    ]);
    expect(typeof core.Image.build).toBe("function");
    expect(typeof core.Image.fromSnapshot).toBe("function");
    expect(new core.SupermachineError("SM_VM_RELEASED", "x").code).toBe("SM_VM_RELEASED");
  });

  it("the original's classes are runtime values with no public constructor", () => {
    for (const cls of [core.Image, core.Pool, core.Vm, core.ExecChild, core.TcpForwarder]) {
      expect(typeof cls).toBe("function");
      // what a JavaScript caller (no type checker) gets from `new`
      const ctor = cls as unknown as new (...args: unknown[]) => unknown;
      expect(() => new ctor()).toThrow(expect.objectContaining({ code: "SM_UNSUPPORTED" }));
      expect(() => new ctor(Symbol("forged"), {}, {})).toThrow(/no public constructor/);
    }
  });
});
