import { describe, expect, it } from "vitest";
import * as api from "./index";

describe("public API", () => {
  it("exports exactly these names", () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        "ROOTFS_ERROR_CODES",
        "RootfsError",
        "buildInitramfs",
        "buildRootfs",
        "isRootfsError",
        "resolveModules",
        "runRootfsCommand",
        "tarFileLayer",
        "tarLayer",
      ].sort(),
    );
  });
});
