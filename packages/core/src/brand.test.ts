import { describe, expect, it } from "vitest";
import { shareInstanceofAcrossCopies } from "./brand";

/** Two loads of the same module: two distinct classes with the same name. */
function copy() {
  class Thing {
    readonly kind = "thing";
  }
  class Other {}
  shareInstanceofAcrossCopies({ TestThing: Thing, TestOther: Other });
  return { Thing, Other };
}

describe("shareInstanceofAcrossCopies", () => {
  it("instanceof accepts objects of the same class from another copy, and nothing else", () => {
    const a = copy();
    const b = copy();
    expect(a.Thing).not.toBe(b.Thing);
    expect(new b.Thing()).toBeInstanceOf(a.Thing);
    expect(new a.Thing()).toBeInstanceOf(b.Thing);
    expect(new a.Thing()).toBeInstanceOf(a.Thing);
    expect(new b.Other()).not.toBeInstanceOf(a.Thing);
    expect({ kind: "thing" }).not.toBeInstanceOf(a.Thing);
    for (const v of [null, undefined, 42, "thing"])
      expect((v as unknown as object) instanceof a.Thing).toBe(false);
  });

  it("subclasses keep the ordinary check", () => {
    const a = copy();
    const b = copy();
    class Sub extends a.Thing {}
    expect(new Sub()).toBeInstanceOf(a.Thing);
    expect(new Sub()).toBeInstanceOf(b.Thing);
    expect(new Sub()).toBeInstanceOf(Sub);
    expect(new a.Thing()).not.toBeInstanceOf(Sub);
    expect(new b.Thing()).not.toBeInstanceOf(Sub);
  });
});
