// bench: Image.build — cold bake (fresh snapshots dir) and cache-hit build (p50/p99), same run.
//   npx lerna run build && node bench/core-build.mjs
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { INTERNAL, loadCore, registry, round, saveResults, summary, table } from "./core-lib.mjs";

const { Image } = await loadCore();
const ref = `${registry()}/busybox:latest`;
const dir = await mkdtemp(join(tmpdir(), "sm-bench-build-"));
try {
  let accel = "?";
  const t0 = performance.now();
  const img = await Image.build({ ref, snapshotsDir: dir });
  const coldMs = performance.now() - t0;
  const handoff = img.takeHandoff?.();
  accel = img.meta?.accel ?? accel;
  await handoff?.stop();
  const hits = [];
  for (let i = 0; i < 200; i++) {
    const s = performance.now();
    await Image.build({ ref, snapshotsDir: dir });
    hits.push(performance.now() - s);
  }
  const hit = summary(hits);
  table([
    ["metric", "value", "goal", "accel"],
    ["cold bake (pull cached, rootfs, boot, snapshot)", `${round(coldMs / 1000, 2)} s`, "-", accel],
    ["cache-hit build p50", `${hit.p50} ms`, "<= 5 ms", accel],
    ["cache-hit build p99", `${hit.p99} ms`, "-", accel],
  ]);
  saveResults("build", { accel, coldBakeMs: round(coldMs, 1), cacheHitMs: hit });
  void INTERNAL;
} finally {
  await rm(dir, { recursive: true, force: true });
}
