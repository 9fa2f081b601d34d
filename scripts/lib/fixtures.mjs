// Public helpers for tests of other packages: the test registry, the fixture images, the kernel bundles.
//   import { testRegistry, fixtures, kernelBundle, CACHE_DIR } from "<repo>/scripts/lib/fixtures.mjs";
// Node built-ins only. Types: fixtures.d.mts next to this file.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ensureFixtures, fixturesReady } from "./fixture-build.mjs";
import { existingBundles, kernelsDir } from "./kernels.mjs";
import { ensureRegistry } from "./registry.mjs";
import { cacheDir, REPO_ROOT, setQuiet } from "./util.mjs";

/** The cache root: `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` (as of module load). */
export const CACHE_DIR = cacheDir();

/** Ensure the test registry runs (starting it if needed) → `{ host: "127.0.0.1:PORT" }`. */
export async function testRegistry() {
  const r = await ensureRegistry();
  return { host: r.host };
}

/**
 * The content of CACHE/fixtures/fixtures.json, after making sure the registry runs and serves every fixture
 * (builds/pushes what is missing; the first cold build of debian-python takes about a minute).
 */
export async function fixtures() {
  const { host } = await testRegistry();
  const ready = await fixturesReady(host);
  if (ready) return ready;
  return ensureFixtures();
}

/**
 * Directory of the kernel bundle for an arch (`CACHE/kernels/<release>-<arch>`), newest valid one first.
 * Throws when none has been provisioned (run `npm run setup`).
 */
export function kernelBundle(arch = "x86_64") {
  if (arch === "amd64") arch = "x86_64";
  if (arch === "arm64") arch = "aarch64";
  const found = existingBundles(arch)[0];
  if (!found) {
    throw new Error(
      `no kernel bundle for ${arch} under ${kernelsDir()}; run \`npm run setup\` (node scripts/setup.mjs) first`,
    );
  }
  return found;
}

/** Paths of the guest agent binary for an arch (may not exist before setup built it). */
export function agentBinary(arch = "x86_64") {
  return join(REPO_ROOT, "guest-agent", "out", arch, "sm-agent");
}

/** True when the agent binary for `arch` exists. */
export function hasAgentBinary(arch = "x86_64") {
  return existsSync(agentBinary(arch));
}

/** Silence setup's progress lines (they go to stderr) when called from tests. */
export function quietSetup(q = true) {
  setQuiet(q);
}
