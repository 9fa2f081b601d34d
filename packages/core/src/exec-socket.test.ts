import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SupermachineError } from "./errors";
import { serveExecSocket } from "./exec-socket";
import type { ExecOptions } from "./types";

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** Send `lines` on one connection and collect `count` reply lines. */
function talk(path: string, lines: string[], count: number): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("error", reject);
    sock.on("data", (chunk: string) => {
      buf += chunk;
      const got = buf.split("\n").filter((l) => l.length > 0);
      if (got.length >= count) {
        sock.destroy();
        resolve(got.map((l) => JSON.parse(l)));
      }
    });
    sock.write(lines.map((l) => `${l}\n`).join(""));
  });
}

describe("the vm.execPath socket (JSON lines)", () => {
  it("answers each request line in order: output as base64, errors as {error: {code, message}}", async () => {
    dir = await mkdtemp(join(tmpdir(), "sm-exec-sock-"));
    const path = join(dir, "exec.sock");
    const seen: ExecOptions[] = [];
    const server = serveExecSocket(path, async (o) => {
      seen.push(o);
      if (o.argv[0] === "boom") throw new SupermachineError("SM_INVALID_OPTIONS", "bad argv");
      return { stdout: Buffer.from("out"), stderr: Buffer.from("err"), exitCode: 3 };
    });
    try {
      const replies = await talk(
        path,
        [
          JSON.stringify({ argv: ["echo"], stdin: "dropped" }),
          "",
          JSON.stringify({ argv: ["boom"] }),
          "{not json",
        ],
        3,
      );
      expect(replies).toEqual([
        { exitCode: 3, stdout: "b3V0", stderr: "ZXJy", timedOut: false },
        { error: { code: "SM_INVALID_OPTIONS", message: "bad argv" } },
        { error: { code: "EIO", message: expect.any(String) } },
      ]);
      // `stdin` is not passed on to exec
      expect(seen).toEqual([{ argv: ["echo"] }, { argv: ["boom"] }]);
    } finally {
      server.close();
    }
  });
});
