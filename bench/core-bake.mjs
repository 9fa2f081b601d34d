// bench: cold bake, per phase, against the raw hypervisor doing boot → ready → capture in the same run.
//   Phases are timed from Image.build's onProgress events (each marks the start of its phase):
//   resolve (+ pull when layers are not cached) → rootfs → initramfs → boot (to the agent's `ready`)
//   → snapshot (capture, metadata) → done. The raw side boots the same rootfs + initramfs with the
//   hypervisor package, connects the agent, waits for `ready` and captures with vm.snapshot().
//   Rounds alternate core and raw so the machine's load hits both alike; the ratio is the median of the
//   per-round core/raw ratios (and, for reference, the ratio of the two medians).
//   The pull phase: one more core bake per round in a child process with an empty cache root
//   (XDG_CACHE_HOME = a temp dir, the same kernel via SUPERMACHINE_KERNEL_DIR), so the image's layers
//   are pulled from the registry — the other bakes find them cached.
//   npx lerna run build && node bench/core-bake.mjs [rounds=3]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCore, ROOT, registry, round, saveResults, summary, table } from "./core-lib.mjs";

const rounds = Number(process.argv[2] ?? process.env.BAKE_ROUNDS ?? 3);
setInterval(() => {}, 1 << 30); // raw agent calls are not core operations: keep the loop alive
const { Image } = await loadCore();
const PHASES = ["resolve", "pull", "rootfs", "initramfs", "boot", "warmup", "snapshot", "done"];

/** ms per phase from the first onProgress event of each phase to the next one's. */
function phaseMs(first) {
  const seen = PHASES.filter((p) => first.has(p));
  const ms = {};
  for (let i = 0; i < seen.length - 1; i++) ms[seen[i]] = first.get(seen[i + 1]) - first.get(seen[i]);
  return ms;
}

if (process.argv[2] === "--cold-child") {
  // A bake with nothing cached (run by coldPullBake below): print its phases as JSON, stop the VM.
  const first = new Map();
  const image = await Image.build({
    ref: `${registry()}/busybox:latest`,
    snapshotsDir: process.argv[3],
    onProgress: (e) => {
      if (!first.has(e.phase)) first.set(e.phase, performance.now());
    },
  });
  await image.takeHandoff?.()?.stop();
  console.log(JSON.stringify(phaseMs(first)));
  process.exit(0);
}
const { createKvmBackend } = await import(join(ROOT, "packages", "hypervisor-kvm", "dist", "index.js"));
const { connectAgent } = await import(join(ROOT, "packages", "agent-protocol", "dist", "index.js"));
const ref = `${registry()}/busybox:latest`;
const backend = createKvmBackend({ warn: () => {} });

/** One cold bake into a fresh snapshots dir: ms per phase (from one phase's first event to the next). */
async function coreBake() {
  const dir = mkdtempSync(join(tmpdir(), "sm-bench-bake-"));
  const first = new Map();
  const t0 = performance.now();
  const image = await Image.build({
    ref,
    snapshotsDir: dir,
    onProgress: (e) => {
      if (!first.has(e.phase)) first.set(e.phase, performance.now());
    },
  });
  const total = performance.now() - t0;
  await image.takeHandoff?.()?.stop();
  return {
    dir,
    ms: phaseMs(first),
    total,
    snapshotPath: image.snapshotPath,
    kernelDir: image.meta.kernel.dir,
    image,
  };
}

