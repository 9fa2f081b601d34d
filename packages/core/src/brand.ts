/**
 * `instanceof` across copies of core. Core ships an ESM and a CommonJS build; a process that loads
 * both (an ESM app plus a CommonJS library that requires core) has two `Image` classes, two `Vm`
 * classes... Each public class gets a brand on its prototype keyed by `Symbol.for` (shared by every copy
 * in the process) and a `Symbol.hasInstance` that also accepts objects carrying the brand, so
 * `x instanceof Image` holds for an Image made by either copy. Subclasses keep the ordinary check.
 */

/** Any class, whatever its constructor takes (or hides: public classes have private constructors). */
type AnyClass = { prototype: object };

export function shareInstanceofAcrossCopies(classes: Record<string, AnyClass>): void {
  for (const [name, cls] of Object.entries(classes)) {
    const brand = Symbol.for(`@supermachine/core.${name}`);
    Object.defineProperty(cls.prototype, brand, { value: true });
    Object.defineProperty(cls, Symbol.hasInstance, {
      value(this: unknown, x: unknown): boolean {
        if (Function.prototype[Symbol.hasInstance].call(this, x)) return true;
        return (
          this === cls &&
          x !== null &&
          (typeof x === "object" || typeof x === "function") &&
          (x as Record<symbol, unknown>)[brand] === true
        );
      },
    });
  }
}
