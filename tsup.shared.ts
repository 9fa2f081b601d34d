import { defineConfig, type Options } from "tsup";

/**
 * The one tsup configuration of every @supermachine/* package (each package's tsup.config.ts names only
 * its entries). Dual package: ESM (.js + .d.ts) and CommonJS (.cjs + .d.cts) from one build. `shims` maps
 * import.meta.url to the file's own URL in the CJS output; `splitting` (also for CJS) keeps a single copy
 * of the modules shared by several entries in each format. Sibling packages stay external.
 */
export function dualPackage(entry: string[], overrides: Options = {}) {
  return defineConfig({
    entry,
    format: ["esm", "cjs"],
    dts: true,
    splitting: true,
    shims: true,
    clean: true,
    target: "node20",
    external: [/^@supermachine\//],
    tsconfig: "tsconfig.build.json",
    ...overrides,
  });
}
