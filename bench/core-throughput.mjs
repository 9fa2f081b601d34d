// bench: sustained fresh-sandbox cycles per second — acquire → exec(["true"]) → release with
// restoreOnRelease: true (a new VM restored for every acquire) — with 1, 2, 8 and 32 concurrent callers,
// against the raw QEMU restore rate of the same snapshot (backend.restore → stop, same concurrency),
// measured in the same run. The pool runs with idle freezing (default) and without (SM_POOL_IDLE_PAUSE=0).
// Also per cycle: CPU time of the VMM processes (children of this process, counted when reaped) and of
// this Node process — where a core cycle spends more than a raw restore under TCG.
//   npx lerna run build && node bench/core-throughput.mjs [seconds=20] [concurrency=1,2,8,32]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCore, ROOT, registry, round, saveResults, table } from "./core-lib.mjs";

const seconds = Number(process.argv[2] ?? process.env.TP_SECONDS ?? 20);
const levels = String(process.argv[3] ?? process.env.TP_LEVELS ?? "1,2,8,32")
  .split(",")
  .map(Number);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const { Image } = await loadCore();
const { createKvmBackend } = await import(join(ROOT, "packages", "hypervisor-kvm", "dist", "index.js"));
const ref = `${registry()}/busybox:latest`;
const image = await Image.build({ ref });
await image.takeHandoff?.()?.stop();
const accel = image.meta.accel;
const snapVm = join(image.snapshotPath, "vm");
const overrides = {
  rootfs: join(image.snapshotPath, "rootfs.sqfs"),
  initrd: join(image.snapshotPath, "initramfs.cpio.gz"),
};
const backend = createKvmBackend({ warn: () => {} });

/** CPU seconds so far: this process, and its reaped children (the VMMs it started and stopped). */
function cpuSeconds() {
  const f = readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
  return { self: (Number(f[11]) + Number(f[12])) / 100, children: (Number(f[13]) + Number(f[14])) / 100 };
}

/** Run `cycle` in `c` concurrent loops for `ms` (after `warmMs` of warm-up); cycles per second. */
async function rate(c, ms, warmMs, cycle) {
  let counting = false;
  let stop = false;
  let done = 0;
  let failed = 0;
  const loops = Array.from({ length: c }, async () => {
    while (!stop) {
      try {
        await cycle();
        if (counting) done++;
      } catch {
        if (counting) failed++;
      }
    }
  });
  await sleep(warmMs);
  counting = true;
  const t0 = performance.now();
  const c0 = cpuSeconds();
  await sleep(ms);
  counting = false;
  const elapsed = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all(loops);
  const c1 = cpuSeconds(); // VMMs stopped during the window are reaped by now (a few of the last cycles' too)
  return {
    perSecond: round(done / elapsed, 2),
    cycles: done,
    failed,
    vmmCpuMsPerCycle: done ? round(((c1.children - c0.children) * 1000) / done, 0) : null,
    nodeCpuMsPerCycle: done ? round(((c1.self - c0.self) * 1000) / done, 0) : null,
  };
}

const out = { accel, seconds, levels: [] };
const rows = [
  [
    "callers",
    "core (frozen idle)",
    "core (SM_POOL_IDLE_PAUSE=0)",
    "raw QEMU restore",
    "ratio",
    "VMM CPU ms/cycle core / raw",
    "goal",
  ],
];
for (const c of levels) {
  process.stderr.write(`[core-throughput] ${c} callers\n`);
  const warm = Math.min(10_000, 3000 + c * 300);
  const raw = await rate(c, seconds * 1000, warm, async () => {
    const v = await backend.restore(snapVm, overrides);
    await v.stop();
  });
  const core = {};
  for (const pause of ["1", "0"]) {
    process.env.SM_POOL_IDLE_PAUSE = pause;
    const pool = await image.pool({
      min: c,
      max: c,
      restoreOnRelease: true,
      acquireTimeoutMs: 0,
      restoreTimeoutMs: 120_000,
    });
    core[pause] = await rate(c, seconds * 1000, warm, async () => {
      const vm = await pool.acquire();
      try {
        const r = await vm.exec({ argv: ["true"] });
        if (r.exitCode !== 0) throw new Error(`exit ${r.exitCode}`);
      } finally {
        await vm.release();
      }
    });
    await pool.shutdown();
  }
  delete process.env.SM_POOL_IDLE_PAUSE;
  const r = {
    callers: c,
    core: core["1"],
    coreNoPause: core["0"],
    raw,
    ratio: round(core["1"].perSecond / raw.perSecond, 2),
  };
  out.levels.push(r);
  rows.push([
    c,
    `${r.core.perSecond}/s${r.core.failed ? ` (${r.core.failed} failed)` : ""}`,
    `${r.coreNoPause.perSecond}/s`,
    `${r.raw.perSecond}/s`,
    r.ratio,
    `${r.core.vmmCpuMsPerCycle} / ${r.raw.vmmCpuMsPerCycle}`,
    "≥ 0.8×",
  ]);
}
console.log(`accelerator: ${accel}; shared, loaded machine: compare the ratios, measured in one run`);
table(rows);
saveResults("throughput", out);
process.exit(0);
