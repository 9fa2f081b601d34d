import { dualPackage } from "../../tsup.shared";

export default dualPackage(["src/index.ts"], {
  // The repo's tsconfig is composite (for tsc -b); the d.ts build needs that off.
  dts: { compilerOptions: { composite: false } },
  tsconfig: undefined,
});
