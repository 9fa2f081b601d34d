import { describe, expect, it } from "vitest";
import { checkPackage, runtimeNames, UPDATE_COMMAND } from "../../../scripts/api-manifest.mjs";
import * as api from "./index";

// The public surface (names, kinds, types) is committed in api/index.api.md; see scripts/api-manifest.mjs.
describe("@supermachine/base exports", () => {
  it("match the committed manifest api/index.api.md", () => {
    const problems = checkPackage("base");
    if (problems) expect.fail(problems);
  }, 120_000);

  it("exist at runtime exactly as the manifest lists them", () => {
    expect(Object.keys(api).sort(), `stale manifest? ${UPDATE_COMMAND}`).toEqual(runtimeNames("base"));
  });
});