/** A cold bake with an empty cache root in a child process: its phases, pull included. */
function coldPullBake(kernelDir) {
  const cache = mkdtempSync(join(tmpdir(), "sm-bench-coldcache-"));
  const dir = mkdtempSync(join(tmpdir(), "sm-bench-coldbake-"));
  try {
    const res = spawnSync(process.execPath, [process.argv[1], "--cold-child", dir], {
      encoding: "utf8",
      env: {
        ...process.env,
        XDG_CACHE_HOME: cache,
        SUPERMACHINE_KERNEL_DIR: kernelDir,
        SUPERMACHINE_REGISTRY: registry(),
      },
    });
    if (res.status !== 0) throw new Error(`cold bake failed: ${res.stderr}`);
    return JSON.parse(res.stdout.trim().split("\n").pop());
  } finally {
    rmSync(cache, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The raw hypervisor: boot the same rootfs + initramfs → agent hello → ready → vm.snapshot(). */
async function rawBake(snapshotPath, kernelDir, memoryMib) {
  const out = mkdtempSync(join(tmpdir(), "sm-bench-rawbake-"));
  const t0 = performance.now();
  const vm = await backend.boot({
    kernel: kernelDir,
    initrd: join(snapshotPath, "initramfs.cpio.gz"),
    rootfs: join(snapshotPath, "rootfs.sqfs"),
    memoryMib,
    vcpus: 1,
    network: "none",
  });
  const client = await connectAgent(await vm.agentStream(), { helloTimeoutMs: 120_000 });
  if (!client.ready) await new Promise((r) => client.once("ready", r));
  const t1 = performance.now();
  await vm.snapshot(join(out, "vm"));
  const t2 = performance.now();
  client.close();
  await vm.stop();
  rmSync(out, { recursive: true, force: true });
  return { bootToReady: t1 - t0, capture: t2 - t1 };
}

const core = [];
const raw = [];
const cold = [];
for (let r = 0; r < rounds; r++) {
  process.stderr.write(`[core-bake] round ${r + 1}/${rounds}\n`);
  const c = await coreBake();
  core.push(c);
  raw.push(await rawBake(c.snapshotPath, c.kernelDir, c.image.meta.memoryMib));
  cold.push(coldPullBake(c.kernelDir));
}
const accel = core[0]?.image.meta.accel;
for (const c of core) rmSync(c.dir, { recursive: true, force: true });

const phaseSummary = {};
for (const p of PHASES) {
  const v = core.map((c) => c.ms[p]).filter((x) => typeof x === "number");
  if (v.length) phaseSummary[p] = summary(v);
}
const coldSummary = {};
for (const p of PHASES) {
  const v = cold.map((c) => c[p]).filter((x) => typeof x === "number");
  if (v.length) coldSummary[p] = summary(v);
}
const coreBootToCapture = core.map((c) => (c.ms.boot ?? 0) + (c.ms.warmup ?? 0) + (c.ms.snapshot ?? 0));
const rawBootToCapture = raw.map((x) => x.bootToReady + x.capture);
const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
};
const out = {
  accel,
  rounds,
  phasesMs: phaseSummary,
  totalMs: summary(core.map((c) => c.total)),
  coreBootToCaptureMs: summary(coreBootToCapture),
  rawBootToReadyMs: summary(raw.map((x) => x.bootToReady)),
  rawCaptureMs: summary(raw.map((x) => x.capture)),
  rawBootToCaptureMs: summary(rawBootToCapture),
  coldPullPhasesMs: coldSummary,
  perRoundRatios: coreBootToCapture.map((c, i) => round(c / rawBootToCapture[i], 3)),
};
out.ratio = round(median(out.perRoundRatios), 2);
out.ratioOfMedians = round(median(coreBootToCapture) / median(rawBootToCapture), 2);
const rows = [["phase", "core p50", "raw hypervisor p50", "ratio", "goal"]];
for (const [p, s] of Object.entries(phaseSummary)) rows.push([p, `${round(s.p50, 0)} ms`, "", "", ""]);
rows.push([
  "boot → ready (core: boot phase)",
  `${round(phaseSummary.boot?.p50, 0)} ms`,
  `${round(out.rawBootToReadyMs.p50, 0)} ms`,
  round((phaseSummary.boot?.p50 ?? 0) / out.rawBootToReadyMs.p50, 2),
  "",
]);
rows.push([
  "capture (core: snapshot phase, + metadata)",
  `${round(phaseSummary.snapshot?.p50, 0)} ms`,
  `${round(out.rawCaptureMs.p50, 0)} ms`,
  round((phaseSummary.snapshot?.p50 ?? 0) / out.rawCaptureMs.p50, 2),
  "",
]);
rows.push([
  "boot → ready → capture",
  `${round(out.coreBootToCaptureMs.p50, 0)} ms`,
  `${round(out.rawBootToCaptureMs.p50, 0)} ms`,
  out.ratio,
  "≤ 1.1×",
]);
rows.push(["cold bake total", `${round(out.totalMs.p50, 0)} ms`, "", "", ""]);
for (const [p, x] of Object.entries(coldSummary))
  rows.push([`empty cache: ${p}`, `${round(x.p50, 0)} ms`, "", "", ""]);
console.log(
  `accelerator: ${accel}; ${rounds} rounds; ratio = median of per-round core/raw (ratio of medians ${out.ratioOfMedians})`,
);
table(rows);
saveResults("bake", out);
process.exit(0);
