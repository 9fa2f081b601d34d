import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildRootfs } from "./rootfs";
import {
  bytesLayer,
  execFileP,
  listImage,
  rmrf,
  type SynthEntry,
  synthLayer,
  tarBytes,
  tempDir,
} from "./test-util";
import type { LayerInput } from "./types";

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await rmrf(dir);
});

async function build(layers: LayerInput[], extra: Parameters<typeof buildRootfs>[0]["extraFiles"] = []) {
  const out = join(dir, `img-${n++}.sqfs`);
  const r = await buildRootfs({ layers, out, extraFiles: extra });
  return { ...r, list: await listImage(out) };
}

async function layers(...ls: SynthEntry[][]): Promise<LayerInput[]> {
  return Promise.all(ls.map((entries, i) => synthLayer(`sha256:layer${i}`, entries, i % 2 === 1)));
}

describe("layer flattening", () => {
  it("applies whiteouts from upper layers and keeps siblings", async () => {
    const { list } = await build(
      await layers(
        [
          { name: "a/", type: "directory" },
          { name: "a/gone", data: "x" },
          { name: "a/kept", data: "y" },
          { name: "b/sub/deep", data: "z" },
        ],
        [{ name: "a/.wh.gone" }, { name: ".wh.b" }, { name: "a/.wh.never-existed" }],
      ),
    );
    expect(list.has("a/gone")).toBe(false);
    expect(list.get("a/kept")?.size).toBe(1);
    expect(list.has("b")).toBe(false);
    expect(list.has("b/sub/deep")).toBe(false);
    expect([...list.keys()].some((p) => p.includes(".wh."))).toBe(false);
  });

  it("opaque directories hide lower content but keep what the same layer adds (either order)", async () => {
    const { list } = await build(
      await layers(
        [
          { name: "d/old", data: "1" },
          { name: "d/sub/old2", data: "2" },
          { name: "e/old", data: "3" },
        ],
        [
          { name: "d/.wh..wh..opq" },
          { name: "d/new", data: "4" },
          { name: "e/new", data: "5" },
          { name: "e/.wh..wh..opq" },
        ],
      ),
    );
    expect([...list.keys()].filter((p) => p.startsWith("d/") || p.startsWith("e/")).sort()).toEqual([
      "d/new",
      "e/new",
    ]);
  });

  it("a whiteout does not delete what the same layer wrote", async () => {
    const { list } = await build(
      await layers([{ name: "x", data: "lower" }], [{ name: "x", data: "upper!" }, { name: ".wh.x" }]),
    );
    expect(list.get("x")?.size).toBe(6);
  });

  it("hard links within and across layers share the inode; replacing one path detaches it", async () => {
    const { list, inodes } = await build(
      await layers(
        [
          { name: "bin/prog", data: "PROGRAM", mode: 0o4755 },
          { name: "bin/alias", type: "link", linkname: "bin/prog" },
          { name: "etc/conf", data: "v1" },
        ],
        [
          { name: "usr/prog2", type: "link", linkname: "/bin/prog" },
          { name: "etc/conf-link", type: "link", linkname: "etc/conf" },
        ],
        [{ name: "etc/conf", data: "v2!" }],
      ),
    );
    const prog = list.get("bin/prog");
    expect(prog?.mode).toBe(0o4755);
    expect(list.get("bin/alias")).toBe(prog); // sqfs2tar emitted them as one hard-link group
    expect(list.get("usr/prog2")).toBe(prog);
    expect(list.get("etc/conf")?.size).toBe(3);
    expect(list.get("etc/conf-link")?.size).toBe(2);
    // root, bin, etc, usr, prog(+2 links), conf, conf-link(old conf)
    expect(inodes).toBe(7);
  });

  it("replaces directories by files and files by directories", async () => {
    const { list } = await build(
      await layers(
        [
          { name: "was-dir/child", data: "c" },
          { name: "was-file", data: "f" },
        ],
        [
          { name: "was-dir", data: "now a file" },
          { name: "was-file/", type: "directory", mode: 0o700 },
          { name: "was-file/inside", data: "i" },
        ],
      ),
    );
    expect(list.get("was-dir")?.type).toBe("file");
    expect(list.has("was-dir/child")).toBe(false);
    expect(list.get("was-file")).toMatchObject({ type: "dir", mode: 0o700 });
    expect(list.get("was-file/inside")?.type).toBe("file");
  });

  it("keeps symlinks, device nodes, fifos, owners, special mode bits, mtimes and xattrs", async () => {
    const mtime = new Date(1_234_567_890_000);
    const { list } = await build(
      await layers([
        { name: "tmp/", type: "directory", mode: 0o1777 },
        { name: "lnk", type: "symlink", linkname: "/does/not/exist" },
        { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 },
        { name: "dev/sda", type: "block-device", devmajor: 8, devminor: 300, mode: 0o660, gid: 6 },
        { name: "run/fifo", type: "fifo", mode: 0o600 },
        { name: "home/app/file", data: "a", uid: 1000, gid: 1000, mode: 0o2640, mtime },
        {
          name: "cap",
          data: "c",
          pax: { "SCHILY.xattr.user.comment": "hello", "SCHILY.xattr.system.posix_acl_access": "x" },
        },
      ]),
    );
    expect(list.get("tmp")).toMatchObject({ type: "dir", mode: 0o1777 });
    expect(list.get("lnk")).toMatchObject({ type: "symlink", target: "/does/not/exist" });
    expect(list.get("dev/null")).toMatchObject({ type: "char", dev: "1,3", mode: 0o666 });
    expect(list.get("dev/sda")).toMatchObject({ type: "block", dev: "8,300", gid: 6 });
    expect(list.get("run/fifo")).toMatchObject({ type: "fifo", mode: 0o600 });
    expect(list.get("home/app/file")).toMatchObject({
      uid: 1000,
      gid: 1000,
      mode: 0o2640,
      mtime: 1_234_567_890,
    });
    expect(list.get("cap")?.xattrs).toEqual({ "user.comment": "hello" });
  });

  it("neutralises absolute paths and rejects ../ escapes with SM_LAYER_INVALID naming layer and entry", async () => {
    const { list } = await build(
      await layers([
        { name: "/etc/abs", data: "a" },
        { name: "./x/../y", data: "b" },
      ]),
    );
    expect(list.has("etc/abs")).toBe(true);
    expect(list.has("y")).toBe(true);
    const bad = await layers([
      { name: "ok", data: "1" },
      { name: "a/../../evil", data: "e" },
    ]);
    await expect(build(bad)).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      layer: "sha256:layer0",
      entry: "a/../../evil",
    });
  });

  it("rejects entries that go through a symlink", async () => {
    const ls = await layers(
      [{ name: "link", type: "symlink", linkname: "/etc" }],
      [{ name: "link/passwd", data: "pwned" }],
    );
    await expect(build(ls)).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      layer: "sha256:layer1",
      entry: "link/passwd",
    });
    const ls2 = await layers([{ name: "h", type: "link", linkname: "missing" }]);
    await expect(build(ls2)).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      message: expect.stringContaining("missing"),
    });
  });

  it("malformed tar, truncated tar and truncated gzip are SM_LAYER_INVALID with the digest", async () => {
    const garbage = Buffer.alloc(4096, 0x41);
    await expect(build([bytesLayer("sha256:garbage", garbage)])).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      message: expect.stringContaining("sha256:garbage"),
    });
    const tar = await tarBytes([
      { name: "big", data: Buffer.alloc(100_000, 7) },
      { name: "after", data: "x" },
    ]);
    await expect(build([bytesLayer("sha256:cut", tar.subarray(0, 50_000))])).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      layer: "sha256:cut",
      entry: "big",
    });
    const gz = gzipSync(tar);
    await expect(build([bytesLayer("sha256:gzcut", gz.subarray(0, gz.length - 100))])).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      layer: "sha256:gzcut",
    });
    // A failed build leaves neither the output nor a temp file behind.
    expect(
      (await readdir(dir)).filter((f) => f.includes(".tmp-") || f.startsWith(".sm-rootfs-spool")),
    ).toEqual([]);
  });

  it("reads zstd-compressed layers; a truncated zstd layer is SM_LAYER_INVALID", async () => {
    const tar = await tarBytes([{ name: "z/file", data: "zstd!".repeat(50_000) }]);
    const zst = execFileSync("zstd", ["-q", "-c"], { input: tar });
    const { list } = await build([bytesLayer("sha256:zst", zst)]);
    expect(list.get("z/file")?.size).toBe(250_000);
    await expect(
      build([bytesLayer("sha256:zstcut", zst.subarray(0, zst.length - 20))]),
    ).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      layer: "sha256:zstcut",
    });
  });

  it("GNU sparse entries (tar --sparse) are refused rather than stored wrong", async () => {
    const src = join(dir, "sparse-src");
    execFileSync("sh", ["-c", `mkdir -p "$0" && truncate -s 1M "$0/s" && printf data >> "$0/s"`, src]);
    const tar = execFileSync("tar", ["--sparse", "--posix", "-C", src, "-cf", "-", "s"]);
    await expect(build([bytesLayer("sha256:sparse", tar)])).rejects.toMatchObject({
      code: "SM_LAYER_INVALID",
      entry: expect.stringContaining("s"),
    });
  });

  it("an empty (0-byte) layer blob is an empty layer", async () => {
    const { list } = await build([
      bytesLayer("sha256:empty", Buffer.alloc(0)),
      ...(await layers([{ name: "a", data: "1" }])),
    ]);
    expect([...list.keys()]).toEqual(["a"]);
  });

  it("names over 256 bytes are SM_NAME_TOO_LONG", async () => {
    const ls = await layers([{ name: `d/${"n".repeat(300)}`, data: "x" }]);
    await expect(build(ls)).rejects.toMatchObject({ code: "SM_NAME_TOO_LONG" });
  });

  it("extraFiles are added on top, creating parents, overriding layer files", async () => {
    const hostFile = join(dir, "host-file");
    await import("node:fs/promises").then((fs) => fs.writeFile(hostFile, "from host"));
    const { list } = await build(await layers([{ name: "etc/resolv.conf", data: "layer" }]), [
      { guestPath: "/etc/resolv.conf", data: "nameserver 10.0.2.3\n", mode: 0o644 },
      { guestPath: "/sm/bin/tool", hostPath: hostFile, mode: 0o755 },
    ]);
    expect(list.get("etc/resolv.conf")?.size).toBe(20);
    expect(list.get("sm/bin/tool")).toMatchObject({ type: "file", mode: 0o755, size: 9 });
    expect(list.get("sm")).toMatchObject({ type: "dir", mode: 0o755 });
    await expect(build([], [{ guestPath: "relative", data: "x" }])).rejects.toMatchObject({
      code: "SM_ROOTFS_CONFIG",
    });
  });

  it("rejects unknown options and bad block sizes", async () => {
    const out = join(dir, "never.sqfs");
    await expect(buildRootfs({ layers: [], out, blockSize: 5000 })).rejects.toMatchObject({
      code: "SM_ROOTFS_CONFIG",
    });
    // biome-ignore lint/suspicious/noExplicitAny: testing a bad key
    await expect(buildRootfs({ layers: [], out, bogus: 1 } as any)).rejects.toMatchObject({
      code: "SM_ROOTFS_CONFIG",
    });
    expect(existsSync(out)).toBe(false);
  });

  it("an empty layer list gives a valid image with just the root", async () => {
    const { list, inodes } = await build([]);
    expect(list.size).toBe(0);
    expect(inodes).toBe(1);
    await execFileP("rdsquashfs", ["-l", "/", join(dir, `img-${n - 1}.sqfs`)]);
  });
});
