import { describe, expect, it } from "vitest";
import * as api from "./index";
import * as testing from "./testing/index";

describe("public exports", () => {
  it("the main entry exports exactly this list", () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        "AgentChild",
        "AgentClient",
        "AgentError",
        "DEFAULT_WINDOW",
        "FILE_MAX",
        "FS_MAX_OUTSTANDING",
        "FS_MAX_SHARES",
        "FS_MAX_WRITE",
        "FS_REPLY_MAX",
        "FS_REQ_BUF",
        "FS_TAG_MAX",
        "HELLO_RESEND_MS",
        "HELLO_TIMEOUT_MS",
        "MAX_FRAME",
        "MIN_MAX_FRAME",
        "PROTOCOL_VERSION",
        "VERSION",
        "connectAgent",
        "decodeBootConfig",
        "decodeFrame",
        "encodeBootConfig",
        "encodeFrame",
        "isAgentError",
      ].sort(),
    );
  });

  it("the ./testing entry exports only the reference agent (a test double)", () => {
    expect(Object.keys(testing).sort()).toEqual(["ReferenceAgent", "startReferenceAgent"]);
  });
});
