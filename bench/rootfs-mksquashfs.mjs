// Bench: @supermachine/rootfs squashfs writer vs mksquashfs on the same unpacked tree, gzip, 128 KiB blocks.
// Run: npx lerna run build --scope @supermachine/rootfs && node bench/rootfs-mksquashfs.mjs [--runs N] [--src DIR...]
// Tree: the debian-python fixture if scripts/setup built it (unpacked with umoci), else --src dirs (default
// /usr/lib/python3.11 + /usr/share/perl) plus generated files.
// Our writer reads the tree as a tar (made once, untimed: that is the shape layers arrive in); mksquashfs reads
// the directory. Both timed wall-clock, interleaved, best of N. Writes bench/results/rootfs.json.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, homedir, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildRootfs, tarFileLayer } from "../packages/rootfs/dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf("--runs") + 1] || 0) || 2;
const srcIdx = args.indexOf("--src");
const sources = srcIdx >= 0 ? args.slice(srcIdx + 1) : ["/usr/lib/python3.11", "/usr/share/perl"];

const work = mkdtempSync(join(tmpdir(), "sm-bench-rootfs-"));
try {
  // The tree: the debian-python fixture (debootstrap minbase + python3) unpacked by umoci when scripts/setup made it;
  // else copies of real system directories plus generated content (duplicates, a sparse file, many small files).
  let tree;
  let treeDesc;
  const cache = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "supermachine");
  const fixture = join(cache, "fixtures", "debian-python");
  if (srcIdx < 0 && existsSync(join(fixture, "index.json"))) {
    const bundle = join(work, "bundle");
    execFileSync("umoci", ["unpack", "--image", `${fixture}:latest`, bundle], { stdio: "ignore" });
    tree = join(bundle, "rootfs");
    treeDesc = { fixture: "debian-python (debootstrap minbase + python3), unpacked by umoci" };
  } else {
    tree = join(work, "tree");
    mkdirSync(tree);
    for (const s of sources)
      execFileSync("cp", ["-a", s, join(tree, s.replaceAll("/", "_").replace(/^_/, ""))]);
    const gen = join(tree, "generated");
    mkdirSync(gen);
    for (let i = 0; i < 2000; i++)
      writeFileSync(join(gen, `small-${i}.txt`), `file ${i}\n`.repeat(1 + (i % 50)));
    execFileSync("cp", [
      "-a",
      join(tree, sources[0].replaceAll("/", "_").replace(/^_/, "")),
      join(tree, "duplicate-of-first"),
    ]);
    execFileSync("truncate", ["-s", "32M", join(gen, "sparse.img")]);
    treeDesc = {
      sources,
      generated: "2000 small files, a 32 MiB sparse file, a duplicate of the first source",
    };
  }
  const du = execFileSync("du", ["-sb", "--apparent-size", tree], { encoding: "utf8" }).split("\t")[0];
  const files = Number(execFileSync("sh", ["-c", `find "${tree}" | wc -l`], { encoding: "utf8" }).trim());
  const tar = join(work, "tree.tar");
  execFileSync("tar", ["--numeric-owner", "-C", tree, "-cf", tar, "."]);

  const ours = [];
  const theirs = [];
  let oursBytes = 0;
  let theirBytes = 0;
  for (let r = 0; r < runs; r++) {
    const out = join(work, `ours-${r}.sqfs`);
    let t = process.hrtime.bigint();
    const res = await buildRootfs({
      layers: [tarFileLayer(tar)],
      out,
      compression: "gzip",
      blockSize: 131072,
    });
    ours.push(Number(process.hrtime.bigint() - t) / 1e6);
    oursBytes = res.bytes;
    rmSync(out);

    const mk = join(work, `mk-${r}.sqfs`);
    t = process.hrtime.bigint();
    const p = spawnSync(
      "mksquashfs",
      [tree, mk, "-comp", "gzip", "-b", "131072", "-noappend", "-no-progress", "-quiet"],
      { stdio: "ignore" },
    );
    theirs.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (p.status !== 0) throw new Error(`mksquashfs exited ${p.status}`);
    theirBytes = statSync(mk).size;
    rmSync(mk);
  }
  const best = (xs) => Math.min(...xs);
  const mkVersion = execFileSync("mksquashfs", ["-version"], { encoding: "utf8" }).split("\n")[0];
  const result = {
    bench: "rootfs-mksquashfs",
    date: new Date().toISOString(),
    machine: {
      cpu: cpus()[0]?.model,
      cores: cpus().length,
      memGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
    },
    accelerator: "none (host-only, no VM involved)",
    peer: `${mkVersion} (default threads = ${cpus().length})`,
    settings: { compression: "gzip level 9 (both)", blockSize: 131072 },
    tree: { ...treeDesc, bytes: Number(du), entries: files },
    runs,
    oursMs: ours.map(Math.round),
    mksquashfsMs: theirs.map(Math.round),
    timeRatio: +(best(ours) / best(theirs)).toFixed(3),
    oursBytes,
    mksquashfsBytes: theirBytes,
    sizeRatio: +(oursBytes / theirBytes).toFixed(4),
    goals: { timeRatio: "<= 1.0", sizeRatio: "<= 1.02" },
  };
  console.log(
    `rootfs squashfs writer vs ${result.peer}; machine: ${result.machine.cpu}, ${result.machine.cores} cores; accelerator: ${result.accelerator}`,
  );
  console.log(
    `tree: ${(result.tree.bytes / 2 ** 20).toFixed(1)} MiB, ${files} entries; gzip, 128 KiB blocks; best of ${runs}`,
  );
  console.table([
    { writer: "@supermachine/rootfs", "time ms": Math.round(best(ours)), "image bytes": oursBytes },
    { writer: "mksquashfs", "time ms": Math.round(best(theirs)), "image bytes": theirBytes },
    { writer: "ratio (ours/mksquashfs)", "time ms": result.timeRatio, "image bytes": result.sizeRatio },
  ]);
  mkdirSync(join(here, "results"), { recursive: true });
  writeFileSync(join(here, "results", "rootfs.json"), `${JSON.stringify(result, null, 2)}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
