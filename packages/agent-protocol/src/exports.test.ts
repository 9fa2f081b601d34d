import { describe, expect, it } from "vitest";
import { checkPackage, runtimeNames, UPDATE_COMMAND } from "../../../scripts/api-manifest.mjs";
import * as api from "./index";
import * as testing from "./testing/index";

// The public surface (names, kinds, types) is committed in api/*.api.md; see scripts/api-manifest.mjs.
describe("@supermachine/agent-protocol exports", () => {
  it("match the committed manifests api/index.api.md and api/testing.api.md", () => {
    const problems = checkPackage("agent-protocol");
    if (problems) expect.fail(problems);
  }, 120_000);

  it("the main entry exists at runtime exactly as its manifest lists it", () => {
    expect(Object.keys(api).sort(), `stale manifest? ${UPDATE_COMMAND}`).toEqual(
      runtimeNames("agent-protocol"),
    );
  });

  it("the ./testing entry exports only the reference agent (a test double)", () => {
    expect(Object.keys(testing).sort()).toEqual(runtimeNames("agent-protocol", "./testing"));
    expect(runtimeNames("agent-protocol", "./testing")).toEqual(["ReferenceAgent", "startReferenceAgent"]);
  });
});
