import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseRootfsArgs, runRootfsCommand } from "./cli";
import { listImage, rmrf, synthLayer, tempDir } from "./test-util";

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await rmrf(dir);
});

describe("CLI helpers for `supermachine image rootfs`", () => {
  it("parses REF -o out and options; rejects junk with the usage line", () => {
    expect(parseRootfsArgs(["busybox:latest", "-o", "img.sqfs", "--block-size", "65536"])).toEqual({
      ref: "busybox:latest",
      out: "img.sqfs",
      compression: "gzip",
      blockSize: 65536,
    });
    expect(() => parseRootfsArgs(["x"])).toThrow(/usage: supermachine image rootfs/);
    expect(() => parseRootfsArgs(["x", "-o", "y", "--frobnicate"])).toThrow(/unknown option --frobnicate/);
  });

  it("builds the image and prints progress and a summary line", async () => {
    const lines: string[] = [];
    const out = join(dir, "cli.sqfs");
    const r = await runRootfsCommand({
      layers: [await synthLayer("sha256:aaa", [{ name: "hello", data: "world".repeat(1000) }])],
      out,
      write: (l) => lines.push(l),
    });
    expect(lines[0]).toMatch(/^layer 1\/1 sha256:aaa: 1 entries/);
    expect(lines.at(-1)).toContain(`sha256 ${r.sha256}`);
    expect((await listImage(out)).get("hello")?.size).toBe(5000);
  });
});
