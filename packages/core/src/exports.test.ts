import { describe, expect, it } from "vitest";
import { checkPackage, runtimeNames, UPDATE_COMMAND } from "../../../scripts/api-manifest.mjs";
import * as core from "./index";

// The public surface (names, kinds, types) is committed in api/index.api.md; see scripts/api-manifest.mjs.
describe("public exports", () => {
  it("match the committed manifest api/index.api.md", () => {
    const problems = checkPackage("core");
    if (problems) expect.fail(problems);
  }, 120_000);

  it("are exactly the runtime values the manifest lists", () => {
    expect(Object.keys(core).sort(), `stale manifest? ${UPDATE_COMMAND}`).toEqual(runtimeNames("core"));
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
