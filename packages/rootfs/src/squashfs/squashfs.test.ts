import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { link, mkdir, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tarFileLayer } from "../layers";
import { buildRootfs } from "../rootfs";
import { diffListings, execFileP, listDir, listImage, rmrf, synthLayer, tempDir } from "../test-util";

let dir: string;
let tree: string;
let tarPath: string;
const BIG_DIR = 3000;

const isRoot = process.getuid?.() === 0;

/** A tree on the host disk covering the interesting cases, packed by GNU tar (not by us). */
async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, "etc/deep/er/and/deeper"), { recursive: true });
  await writeFile(join(root, "etc/hostname"), "box\n");
  await writeFile(join(root, "etc/deep/er/and/deeper/file"), "deep");
  await mkdir(join(root, "bin"));
  await writeFile(join(root, "bin/busybox"), randomBytes(300_000), { mode: 0o4755 });
  await link(join(root, "bin/busybox"), join(root, "bin/sh"));
  await symlink("busybox", join(root, "bin/ls"));
  await symlink("/nonexistent/target", join(root, "dangling"));
  await mkdir(join(root, "data"));
  const text = Buffer.from("the quick brown fox jumps over the lazy dog\n".repeat(20_000));
  await writeFile(join(root, "data/text"), text);
  await writeFile(join(root, "data/text-copy"), text); // deduplicated
  await writeFile(join(root, "data/exact-block"), randomBytes(131072));
  await writeFile(join(root, "data/block-plus-1"), randomBytes(131073));
  await writeFile(join(root, "data/block-minus-1"), randomBytes(131071));
  await writeFile(join(root, "data/empty"), "");
  await writeFile(join(root, "data/sparse"), "");
  await truncate(join(root, "data/sparse"), 8 << 20);
  await mkdir(join(root, "tmp"), { mode: 0o1777 });
  execFileSync("chmod", ["1777", join(root, "tmp")]);
  await mkdir(join(root, "big"));
  for (let i = 0; i < BIG_DIR; i++)
    await writeFile(join(root, "big", `entry-with-a-longish-name-${String(i).padStart(5, "0")}`), `${i}`);
  await writeFile(join(root, "name with spaces ünïcödé 日本"), "u");
  if (isRoot) {
    execFileSync("mknod", [join(root, "null"), "c", "1", "3"]);
    execFileSync("mkfifo", [join(root, "fifo")]);
    execFileSync("chown", ["-h", "1000:1001", join(root, "etc/hostname"), join(root, "bin/ls")]);
  }
}

beforeAll(async () => {
  dir = await tempDir();
  tree = join(dir, "tree");
  await mkdir(tree);
  await makeTree(tree);
  tarPath = join(dir, "tree.tar");
  execFileSync("tar", ["--numeric-owner", "-C", tree, "-cf", tarPath, "."]);
}, 60_000);
afterAll(async () => {
  await rmrf(dir);
});

