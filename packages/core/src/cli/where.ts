/**
 * Where the CLI runs from: core's own package.json (for --version) and whether this is the monorepo
 * checkout (repo-only hints such as `make -C guest-agent`) or an installed package (`npx supermachine setup`).
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const CORE_NAME = "@supermachine/core";

function ancestors(start: string): string[] {
  const out: string[] = [];
  let dir = start;
  for (;;) {
    out.push(dir);
    const up = dirname(dir);
    if (up === dir) return out;
    dir = up;
  }
}

const here = () => dirname(fileURLToPath(import.meta.url));

/**
 * Core's package.json: the nearest one named @supermachine/core above this file (src/cli/, dist/ of an
 * installed package), else resolved by name (a bundle of the CLI placed elsewhere).
 */
export function corePackageJson(from: string = here()): { name: string; version: string; path: string } {
  for (const dir of ancestors(from)) {
    const p = join(dir, "package.json");
    if (!existsSync(p)) continue;
    try {
      const j = JSON.parse(readFileSync(p, "utf8")) as { name?: string; version?: string };
      if (j.name === CORE_NAME && typeof j.version === "string")
        return { name: j.name, version: j.version, path: p };
    } catch {
      /* not ours: keep looking */
    }
  }
  const p = createRequire(join(from, "noop.js")).resolve(`${CORE_NAME}/package.json`);
  const j = JSON.parse(readFileSync(p, "utf8")) as { name: string; version: string };
  return { name: j.name, version: j.version, path: p };
}

/**
 * The root of the supermachine monorepo checkout this file lives in (it has guest-agent/Makefile,
 * scripts/setup.mjs and packages/core), or undefined when core runs as an installed package.
 */
export function repoCheckout(from: string = here()): string | undefined {
  for (const dir of ancestors(from)) {
    if (
      existsSync(join(dir, "guest-agent", "Makefile")) &&
      existsSync(join(dir, "scripts", "setup.mjs")) &&
      existsSync(join(dir, "packages", "core", "package.json"))
    )
      return dir;
  }
  return undefined;
}
