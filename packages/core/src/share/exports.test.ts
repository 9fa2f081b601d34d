import { expect, it } from "vitest";
import * as share from "./index";

it("src/share/index.ts exports exactly the share server API", () => {
  expect(Object.keys(share).sort()).toEqual(["ShareServer", "validateName"]);
});
