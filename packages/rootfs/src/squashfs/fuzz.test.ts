import { execFileSync } from "node:child_process";
import { chmod, link, mkdir, open, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tarFileLayer } from "../layers";
import { buildRootfs } from "../rootfs";
import { diffListings, listDir, listImage, rmrf, tempDir } from "../test-util";

/** mulberry32: small seeded PRNG so failures reproduce. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;
  return { next, int, pick };
}

const CHARS = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,+=@ ",
  "é",
  "ü",
  "ß",
  "日",
  "本",
  "語",
  "🙂",
  "Ω",
  "ж",
];

async function randomTree(
  root: string,
  seed: number,
  blockSize: number,
  opts: { bigDir: number; sparseMiB: number },
) {
  const r = rng(seed);
  const used = new Set<string>();
  const name = (): string => {
    for (;;) {
      let s = "";
      const len = 1 + r.int(24);
      for (let i = 0; i < len; i++) s += r.pick(CHARS);
      if (s === "." || s === ".." || s.startsWith(".wh.") || s.trim() !== s) continue;
      if (!used.has(s)) {
        used.add(s);
        return s;
      }
    }
  };
  const sizes = [0, 1, 100, blockSize - 1, blockSize, blockSize + 1, 2 * blockSize + 17, 3 * blockSize];
  const content = (size: number): Buffer => {
    if (r.next() < 0.5) {
      const b = Buffer.alloc(size);
      for (let i = 0; i < size; i++) b[i] = r.int(256);
      return b;
    }
    const word = Buffer.from(`${name()} `);
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i += word.length) word.copy(b, i);
    return b;
  };
  const dirs = [root];
  const files: string[] = [];
  for (let i = 0; i < 150; i++) {
    const parent = r.pick(dirs);
    const p = join(parent, name());
    const kind = r.next();
    if (kind < 0.2) {
      await mkdir(p);
      await chmod(p, r.pick([0o755, 0o700, 0o1777, 0o2775]));
      dirs.push(p);
    } else if (kind < 0.85) {
      const size = r.next() < 0.6 ? r.pick(sizes) : r.int(400_000);
      await writeFile(p, content(size));
      await chmod(p, r.pick([0o644, 0o755, 0o600, 0o4755, 0o2755, 0o444]));
      files.push(p);
    } else if (kind < 0.93) {
      await symlink(r.next() < 0.5 ? name() : `../${name()}/${name()}`, p);
    } else if (files.length) {
      await link(r.pick(files), p);
    }
  }
  // Deep nesting.
  let deep = root;
  for (let i = 0; i < 40; i++) {
    deep = join(deep, `lvl${i}-${r.pick(CHARS)}`);
    await mkdir(deep);
  }
  await writeFile(join(deep, "leaf"), "bottom");
  // A large sparse file with a little data in the middle.
  if (opts.sparseMiB) {
    const fh = await open(join(root, "sparse.img"), "w");
    await fh.truncate(opts.sparseMiB << 20);
    await fh.write(Buffer.from("data in the middle"), 0, 18, (opts.sparseMiB << 20) / 2 + 5);
    await fh.close();
  }
  // Many entries in one directory.
  if (opts.bigDir) {
    const big = join(root, "big dir");
    await mkdir(big);
    for (let i = 0; i < opts.bigDir; i++)
      await writeFile(join(big, `f${i} ${r.pick(CHARS)}`), i % 3 === 0 ? "" : `${i}`);
  }
}

let dir: string;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await rmrf(dir);
});

describe("property: random trees survive write -> sqfs2tar", () => {
  const cases = [
    { seed: 1, blockSize: 131072, bigDir: 10_000, sparseMiB: 32 },
    { seed: 2, blockSize: 4096, bigDir: 0, sparseMiB: 1 },
    { seed: 3, blockSize: 65536, bigDir: 500, sparseMiB: 0 },
  ];
  for (const c of cases) {
    it(`seed ${c.seed}, block ${c.blockSize}, ${c.bigDir} entries in one dir, ${c.sparseMiB} MiB sparse`, async () => {
      const tree = join(dir, `tree-${c.seed}`);
      await mkdir(tree);
      await randomTree(tree, c.seed, c.blockSize, c);
      const tar = join(dir, `tree-${c.seed}.tar`);
      execFileSync("tar", ["--numeric-owner", "-C", tree, "-cf", tar, "."]);
      const out = join(dir, `tree-${c.seed}.sqfs`);
      await buildRootfs({ layers: [tarFileLayer(tar)], out, blockSize: c.blockSize });
      const diffs = diffListings(await listImage(out), await listDir(tree), { mtime: true });
      expect(diffs.slice(0, 20)).toEqual([]);
      await rmrf(tree);
    }, 60_000);
  }
});
