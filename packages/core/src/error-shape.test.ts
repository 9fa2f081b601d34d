// One error shape across the supermachine packages: every package's error class has the fields `code`,
// `message`, `cause`, `details` and takes `(code, message, { cause, details })`; each SM_ code is defined by
// exactly one package (the others import it); each package's guard accepts only its own codes.
import {
  AGENT_ERROR_CODES,
  AgentError,
  type AgentErrorOptions,
  isAgentError,
} from "@supermachine/agent-protocol";
import { SupermachineErrorBase, type SupermachineErrorBaseOptions } from "@supermachine/base";
import {
  HYPERVISOR_ERROR_CODES,
  HypervisorError,
  type HypervisorErrorOptions,
  isHypervisorError,
} from "@supermachine/hypervisor";
import { isOciError, OCI_ERROR_CODES, OciError, type OciErrorOptions } from "@supermachine/oci";
import { isPoolError, POOL_ERROR_CODES, PoolError, type PoolErrorOptions } from "@supermachine/pool";
import {
  isRootfsError,
  ROOTFS_ERROR_CODES,
  RootfsError,
  type RootfsErrorOptions,
} from "@supermachine/rootfs";
import { describe, expect, expectTypeOf, it } from "vitest";
import { SUPERMACHINE_ERROR_CODES, SupermachineError, type SupermachineErrorOptions } from "./errors";

type Shape = { cause?: unknown; details?: Record<string, unknown> };

const packages = [
  { pkg: "agent-protocol", Cls: AgentError, codes: AGENT_ERROR_CODES, guard: isAgentError },
  { pkg: "pool", Cls: PoolError, codes: POOL_ERROR_CODES, guard: isPoolError },
  { pkg: "oci", Cls: OciError, codes: OCI_ERROR_CODES, guard: isOciError },
  { pkg: "rootfs", Cls: RootfsError, codes: ROOTFS_ERROR_CODES, guard: isRootfsError },
  { pkg: "hypervisor", Cls: HypervisorError, codes: HYPERVISOR_ERROR_CODES, guard: isHypervisorError },
  { pkg: "core", Cls: SupermachineError, codes: SUPERMACHINE_ERROR_CODES, guard: undefined },
] as const;

// A constructor that takes any of the package's codes with the one options shape.
type AnyErrorClass = new (
  code: never,
  message: string,
  options?: Shape,
) => Error & {
  code: string;
  details: Record<string, unknown>;
};

describe("one error shape across the packages", () => {
  it("every package's constructor options are exactly { cause, details }", () => {
    expectTypeOf<AgentErrorOptions>().toEqualTypeOf<Shape>();
    expectTypeOf<PoolErrorOptions>().toEqualTypeOf<Shape>();
    expectTypeOf<OciErrorOptions>().toEqualTypeOf<Shape>();
    expectTypeOf<RootfsErrorOptions>().toEqualTypeOf<Shape>();
    expectTypeOf<HypervisorErrorOptions>().toEqualTypeOf<Shape>();
    expectTypeOf<SupermachineErrorOptions>().toEqualTypeOf<Shape>();
  });

  for (const { pkg, Cls, codes } of packages) {
    it(`${pkg}: ${Cls.name} has code, message, cause and details (and nothing else of its own)`, () => {
      const make = Cls as unknown as AnyErrorClass;
      const cause = new Error("root cause");
      const e = new make(codes[0] as never, "what to do", { cause, details: { k: 1 } });
      expect(e).toBeInstanceOf(Error);
      expect(e.name).toBe(Cls.name);
      expect(e.code).toBe(codes[0]);
      expect(e.message).toBe("what to do");
      expect(e.cause).toBe(cause);
      expect(e.details).toEqual({ k: 1 });
      expect(Object.keys(e).sort()).toEqual(["code", "details", "name"]);

      const bare = new make(codes[0] as never, "m");
      expect(bare.cause).toBeUndefined();
      expect("cause" in bare).toBe(false);
      expect(bare.details).toEqual({});
    });
  }

  it("the shape has one home: every class extends @supermachine/base's SupermachineErrorBase", () => {
    expectTypeOf<SupermachineErrorBaseOptions>().toEqualTypeOf<Shape>();
    for (const { Cls, codes } of packages) {
      const e = new (Cls as unknown as AnyErrorClass)(codes[0] as never, "m");
      expect(e).toBeInstanceOf(SupermachineErrorBase);
      expect(e).toBeInstanceOf(Cls);
      expect(Object.getPrototypeOf(Cls)).toBe(SupermachineErrorBase);
    }
  });
});

describe("every SM_ code is defined by exactly one package", () => {
  it("no code appears in two packages' lists, and every code is SM_-prefixed and unique", () => {
    const owner = new Map<string, string>();
    const twice: string[] = [];
    for (const { pkg, codes } of packages)
      for (const c of codes) {
        expect(c).toMatch(/^SM_[A-Z0-9_]+$/);
        const prev = owner.get(c);
        if (prev) twice.push(`${c} (${prev}, ${pkg})`);
        owner.set(c, pkg);
      }
    expect(twice).toEqual([]);
  });

  it("core raises the codes it borrows with the owner's string value", () => {
    for (const [code, list] of [
      ["SM_FILE_TOO_LARGE", AGENT_ERROR_CODES],
      ["SM_GUEST_CRASHED", HYPERVISOR_ERROR_CODES],
      ["SM_SNAPSHOT_INVALID", HYPERVISOR_ERROR_CODES],
      ["SM_POOL_CLOSED", POOL_ERROR_CODES],
    ] as const) {
      expect(list as readonly string[]).toContain(code);
      expect(SUPERMACHINE_ERROR_CODES as readonly string[]).not.toContain(code);
      expect(new SupermachineError(code, "m").code).toBe(code);
    }
  });
});

describe("each package's guard accepts only its own codes", () => {
  for (const { pkg, Cls, codes, guard } of packages) {
    if (!guard) continue;
    it(`${pkg}: ${guard.name}`, () => {
      const make = Cls as unknown as AnyErrorClass;
      const own = new make(codes[0] as never, "m");
      expect(guard(own)).toBe(true);
      expect((guard as (e: unknown, c?: string) => boolean)(own, codes[0])).toBe(true);
      // Same class name, but another package's code (or an unknown one): refused.
      for (const other of packages) {
        if (other.pkg === pkg) continue;
        const foreign = Object.assign(new Error("m"), { name: Cls.name, code: other.codes[0] });
        expect(guard(foreign), `${guard.name} must refuse ${other.codes[0]}`).toBe(false);
      }
      expect(guard(Object.assign(new Error("m"), { name: Cls.name, code: "SM_NOT_A_CODE" }))).toBe(false);
      expect(guard({ code: codes[0] })).toBe(pkg === "hypervisor"); // only hypervisor matches on the code alone
    });
  }
});
