import { dualPackage } from "../../tsup.shared";

export default dualPackage(["src/index.ts", "src/cli.ts"], {
  dts: { entry: "src/index.ts" },
});
