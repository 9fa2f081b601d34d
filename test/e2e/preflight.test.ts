/**
 * Preflight, for real: Image.build against the real fixture registry on a host whose QEMU / kernel are
 * missing fails at once with SM_DEPENDENCY_MISSING naming the fix, and nothing is pulled or written.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { Image } from "../../packages/core/src/index";
import { type FixtureRefs, fixtureRefs } from "./_shared";

let refs: FixtureRefs;
const saved = { ...process.env };
const dirs: string[] = [];

beforeAll(async () => {
  refs = await fixtureRefs();
});

afterEach(() => {
  for (const k of ["PATH", "XDG_CACHE_HOME", "SUPERMACHINE_KERNEL_DIR"]) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) =>
    statSync(join(dir, f)).isFile(),
  );
}

async function buildError(): Promise<{
  err: Error & { code?: string; details?: Record<string, unknown> };
  cache: string;
  snaps: string;
}> {
  const cache = mkdtempSync(join(tmpdir(), "sm-preflight-cache-"));
  const snaps = mkdtempSync(join(tmpdir(), "sm-preflight-snaps-"));
  dirs.push(cache, snaps);
  process.env.XDG_CACHE_HOME = cache; // an empty image store: anything pulled would land here
  const started = Date.now();
  const err = await Image.build({ ref: refs.busybox, snapshotsDir: snaps }).then(
    () => {
      throw new Error("Image.build succeeded");
    },
    (e) => e,
  );
  expect(Date.now() - started).toBeLessThan(5000);
  return { err, cache, snaps };
}

describe("Image.build preflight", () => {
  it("no QEMU and no kernel: one SM_DEPENDENCY_MISSING naming both and the fix; nothing pulled", async () => {
    process.env.PATH = "/nonexistent";
    const { err, cache, snaps } = await buildError();
    expect(err.code).toBe("SM_DEPENDENCY_MISSING");
    expect(err.details?.missing).toEqual(["qemu", "kernel"]);
    expect(err.details?.fix).toBe("npx supermachine setup");
    expect(err.message).toMatch(/qemu-system-\w+ is not on PATH\. Fix: sudo apt-get install -y qemu-system-/);
    expect(err.message).toContain("npm install @supermachine/guest-");
    expect(files(cache)).toEqual([]);
    expect(files(snaps)).toEqual([]);
  });

  it("SUPERMACHINE_KERNEL_DIR pointing nowhere: only the kernel is reported", async () => {
    process.env.SUPERMACHINE_KERNEL_DIR = "/nonexistent/kernel";
    const { err, cache } = await buildError();
    expect(err.code).toBe("SM_DEPENDENCY_MISSING");
    expect(err.details?.missing).toEqual(["kernel"]);
    expect(err.message).toContain("SUPERMACHINE_KERNEL_DIR=/nonexistent/kernel");
    expect(files(cache)).toEqual([]);
  });
});
