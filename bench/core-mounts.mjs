// bench: a live host share (FUSE relayed by the guest agent, served by core's ShareServer) vs the guest's
// own tmpfs, same VM, same run, same commands (busybox). Accelerator stated (TCG here: every number
// includes emulated guest time; ratios are the point).
//   read 100 MiB · write 100 MiB · `ls -l` of 10k files (10k lstat) · tree walk (find over 5k files
//   in 100 dirs, `git status`-like readdir + lstat).
//   npx lerna run build && node bench/core-mounts.mjs
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCore, registry, round, saveResults, table } from "./core-lib.mjs";

const MIB = Number(process.env.SM_BENCH_MIB ?? 100);
const FILES = Number(process.env.SM_BENCH_FILES ?? 10_000);
const ROUNDS = Number(process.env.SM_BENCH_ROUNDS ?? 2);
const { Image } = await loadCore();

// Back the share with host tmpfs when available, like the guest side.
const base = mkdtempSync(join(process.platform === "linux" ? "/dev/shm" : tmpdir(), "sm-bench-share-"));
const share = join(base, "share");
mkdirSync(join(share, "many"), { recursive: true });
for (let i = 0; i < FILES; i++) writeFileSync(join(share, "many", `f${i}`), "x");
for (let d = 0; d < 100; d++) {
  mkdirSync(join(share, "tree", `d${d}`), { recursive: true });
  for (let i = 0; i < 50; i++)
    writeFileSync(join(share, "tree", `d${d}`, `f${i}.js`), "module.exports = 1;\n");
}

const image = await Image.build({
  ref: `${registry()}/busybox:latest`,
  name: "bench-mounts",
  memoryMib: 768,
  mounts: [
    { hostPath: share, guestTag: "bench", guestPath: "/share" },
    // The same directory with a 1 s name/attribute cache (the cacheTtlMs trade-off).
    { hostPath: share, guestTag: "benchc", guestPath: "/sharec", cacheTtlMs: 1000 },
  ],
});
const pool = await image.pool({ min: 1, max: 1 });
const vm = await pool.acquire();
const sh = async (script) => {
  const s = performance.now();
  const r = await vm.exec({ argv: ["sh", "-c", script], timeoutMs: 600_000 });
  const ms = performance.now() - s;
  if (r.exitCode !== 0) throw new Error(`${script}: exit ${r.exitCode}: ${r.stderr}`);
  return ms;
};
try {
  // The guest's own tmpfs gets the same trees (created in the guest; creation is not measured).
  await sh(
    `mkdir -p /bench && mount -t tmpfs -o size=600m none /bench && mkdir -p /bench/many && cd /bench/many && seq 0 ${FILES - 1} | sed 's/^/f/' | xargs touch` +
      " && i=0; while [ $i -lt 100 ]; do mkdir -p /bench/tree/d$i; (cd /bench/tree/d$i && seq 0 49 | sed 's/$/.js/;s/^/f/' | xargs touch); i=$((i+1)); done",
  );
  const ops = {
    write: (d) => `dd if=/dev/zero of=${d}/big bs=1M count=${MIB} 2>/dev/null && sync`,
    read: (d) => `echo 3 > /proc/sys/vm/drop_caches; dd if=${d}/big of=/dev/null bs=1M 2>/dev/null`,
    stat: (d) => `ls -l ${d}/many > /dev/null`,
    walk: (d) => `find ${d}/tree -type f -newer ${d}/tree/d0 | wc -l > /dev/null`,
  };
  const places = [
    ["share", "/share"],
    ["shareTtl1s", "/sharec"],
    ["tmpfs", "/bench"],
  ];
  const best = Object.fromEntries(places.map(([w]) => [w, {}]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, cmd] of Object.entries(ops)) {
      for (const [where, dir] of places) {
        const ms = await sh(cmd(dir));
        best[where][name] = Math.min(best[where][name] ?? Number.POSITIVE_INFINITY, ms);
      }
    }
  }
  const out = { accel: image.meta.accel, mib: MIB, files: FILES, rounds: ROUNDS, ms: {}, ratio: {} };
  const rows = [["metric (best of rounds)", "share", "share, cacheTtlMs 1000", "guest tmpfs", "ratios"]];
  const label = {
    read: `read ${MIB} MiB`,
    write: `write ${MIB} MiB`,
    stat: `ls -l of ${FILES} files`,
    walk: "tree walk, 5000 files",
  };
  for (const name of Object.keys(ops)) {
    out.ms[name] = Object.fromEntries(places.map(([w]) => [w, round(best[w][name], 1)]));
    out.ratio[name] = {
      share: round(best.share[name] / best.tmpfs[name], 2),
      shareTtl1s: round(best.shareTtl1s[name] / best.tmpfs[name], 2),
    };
    rows.push([
      label[name],
      `${out.ms[name].share} ms`,
      `${out.ms[name].shareTtl1s} ms`,
      `${out.ms[name].tmpfs} ms`,
      `${out.ratio[name].share}x / ${out.ratio[name].shareTtl1s}x`,
    ]);
  }
  console.log(`accelerator: ${out.accel}`);
  table(rows);
  saveResults("mounts", out);
} finally {
  await vm.release().catch(() => undefined);
  await pool.shutdown();
  rmSync(base, { recursive: true, force: true });
}
