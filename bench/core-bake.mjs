// bench: cold bake, per phase, against the raw hypervisor doing boot → ready → capture in the same run.
//   Phases are timed from Image.build's onProgress events (each marks the start of its phase):
//   resolve (+ pull when layers are not cached) → rootfs → initramfs → boot (to the agent's `ready`)
//   → snapshot (capture, metadata) → done. The raw side boots the same rootfs + initramfs with the
//   hypervisor package, connects the agent, waits for `ready` and captures with vm.snapshot().
//   Rounds alternate core and raw so the machine's load hits both alike.
//   npx lerna run build && node bench/core-bake.mjs [rounds=3]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCore, ROOT, registry, round, saveResults, summary, table } from "./core-lib.mjs";

const rounds = Number(process.argv[2] ?? process.env.BAKE_ROUNDS ?? 3);
setInterval(() => {}, 1 << 30); // raw agent calls are not core operations: keep the loop alive
const { Image } = await loadCore();
const { createKvmBackend } = await import(join(ROOT, "packages", "hypervisor-kvm", "dist", "index.js"));
const { connectAgent } = await import(join(ROOT, "packages", "agent-protocol", "dist", "index.js"));
const ref = `${registry()}/busybox:latest`;
const backend = createKvmBackend({ warn: () => {} });
const PHASES = ["resolve", "pull", "rootfs", "initramfs", "boot", "warmup", "snapshot", "done"];

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
  const seen = PHASES.filter((p) => first.has(p));
  const ms = {};
  for (let i = 0; i < seen.length - 1; i++) ms[seen[i]] = first.get(seen[i + 1]) - first.get(seen[i]);
  return { dir, ms, total, snapshotPath: image.snapshotPath, kernelDir: image.meta.kernel.dir, image };
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
for (let r = 0; r < rounds; r++) {
  process.stderr.write(`[core-bake] round ${r + 1}/${rounds}\n`);
  const c = await coreBake();
  core.push(c);
  raw.push(await rawBake(c.snapshotPath, c.kernelDir, c.image.meta.memoryMib));
}
const accel = core[0]?.image.meta.accel;
for (const c of core) rmSync(c.dir, { recursive: true, force: true });

const phaseSummary = {};
for (const p of PHASES) {
  const v = core.map((c) => c.ms[p]).filter((x) => typeof x === "number");
  if (v.length) phaseSummary[p] = summary(v);
}
const coreBootToCapture = core.map((c) => (c.ms.boot ?? 0) + (c.ms.warmup ?? 0) + (c.ms.snapshot ?? 0));
const rawBootToCapture = raw.map((x) => x.bootToReady + x.capture);
const out = {
  accel,
  rounds,
  phasesMs: phaseSummary,
  totalMs: summary(core.map((c) => c.total)),
  coreBootToCaptureMs: summary(coreBootToCapture),
  rawBootToReadyMs: summary(raw.map((x) => x.bootToReady)),
  rawCaptureMs: summary(raw.map((x) => x.capture)),
  rawBootToCaptureMs: summary(rawBootToCapture),
};
out.ratio = round(out.coreBootToCaptureMs.p50 / out.rawBootToCaptureMs.p50, 2);
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
console.log(`accelerator: ${accel}; shared, loaded machine: compare the ratio, measured in one run`);
table(rows);
saveResults("bake", out);
process.exit(0);