describe("squashfs writer, judged by squashfs-tools(-ng) and the kernel", () => {
  let image: string;
  let sha: string;
  beforeAll(async () => {
    image = join(dir, "ours.sqfs");
    const r = await buildRootfs({ layers: [tarFileLayer(tarPath)], out: image });
    sha = r.sha256;
    expect(r.bytes % 4096).toBe(0);
  }, 60_000);

  it("sqfs2tar lists exactly the input tree (paths, types, modes, owners, targets, contents, mtimes)", async () => {
    const diffs = diffListings(await listImage(image), await listDir(tree), { mtime: true });
    expect(diffs).toEqual([]);
  });

  it("rdsquashfs and unsquashfs accept it; the hard link count and ext inodes are right", async () => {
    const { stdout } = await execFileP("rdsquashfs", ["-s", "bin/sh", image]);
    expect(stdout).toMatch(/Hard link count: 2/);
    const ls = await execFileP("unsquashfs", ["-lls", "-d", "", image], { maxBuffer: 64 << 20 });
    expect(ls.stdout.split("\n").filter((l) => l.includes("/big/entry-with")).length).toBe(BIG_DIR);
    const big = await execFileP("rdsquashfs", ["-s", "big", image]);
    expect(big.stdout).toMatch(/extended directory/);
    expect(big.stdout).toMatch(/Directory index entries: [1-9]/);
    const sparse = await execFileP("rdsquashfs", ["-s", "data/sparse", image]);
    expect(sparse.stdout).toMatch(/^Sparse: 8388608$/m);
    expect(sparse.stdout).toMatch(/Block #63 size: 0 /);
  });

  it("sqfsdiff finds no difference against mksquashfs -comp gzip -b 131072 of the same tree", async () => {
    const mk = join(dir, "mk.sqfs");
    await execFileP("mksquashfs", [
      tree,
      mk,
      "-comp",
      "gzip",
      "-b",
      "131072",
      "-noappend",
      "-quiet",
      "-no-progress",
    ]);
    const r = spawnSync("sqfsdiff", ["-a", image, "-b", mk], { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("deduplicates identical files and stores sparse blocks as holes", async () => {
    const st = await stat(image);
    // 300k random + 3x128k random + small; the 8 MiB sparse file and the duplicate text cost ~nothing.
    expect(st.size).toBeLessThan(1_000_000);
  });

  it("is deterministic: same input, same bytes, regardless of concurrency", async () => {
    const again = await buildRootfs({
      layers: [tarFileLayer(tarPath)],
      out: join(dir, "again.sqfs"),
      concurrency: 1,
    });
    expect(again.sha256).toBe(sha);
  });

  it("works with 4 KiB blocks and without compression", async () => {
    const out = join(dir, "small-blocks.sqfs");
    await buildRootfs({ layers: [tarFileLayer(tarPath)], out, blockSize: 4096, compression: "none" });
    expect(diffListings(await listImage(out), await listDir(tree), { mtime: true })).toEqual([]);
  });

  // Probe: can this machine loop-mount squashfs? (needs root and a kernel with squashfs + loop.)
  const probe = (() => {
    if (!isRoot) return "not root";
    const t = spawnSync("sh", ["-c", "grep -qw squashfs /proc/filesystems && test -e /dev/loop-control"]);
    return t.status === 0 ? null : "kernel has no squashfs or no loop devices";
  })();
  it.skipIf(probe !== null)(
    `the Linux kernel mounts it and sees the same tree${probe ? ` (skipped: ${probe})` : ""}`,
    async () => {
      const mnt = join(dir, "mnt");
      await mkdir(mnt, { recursive: true });
      await execFileP("mount", ["-o", "loop,ro", "-t", "squashfs", image, mnt]);
      try {
        expect(diffListings(await listDir(mnt), await listDir(tree), { mtime: true })).toEqual([]);
        // Lookups by name in the big directory go through the directory index.
        for (const i of [0, 1, 777, 1500, BIG_DIR - 1]) {
          const name = `entry-with-a-longish-name-${String(i).padStart(5, "0")}`;
          expect((await stat(join(mnt, "big", name))).size).toBe(String(i).length);
        }
        await expect(stat(join(mnt, "big", "entry-with-a-longish-name-99999"))).rejects.toMatchObject({
          code: "ENOENT",
        });
      } finally {
        await execFileP("umount", [mnt]);
      }
    },
  );
  it.skipIf(probe !== null)(
    `the kernel reads the xattr table (user., trusted., binary security.capability)${probe ? ` (skipped: ${probe})` : ""}`,
    async () => {
      const cap = Buffer.from("0100000200200000000000000000000000000000", "hex"); // v2 capability: cap_net_raw
      const layer = await synthLayer("sha256:x", [
        { name: "dir/", type: "directory", pax: { "SCHILY.xattr.user.dirattr": "on a dir" } },
        {
          name: "dir/ping",
          data: "binary",
          mode: 0o755,
          pax: {
            "LIBARCHIVE.xattr.security.capability": cap.toString("base64"),
            "SCHILY.xattr.trusted.t": "tv",
            "SCHILY.xattr.user.a": "1",
          },
        },
        { name: "dir/same", data: "other", pax: { "SCHILY.xattr.user.a": "1" } },
      ]);
      const img = join(dir, "xattr.sqfs");
      await buildRootfs({ layers: [layer], out: img });
      const mnt = join(dir, "mnt-x");
      await mkdir(mnt, { recursive: true });
      await execFileP("mount", ["-o", "loop,ro", "-t", "squashfs", img, mnt]);
      try {
        const py = `import os,sys,json
out={}
for p in sys.argv[1:]:
    out[os.path.basename(p)]={k: os.getxattr(p,k,follow_symlinks=False).hex() for k in sorted(os.listxattr(p,follow_symlinks=False))}
print(json.dumps(out))`;
        const { stdout } = await execFileP("python3", [
          "-c",
          py,
          join(mnt, "dir"),
          join(mnt, "dir/ping"),
          join(mnt, "dir/same"),
        ]);
        const hex = (s: string) => Buffer.from(s).toString("hex");
        expect(JSON.parse(stdout)).toEqual({
          dir: { "user.dirattr": hex("on a dir") },
          ping: { "security.capability": cap.toString("hex"), "trusted.t": hex("tv"), "user.a": hex("1") },
          same: { "user.a": hex("1") },
        });
      } finally {
        await execFileP("umount", [mnt]);
      }
    },
  );
});
