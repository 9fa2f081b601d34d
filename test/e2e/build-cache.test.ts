/**
 * Bake cache: a cache hit boots nothing; two processes building the same image at once bake once.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image } from "../../packages/core/src/index";
import { bundle, type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let shared: string;
let ownDir: string;
let childScript: string;

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
  ownDir = await mkdtemp(join(tmpdir(), "sm-core-e2e-own-"));
  childScript = await bundle(join(__dirname, "child-build.ts"), "child-build");
});
afterAll(async () => {
  await rm(ownDir, { recursive: true, force: true });
  await rm(childScript, { force: true });
});

function runChild(args: string[]): Promise<{ baked: boolean; path: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [childScript, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => {
      out += d;
    });
    p.stderr.on("data", (d) => {
      err += d;
    });
    p.on("exit", (code) => {
      if (code !== 0) reject(new Error(`child exited ${code}: ${err}`));
      else resolve(JSON.parse(out.trim().split("\n").pop()!));
    });
  });
}

describe("bake cache", () => {
  it("a cache-hit build returns the snapshot without pulling or booting", async () => {
    const first = await Image.build({ ref: refs.busybox, snapshotsDir: shared });
    const phases: string[] = [];
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const again = await Image.build({
        ref: refs.busybox,
        snapshotsDir: shared,
        onProgress: (e) => phases.push(e.phase),
      });
      times.push(performance.now() - t0);
      expect(again.snapshotPath).toBe(first.snapshotPath);
    }
    expect(phases.filter((p) => p !== "resolve" && p !== "done")).toEqual([]);
    times.sort((a, b) => a - b);
    expect(times[2]).toBeLessThan(100); // p50; the goal (5 ms) is measured by bench/core-build.mjs
  });

  it("two processes building the same image concurrently bake once", async () => {
    const [a, b] = await Promise.all([runChild([refs.busybox, ownDir]), runChild([refs.busybox, ownDir])]);
    expect(a.path).toBe(b.path);
    expect([a.baked, b.baked].filter(Boolean)).toHaveLength(1);
    const entries = (await readdir(ownDir)).filter((n) => !n.startsWith("."));
    expect(entries).toHaveLength(1);
    await expect(Image.fromSnapshot(a.path)).resolves.toBeTruthy();
  });
});
