/**
 * Every package is a dual package: from a consumer project, `require` loads the CommonJS build and
 * `import` the ESM build of each entry point (subpaths too), both with the same export names as the
 * source entry (whose list each package's exports.test.ts pins); TypeScript resolves `.d.cts` for a
 * `.cts` consumer and `.d.ts` for a `.mts` one (module node16), with zero errors. No VM.
 */
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, consumerDir, ENTRY_POINTS, nodeJson, packageJson } from "./_consumer";
import { REPO } from "./_shared";

let dir: string;

beforeAll(() => {
  assertBuilt();
  dir = consumerDir("sm-dual-");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Loaded {
  file: string;
  names: string[];
  kinds: Record<string, string>;
}

const describeExports = (m: string) =>
  `const names = Object.keys(${m}).filter((k) => k !== "default" && k !== "module.exports").sort();` +
  `const kinds = Object.fromEntries(names.map((k) => [k, typeof ${m}[k]]));`;

function viaRequire(spec: string): Loaded {
  const code = `const m = require(${JSON.stringify(spec)}); ${describeExports("m")}
    process.stdout.write(JSON.stringify({ file: require.resolve(${JSON.stringify(spec)}), names, kinds }));`;
  return nodeJson(dir, ["-e", code]) as Loaded;
}

function viaImport(spec: string): Loaded {
  const code = `const m = await import(${JSON.stringify(spec)}); ${describeExports("m")}
    process.stdout.write(JSON.stringify({ file: import.meta.resolve(${JSON.stringify(spec)}), names, kinds }));`;
  return nodeJson(dir, ["--input-type=module", "-e", code]) as Loaded;
}

describe("require and import load every entry point from dist", () => {
  for (const { spec } of ENTRY_POINTS) {
    it(spec, async () => {
      // The vitest alias maps the name to the TypeScript source: the expected list.
      const source = (await import(/* @vite-ignore */ spec)) as Record<string, unknown>;
      const expected = Object.keys(source).sort();
      const kinds = Object.fromEntries(expected.map((k) => [k, typeof source[k]]));
      expect(expected.length).toBeGreaterThan(0);

      const cjs = viaRequire(spec);
      expect(cjs.file).toMatch(/\/dist\/(testing\/)?index\.cjs$/);
      expect(cjs.names).toEqual(expected);
      expect(cjs.kinds).toEqual(kinds);

      const esm = viaImport(spec);
      expect(esm.file).toMatch(/\/dist\/(testing\/)?index\.js$/);
      expect(esm.names).toEqual(expected);
      expect(esm.kinds).toEqual(kinds);
    });
  }

  it("a CommonJS program gets one copy of each package: core's lazily loaded backend is the CJS build too", () => {
    const code = `const core = require("@supermachine/core");
      const rt = require("@supermachine/hypervisor");
      (async () => {
        const kvm = await import("@supermachine/hypervisor-kvm");
        const files = Object.keys(require.cache).filter((f) => f.includes("/packages/"));
        process.stdout.write(JSON.stringify({
          files,
          sameError: require("@supermachine/core").SupermachineError === core.SupermachineError,
          kvmFactory: typeof kvm.createKvmBackend,
          rtNames: Object.keys(rt).length,
        }));
      })();`;
    const r = nodeJson(dir, ["-e", code]) as { files: string[]; sameError: boolean; kvmFactory: string };
    expect(r.sameError).toBe(true);
    expect(r.kvmFactory).toBe("function");
    expect(r.files.length).toBeGreaterThan(0);
    for (const f of r.files) expect(f).toMatch(/\.cjs$/);
  });

  it("one process loading core both ways has two copies, and instanceof works across them", () => {
    const code = `import { createRequire } from "node:module";
      const esm = await import("@supermachine/core");
      const cjs = createRequire(process.cwd() + "/")("@supermachine/core");
      const err = new cjs.SupermachineError("SM_VM_RELEASED", "x");
      process.stdout.write(JSON.stringify({
        twoCopies: esm.Image !== cjs.Image,
        image: Object.create(cjs.Image.prototype) instanceof esm.Image,
        vm: Object.create(esm.Vm.prototype) instanceof cjs.Vm,
        error: err instanceof esm.SupermachineError && err instanceof Error,
        notVm: Object.create(cjs.Image.prototype) instanceof esm.Vm,
        plain: ({}) instanceof esm.Image,
      }));`;
    expect(nodeJson(dir, ["--input-type=module", "-e", code])).toEqual({
      twoCopies: true,
      image: true,
      vm: true,
      error: true,
      notVm: false,
      plain: false,
    });
  });

  it("the bins run (ESM builds) and the agent-protocol subpath shares its classes with the main entry", () => {
    for (const d of ["core", "oci"]) {
      for (const bin of Object.values(packageJson(d).bin ?? {})) {
        const r = spawnSync(process.execPath, [join(REPO, "packages", d, bin), "--help"], {
          encoding: "utf8",
          timeout: 30_000,
        });
        expect(r.status, `${d} ${bin}: ${r.stderr}`).toBe(0);
        expect(r.stdout).toMatch(/supermachine/);
      }
    }
    // One copy of the shared modules per format (tsup splitting also for CJS): the testing entry and
    // the main entry load the same chunk.
    const code = `require("@supermachine/agent-protocol/testing");
      const files = Object.keys(require.cache).filter((f) => f.includes("agent-protocol/dist"));
      process.stdout.write(JSON.stringify(files.map((f) => f.replace(/^.*\\/dist\\//, "")).sort()));`;
    const files = nodeJson(dir, ["-e", code]) as string[];
    expect(files.filter((f) => f.startsWith("chunk-"))).toHaveLength(1);
  });
});

describe("types for both conditions (tsc, module node16)", () => {
  // Uses every package (so each declaration file is loaded and checked: skipLibCheck off) and a few
  // core types; the @ts-expect-error lines prove the types are real, not `any`.
  const consumer = (cjs: boolean) => `
${ENTRY_POINTS.map((e, i) => `import * as p${i} from "${e.spec}";`).join("\n")}
import { Image, SupermachineError, Vm } from "@supermachine/core";
import type { BuildOptions, ExecOutput, PoolOptions } from "@supermachine/core";
${cjs ? 'import coreRequired = require("@supermachine/core");' : ""}

export const count: number = [${ENTRY_POINTS.map((_, i) => `p${i}`).join(", ")}]
  .map((m) => Object.keys(m).length)
  .reduce((a, b) => a + b, 0);

const build: BuildOptions = { ref: "127.0.0.1:5000/busybox:latest" };
const poolOptions: PoolOptions = { min: 1, max: 1 };

export async function run(): Promise<string> {
  const image: Image = await ${cjs ? "coreRequired.Image" : "Image"}.build(build);
  const pool = await image.pool(poolOptions);
  const vm: Vm = await pool.acquire();
  const out: ExecOutput = await vm.exec({ argv: ["echo", "hi"] });
  await pool.shutdown();
  // @ts-expect-error -- ref must be a string
  await Image.build({ ref: 42 });
  return out.stdout.toString();
}

export const isError = (e: unknown): boolean => e instanceof SupermachineError && e.code.length > 0;
// @ts-expect-error -- not an export
export type Missing = import("@supermachine/core").NoSuchExport;
`;

  for (const kind of ["cts", "mts"] as const) {
    it(`a .${kind} consumer type-checks against the ${kind === "cts" ? ".d.cts" : ".d.ts"} declarations`, () => {
      const file = `consumer-${kind}.${kind}`;
      writeFileSync(join(dir, file), consumer(kind === "cts"));
      const tsconfig = `tsconfig-${kind}.json`;
      writeFileSync(
        join(dir, tsconfig),
        JSON.stringify({
          compilerOptions: {
            module: "node16",
            moduleResolution: "node16",
            target: "ES2022",
            strict: true,
            noEmit: true,
            skipLibCheck: false,
            types: ["node"],
          },
          files: [file],
        }),
      );
      const tsc = join(REPO, "node_modules", "typescript", "bin", "tsc");
      const r = spawnSync(process.execPath, [tsc, "-p", tsconfig, "--listFiles"], {
        cwd: dir,
        encoding: "utf8",
      });
      // Without errors the output is only the list of files in the program.
      const listed = r.stdout.split("\n").filter(Boolean);
      expect(listed.filter((l) => !l.startsWith("/")).join("\n") + r.stderr).toBe("");
      expect(r.status).toBe(0);
      const decl = kind === "cts" ? /\/core\/dist\/index\.d\.cts$/ : /\/core\/dist\/index\.d\.ts$/;
      const other = kind === "cts" ? /\/dist\/index\.d\.ts$/ : /\/dist\/index\.d\.cts$/;
      expect(listed.some((f) => decl.test(f))).toBe(true);
      expect(listed.filter((f) => other.test(f))).toEqual([]);
    });
  }
});
