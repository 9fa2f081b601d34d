import { describe, expect, expectTypeOf, it } from "vitest";
import { codeGuard, SupermachineErrorBase, type SupermachineErrorBaseOptions } from "./errors";

const CODES = ["SM_A", "SM_B"] as const;
type Code = (typeof CODES)[number];

class TestError extends SupermachineErrorBase<Code> {
  override readonly name = "TestError";
  get field(): string | undefined {
    return this.details.field as string | undefined;
  }
}

describe("SupermachineErrorBase", () => {
  it("carries code, message, cause and details; a subclass adds only its name", () => {
    const cause = new Error("root");
    const e = new TestError("SM_B", "do this", { cause, details: { field: "min" } });
    expect(e).toBeInstanceOf(TestError);
    expect(e).toBeInstanceOf(SupermachineErrorBase);
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("TestError");
    expect(e.code).toBe("SM_B");
    expect(e.message).toBe("do this");
    expect(e.cause).toBe(cause);
    expect(e.details).toEqual({ field: "min" });
    expect(e.field).toBe("min");
    expect(Object.keys(e).sort()).toEqual(["code", "details", "name"]);
    expect(String(e)).toBe("TestError: do this");
  });

  it("details is always an object; cause is absent (not undefined) when not given", () => {
    const e = new TestError("SM_A", "m");
    expect(e.details).toEqual({});
    expect("cause" in e).toBe(false);
    expect("cause" in new TestError("SM_A", "m", { cause: undefined })).toBe(false);
    // a falsy cause is still a cause
    expect(new TestError("SM_A", "m", { cause: 0 }).cause).toBe(0);
  });

  it("types: the code is the subclass's union; options are exactly { cause, details }", () => {
    expectTypeOf<TestError["code"]>().toEqualTypeOf<Code>();
    expectTypeOf<SupermachineErrorBaseOptions>().toEqualTypeOf<{
      cause?: unknown;
      details?: Record<string, unknown>;
    }>();
    // @ts-expect-error: not one of the subclass's codes
    new TestError("SM_C", "m");
  });
});

describe("codeGuard", () => {
  const byName = codeGuard(CODES, "TestError");
  const byCode = codeGuard(CODES);

  it("with a name: the name and one of the codes (optionally exactly the given one)", () => {
    const e = new TestError("SM_A", "m");
    expect(byName(e)).toBe(true);
    expect(byName(e, "SM_A")).toBe(true);
    expect(byName(e, "SM_B")).toBe(false);
    // from another copy of the package: a plain object with the same name and code
    expect(byName({ name: "TestError", code: "SM_B" })).toBe(true);
    expect(byName({ name: "OtherError", code: "SM_A" })).toBe(false);
    expect(byName({ code: "SM_A" })).toBe(false);
    expect(byName({ name: "TestError", code: "SM_OTHER" })).toBe(false);
  });

  it("without a name: the code alone decides", () => {
    expect(byCode({ code: "SM_A" })).toBe(true);
    expect(byCode(Object.assign(new Error("m"), { code: "SM_B" }), "SM_B")).toBe(true);
    expect(byCode({ code: "SM_A" }, "SM_B")).toBe(false);
    expect(byCode({ code: "SM_OTHER" })).toBe(false);
  });

  it("non-objects are refused", () => {
    for (const v of [undefined, null, "SM_A", 1, true]) {
      expect(byName(v)).toBe(false);
      expect(byCode(v)).toBe(false);
    }
  });
});
