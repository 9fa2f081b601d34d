/**
 * A consumer project for the built packages: a temp dir whose node_modules links to the workspace's
 * `@supermachine/*` (which npm links to packages/*) and `@types`, so `require`/`import` resolve the
 * package names through each package.json's `exports`, from dist, as an installed copy would.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "./_shared";

/** Every public entry point: package name (+ subpath) → its directory under packages/. */
export const ENTRY_POINTS: { spec: string; dir: string }[] = [
  { spec: "@supermachine/agent-protocol", dir: "agent-protocol" },
  { spec: "@supermachine/agent-protocol/testing", dir: "agent-protocol" },
  { spec: "@supermachine/pool", dir: "pool" },
  { spec: "@supermachine/oci", dir: "oci" },
  { spec: "@supermachine/rootfs", dir: "rootfs" },
  { spec: "@supermachine/hypervisor", dir: "hypervisor" },
  { spec: "@supermachine/hypervisor-kvm", dir: "hypervisor-kvm" },
  { spec: "@supermachine/hypervisor-hvf", dir: "hypervisor-hvf" },
  { spec: "@supermachine/core", dir: "core" },
];

/** Fails with the fix when a package has no build (these tests load dist, not src). */
export function assertBuilt(): void {
  const missing = ENTRY_POINTS.map((e) => e.dir).filter(
    (d) =>
      !existsSync(join(REPO, "packages", d, "dist", "index.js")) ||
      !existsSync(join(REPO, "packages", d, "dist", "index.cjs")),
  );
  if (missing.length > 0) {
    throw new Error(`no ESM+CJS build of ${missing.join(", ")}: run \`npx lerna run build\` first`);
  }
}

export function consumerDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(join(REPO, "node_modules", "@supermachine"), join(dir, "node_modules", "@supermachine"));
  symlinkSync(join(REPO, "node_modules", "@types"), join(dir, "node_modules", "@types"));
  return dir;
}

/** Run `node` in `cwd`; stdout parsed as JSON. */
export function nodeJson(cwd: string, args: string[], env: NodeJS.ProcessEnv = process.env): unknown {
  const r = spawnSync(process.execPath, args, { cwd, encoding: "utf8", env, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`node ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export function packageJson(dir: string): {
  bin?: Record<string, string>;
  exports: Record<string, unknown>;
  [k: string]: unknown;
} {
  return JSON.parse(readFileSync(join(REPO, "packages", dir, "package.json"), "utf8"));
}
