/**
 * `supermachine image rootfs REF -o FILE` against the fixture registry: the written squashfs holds the
 * image's flattened tree (read back with squashfs-tools-ng's rdsquashfs and squashfs-tools' unsquashfs);
 * an unknown image fails with its code and leaves nothing in the output directory.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures } from "../../../../scripts/lib/fixtures.mjs";
import { bundle, REPO } from "../../../../test/e2e/_shared";

interface Fixtures {
  registry: string;
  images: Record<
    string,
    { ref: string; expected?: { absent: string[]; files: Record<string, { content: string; mode: number }> } }
  >;
}

let f: Fixtures;
let cli: string;
let dir: string;

beforeAll(async () => {
  f = (await fixtures()) as Fixtures;
  cli = await bundle(join(REPO, "packages/core/src/cli.ts"), "cli-rootfs");
  dir = await mkdtemp(join(tmpdir(), "sm-cli-rootfs-"));
});
afterAll(async () => {
  await rm(cli, { force: true });
  await rm(dir, { recursive: true, force: true });
});

function sm(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 170_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("supermachine image rootfs", () => {
  it("writes the flattened layers of an image as squashfs (whiteouts applied, contents and modes kept)", async () => {
    const layers = f.images.layers;
    if (!layers?.expected) throw new Error("the layers fixture has no expected tree");
    const out = join(dir, "layers.sqfs");
    const r = sm("image", "rootfs", layers.ref, "-o", out);
    expect(r.stderr).not.toMatch(/^supermachine: SM_/m);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${out}\n`);
    expect(r.stderr).toMatch(/layers\.sqfs: \d+ bytes, \d+ inodes, sha256 [0-9a-f]{64}/);
    // nothing but the image is left next to it (the temp file was renamed, the spool removed)
    expect(await readdir(dir)).toEqual(["layers.sqfs"]);

    for (const [path, want] of Object.entries(layers.expected.files)) {
      const content = execFileSync("rdsquashfs", ["-c", `/${path}`, out], { encoding: "utf8" });
      expect({ path, content }).toEqual({ path, content: want.content });
      const stat = execFileSync("rdsquashfs", ["-s", `/${path}`, out], { encoding: "utf8" });
      expect(stat).toMatch(new RegExp(`^Access: 0*${want.mode.toString(8)}$`, "m"));
    }
    const listing = execFileSync("unsquashfs", ["-l", "-d", "", out], { encoding: "utf8" });
    for (const gone of layers.expected.absent) expect(listing).not.toMatch(new RegExp(`^/${gone}$`, "m"));
    expect(listing).toMatch(/^\/data$/m);
  });

  it("an unknown image: SM_IMAGE_NOT_FOUND, exit 1, no file written", async () => {
    const sub = await mkdtemp(join(dir, "unknown-"));
    const r = sm("image", "rootfs", "-q", `${f.registry}/no-such-image:latest`, "-o", join(sub, "x.sqfs"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^supermachine: SM_IMAGE_NOT_FOUND: .*no-such-image/);
    expect(await readdir(sub)).toEqual([]);
  });
});
