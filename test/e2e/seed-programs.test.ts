import { beforeAll, describe, expect, it } from "vitest";
import { fixtures } from "../../scripts/lib/fixtures.mjs";
import { EXIT_AFTER_LAST_LINE_MS, runSeedProgram, type SeedRun } from "./_seed-run";
import { fixtureRefs, sharedSnapshotsDir } from "./_shared";

let pythonRef: string;
let busyboxRef: string;

beforeAll(async () => {
  sharedSnapshotsDir();
  busyboxRef = (await fixtureRefs()).busybox;
  const f = (await fixtures()) as { images: Record<string, { ref: string }> };
  pythonRef = f.images["debian-python"]!.ref;
});

function runProgram(file: string, env: Record<string, string>, timeoutMs: number): Promise<SeedRun> {
  return runSeedProgram(file, { env, timeoutMs });
}

describe("the original's programs exit by themselves", () => {
  it("README quick start (no shutdown) prints hello and exits within seconds", async () => {
    const r = await runProgram("quickstart.mjs", { SM_SEED_REF: busyboxRef }, 150_000);
    console.log(`quick start: last line → exit ${r.lastLineToExitMs} ms`);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.lines).toEqual(["hello"]);
    expect(r.code).toBe(0);
    expect(r.lastLineToExitMs).toBeLessThan(EXIT_AFTER_LAST_LINE_MS);
  }, 180_000);

  it("README pattern 1 (python, stageFiles, a warm pool, no shutdown) exits within seconds", async () => {
    // The original uses a pool of 8; on this 2-core TCG host 8 concurrent restores of the python image
    // mostly measure CPU starvation, so the test runs the same program with 2. SM_SEED_POOL=8 passes
    // too (measured: 86 s, last line → exit 4.5 s, close to the bound on a loaded host).
    const size = Number(process.env.SM_SEED_POOL ?? 2);
    const r = await runProgram(
      "pattern1.mjs",
      { SM_SEED_REF: pythonRef, SM_SEED_POOL: String(size) },
      600_000,
    );
    console.log(`pattern 1 (pool ${size}): last line → exit ${r.lastLineToExitMs} ms`);
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.lines).toEqual(Array.from({ length: size }, (_, i) => `0 ${i * i}`));
    expect(r.code).toBe(0);
    expect(r.lastLineToExitMs).toBeLessThan(EXIT_AFTER_LAST_LINE_MS);
  }, 660_000);
});
