#!/usr/bin/env node
// `npm test`: install deps if needed, provision (scripts/setup.mjs), test the provisioning scripts, build
// every package, type-check, lint, run the C agent's tests, then vitest (all projects: unit-* and
// integration). Extra arguments go to vitest: `npm test -- --project unit-pool`.
// Exit code is non-zero when any step failed; a summary table is printed at the end.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureNodeModules, npx, Steps } from "./lib/steps.mjs";
import { REPO_ROOT } from "./lib/util.mjs";

const vitestArgs = process.argv.slice(2);
const steps = new Steps("npm test");
const finish = () => {
  steps.summary();
  process.exit(steps.failed.length ? 1 : 0);
};

if ((await ensureNodeModules(steps)) !== 0) finish();
// Without a provisioned machine the integration tests cannot run: stop here if setup fails, unless only
// the guest agent build failed (exit 3): then the other steps still tell something.
const setupCode = await steps.cmd("setup", process.execPath, ["scripts/setup.mjs"]);
if (setupCode !== 0 && setupCode !== 3) finish();
await steps.cmd("setup script tests", process.execPath, ["--test", "scripts/test/"]);
await steps.cmd("build", ...npx(["lerna", "run", "build", "--concurrency", "2", "--no-bail"]));
await steps.cmd("typecheck", ...npx(["tsc", "-b"]));
await steps.cmd("lint", ...npx(["biome", "check", "."]));

const makefile = join(REPO_ROOT, "guest-agent", "Makefile");
if (existsSync(makefile) && /^test\s*:/m.test(readFileSync(makefile, "utf8"))) {
  await steps.cmd("guest agent tests", "make", ["-C", "guest-agent", "test"]);
} else {
  steps.skip(
    "guest agent tests",
    existsSync(makefile) ? "guest-agent/Makefile has no test target" : "no guest-agent/Makefile yet",
  );
}

await steps.cmd("vitest", ...npx(["vitest", "run", ...vitestArgs]));
finish();
