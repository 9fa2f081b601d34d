import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm"],
  target: "node20",
  clean: true,
  // The repo's tsconfig is composite (for tsc -b); tsup's d.ts build needs that off.
  dts: { compilerOptions: { composite: false } },
});
