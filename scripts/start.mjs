#!/usr/bin/env node
// `npm start`: install deps if needed, provision (scripts/setup.mjs), build every package, then the demo:
// boot the busybox fixture in a microVM through the core CLI and print the output of a command run inside.
// `npm start -- --skip-build` skips the build (when the packages were just built).
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureNodeModules, npx, Steps } from "./lib/steps.mjs";
import { cacheDir, REPO_ROOT } from "./lib/util.mjs";

const steps = new Steps("npm start");
const stop = (code) => {
  steps.summary();
  process.exit(code);
};

if ((await ensureNodeModules(steps)) !== 0) stop(1);
const setupCode = await steps.cmd("setup", process.execPath, ["scripts/setup.mjs"]);
if (setupCode !== 0 && setupCode !== 3) stop(1); // 3 = only the guest agent build failed
if (process.argv.includes("--skip-build")) steps.skip("build", "--skip-build");
else if ((await steps.cmd("build", ...npx(["lerna", "run", "build", "--concurrency", "2"]))) !== 0) stop(1);
const hostArch = process.arch === "arm64" ? "aarch64" : "x86_64";
if (setupCode === 3 && !existsSync(join(REPO_ROOT, "guest-agent", "out", hostArch, "sm-agent"))) {
  steps.skip("demo", `the ${hostArch} guest agent did not build (see the setup output above)`);
  stop(1);
}

const fixtures = JSON.parse(readFileSync(join(cacheDir(), "fixtures", "fixtures.json"), "utf8"));
const ref = fixtures.images.busybox.ref;
const cli = join(REPO_ROOT, "packages", "core", "dist", "cli.js");
// Does the core CLI have a `run` command yet? Ask its help text.
const help = existsSync(cli)
  ? spawnSync(process.execPath, [cli, "--help"], { encoding: "utf8", timeout: 30_000 })
  : { stdout: "", stderr: "" };
if (!/^\s*run\b/m.test(`${help.stdout}\n${help.stderr}`)) {
  steps.skip("demo", "the core CLI has no `run` command yet");
  steps.summary();
  console.log(
    [
      "",
      "Provisioning is complete: QEMU, kernel bundles, the test registry and the fixture images are ready",
      `(registry ${fixtures.registry}; busybox image ${ref}).`,
      "The VM demo is not available yet: packages/core/dist/cli.js does not expose `run` (the core package is",
      "still being written). Once it does, `npm start` boots the busybox image and runs `uname -a` inside it.",
    ].join("\n"),
  );
  process.exit(0);
}

const argv = [cli, "run", ref, "--", "uname", "-a"];
console.log(`\nDemo: boot ${ref} in a microVM and run \`uname -a\` inside it:\n  node ${argv.join(" ")}`);
const code = await steps.cmd("demo: supermachine run busybox -- uname -a", process.execPath, argv);
stop(code === 0 ? 0 : 1);
