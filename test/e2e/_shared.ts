/**
 * Shared fixtures of the core e2e suite. One snapshots dir per test run (keyed by the vitest main
 * process, shared by every worker fork), so the busybox image is baked once for all files; dirs of
 * earlier runs whose process is gone are swept.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { LiveVmPort } from "../../packages/core/src/ports";
import { INTERNAL, type Vm } from "../../packages/core/src/vm";
import { fixtures } from "../../scripts/lib/fixtures.mjs";

export const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function sharedSnapshotsDir(): string {
  const runId = process.env.VITEST_POOL_ID !== undefined ? process.ppid : process.pid;
  for (const name of readdirSync(tmpdir())) {
    const m = /^sm-core-e2e-(\d+)$/.exec(name);
    if (m && Number(m[1]) !== runId && !alive(Number(m[1])))
      rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
  const dir = join(tmpdir(), `sm-core-e2e-${runId}`);
  mkdirSync(dir, { recursive: true });
  // Examples and the CLI read this (core's default snapshotsDir override).
  process.env.SUPERMACHINE_SNAPSHOTS_DIR = dir;
  return dir;
}

export interface FixtureRefs {
  registry: string;
  busybox: string;
  httpd: string;
}

export async function fixtureRefs(): Promise<FixtureRefs> {
  const f = (await fixtures()) as { registry: string; images: Record<string, { ref: string }> };
  process.env.SUPERMACHINE_REGISTRY = f.registry;
  return { registry: f.registry, busybox: f.images.busybox!.ref, httpd: f.images.httpd!.ref };
}

/** QEMU processes whose command line mentions `needle` (e.g. a runtime dir). */
export function qemuPids(needle = "qemu-system"): number[] {
  try {
    return execFileSync("pgrep", ["-f", needle], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map(Number)
      .filter((p) => p !== process.pid);
  } catch {
    return [];
  }
}

/**
 * Bundle a TypeScript entry (test child scripts, the CLI) with @supermachine/* resolved to their sources,
 * into node_modules/.cache so bare npm imports resolve from the repo. No `npm run build` needed.
 */
export async function bundle(entry: string, name: string): Promise<string> {
  const esbuild = await import("esbuild");
  const outDir = join(REPO, "node_modules", ".cache", "sm-core-e2e");
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, `${name}-${process.pid}.mjs`);
  const alias: Record<string, string> = {};
  for (const pkg of readdirSync(join(REPO, "packages"))) {
    const src = join(REPO, "packages", pkg, "src", "index.ts");
    if (existsSync(src)) alias[`@supermachine/${pkg}`] = src;
  }
  await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    alias,
    packages: "external",
    logLevel: "error",
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
  });
  return outfile;
}

/** The backend VM behind a Vm (pid, runtime dir, console): the repository's internal accessor. */
export function liveOf(vm: Vm): LiveVmPort {
  const h = vm[INTERNAL]();
  if (!h) throw new Error("the Vm was released");
  return h.live;
}
