import { dualPackage } from "../../tsup.shared";

export default dualPackage(["src/index.ts"]);
