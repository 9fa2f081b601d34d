import { defineConfig } from "tsup";

// Dual package: ESM (.js + .d.ts) and CommonJS (.cjs + .d.cts) from one build. `shims` maps
// import.meta.url to the file's own URL in the CJS output; `splitting` (also for CJS) keeps a single
// copy of the modules shared by several entries in each format. Sibling packages stay external.
export default defineConfig({
  entry: ["src/index.ts", "src/cli.ts"],
  format: ["esm", "cjs"],
  dts: { entry: "src/index.ts" },
  splitting: true,
  shims: true,
  clean: true,
  target: "node20",
  external: [/^@supermachine\//],
  tsconfig: "tsconfig.build.json",
});
