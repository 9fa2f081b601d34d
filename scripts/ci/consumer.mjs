#!/usr/bin/env node
// Consumer test: what a user gets from npm. Packs every package (guest bundles included: their prepack builds
// the bundle), installs the tarballs into an empty project outside the repo with an empty HOME and npm cache,
// then from there runs `npx supermachine setup` and a program that builds an image from the local fixture
// registry, execs in it and exits — the README's "Install from npm" program as written (`import`, .mjs), and
// the same with `require` (.cjs).
// Prints the packed size of each tarball and the installed size; removes its temp dirs; leaves no process.
// Node built-ins only. Needs a built checkout (npx lerna run build) and the fixture registry (npm run setup).
//   node scripts/ci/consumer.mjs [--image REF] [--keep] [--json FILE]
import { spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const t0 = Date.now();
const secs = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`;
const log = (m) => process.stderr.write(`consumer: ${m}\n`);
const fmt = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

function fail(msg) {
  log(`FAIL: ${msg}`);
  process.exitCode = 1;
  throw new Error(msg);
}

/** The busybox fixture image of the real machine cache (read before HOME is replaced). */
function fixtureRef() {
  const explicit = opt("--image") ?? process.env.SUPERMACHINE_CONSUMER_IMAGE;
  if (explicit) return explicit;
  const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "supermachine");
  const file = join(cache, "fixtures", "fixtures.json");
  try {
    return JSON.parse(readFileSync(file, "utf8")).images.busybox.ref;
  } catch {
    fail(`no busybox fixture in ${file}: run \`npm run setup\` first, or pass --image REF`);
  }
}

/** Run a command with inherited output capture; resolves {code, stdout, stderr}. Never leaves the child behind. */
function run(cmd, argv, { cwd, env, echo = true, timeoutMs = 30 * 60_000 } = {}) {
  return new Promise((res) => {
    const child = spawn(cmd, argv, { cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const out = [];
    const err = [];
    child.stdout.on("data", (d) => {
      out.push(d);
      if (echo) process.stdout.write(d);
    });
    child.stderr.on("data", (d) => {
      err.push(d);
      if (echo) process.stderr.write(d);
    });
    const timer = setTimeout(() => {
      log(`${cmd} ${argv.join(" ")}: timed out after ${timeoutMs} ms; killing its process group`);
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }, timeoutMs);
    child.on("error", (e) => {
      err.push(Buffer.from(`cannot run ${cmd}: ${e.message}\n`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      // Whatever the child left in its process group (it should be nothing) goes with it.
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
      res({
        code: code ?? 128,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      });
    });
  });
}

function duBytes(p) {
  const st = lstatSync(p);
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const e of readdirSync(p)) n += duBytes(join(p, e));
  return n;
}

/** Every package dir under packages/ that is not private. */
function packageDirs() {
  return readdirSync(join(REPO, "packages"))
    .map((n) => join(REPO, "packages", n))
    .filter((d) => existsSync(join(d, "package.json")))
    .filter((d) => !JSON.parse(readFileSync(join(d, "package.json"), "utf8")).private)
    .sort();
}

/** npm settings the empty HOME would lose: the registry, CA trust, proxies, node headers dir. */
function carriedNpmConfig() {
  const env = {};
  for (const key of ["registry", "cafile", "strict-ssl", "proxy", "https-proxy", "noproxy", "nodedir"]) {
    const r = spawnSync("npm", ["config", "get", key], { cwd: REPO, encoding: "utf8" });
    const v = r.stdout?.trim();
    if (r.status === 0 && v && v !== "undefined" && v !== "null")
      env[`npm_config_${key.replace(/-/g, "_")}`] = v;
  }
  return env;
}

/** PIDs of processes whose command line mentions `needle` (the temp root): none may survive. */
function processesUnder(needle) {
  const pids = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "utf8").includes(needle)) pids.push(Number(p));
    } catch {}
  }
  return pids;
}

/** The README's "Install from npm" program, run as written (the image ref is its argument). */
function readmeProgram() {
  const text = readFileSync(join(REPO, "README.md"), "utf8");
  const section = text.slice(text.indexOf("## Install from npm"));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  if (!text.includes("## Install from npm") || !m)
    fail('README.md has no js block in its "Install from npm" section');
  return m[1];
}

const REQUIRE_PROGRAM = `const { Image } = require("@supermachine/core");
async function main() {
  const image = await Image.build({ ref: process.argv[2] });
  const pool = await image.pool({ min: 1, max: 1 });
  try {
    const vm = await pool.acquire();
    const out = await vm.exec({ argv: ["sh", "-c", "echo hello from $(uname -m) via require"] });
    process.stdout.write(out.stdout.toString());
    if (out.exitCode !== 0) throw new Error("exit " + out.exitCode + ": " + out.stderr.toString());
    await vm.release();
  } finally {
    await pool.shutdown();
  }
}
main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
`;

/**
 * As uid/gid 65534 (nobody) with its own empty HOME:
 *  a. QEMU not on PATH: `npx supermachine setup` prints the install command, exits non-zero, writes nothing;
 *  b. with QEMU, the installed bundle dir not writable for that user: setup succeeds and derives the x86_64
 *     vmlinux into the user's cache, not next to the kernel.
 */
async function nonRootChecks(root, project, env, results) {
  const uid = "65534";
  const home = join(root, "nobody-home");
  const npmCache = join(root, "nobody-npm");
  const bin = join(root, "nobody-bin");
  for (const d of [home, npmCache, bin]) mkdirSync(d);
  for (const d of [home, npmCache]) chownSync(d, 65534, 65534);
  for (const d of [root, project]) chmodSync(d, 0o755);
  // This host's PATH without QEMU: every command of PATH linked into one dir, except qemu-*.
  for (const dir of (env.PATH ?? "").split(":").filter(Boolean)) {
    let names = [];
    try {
      names = readdirSync(dir);
    } catch {}
    for (const n of names) {
      if (n.startsWith("qemu-") || existsSync(join(bin, n))) continue;
      try {
        symlinkSync(join(dir, n), join(bin, n));
      } catch {}
    }
  }
  const setpriv = spawnSync("sh", ["-c", "command -v setpriv"], { encoding: "utf8" }).stdout.trim();
  if (!setpriv) {
    log("non-root checks skipped: no setpriv (util-linux) on PATH");
    return;
  }
  const as = (extra) => ["--reuid", uid, "--regid", uid, "--clear-groups", "--", ...extra];
  const nenv = { ...env, HOME: home, TMPDIR: home, npm_config_cache: npmCache, USER: "nobody" };

  log(
    "as nobody, QEMU not on PATH: npx supermachine setup (must print the install line, exit non-zero, change nothing)",
  );
  const a = await run(setpriv, as(["npx", "--no-install", "supermachine", "setup"]), {
    cwd: project,
    env: { ...nenv, PATH: bin },
  });
  const leftovers = readdirSync(home);
  const vmlinuxInBundle = existsSync(
    join(project, "node_modules/@supermachine/guest-x86_64/bundle/kernel/vmlinux"),
  );
  results.nonRootMissingQemu = { exitCode: a.code, homeAfter: leftovers };
  if (a.code === 0) fail("setup without QEMU exited 0");
  if (!/sudo apt-get install -y qemu-system-|brew install qemu/.test(a.stdout))
    fail("setup did not print the QEMU install line");
  if (leftovers.length) fail(`setup without QEMU wrote into HOME: ${leftovers.join(", ")}`);
  if (vmlinuxInBundle) fail("setup without QEMU wrote vmlinux into the bundle");

  if (process.arch !== "x64") return;
  log(
    "as nobody, bundle dir read-only for that user: npx supermachine setup (vmlinux must go to the user's cache)",
  );
  const b = await run(setpriv, as(["npx", "--no-install", "supermachine", "setup"]), {
    cwd: project,
    env: nenv,
  });
  const cached = join(home, ".cache", "supermachine", "vmlinux");
  const derived = existsSync(cached) ? readdirSync(cached) : [];
  results.nonRootReadOnlyBundle = { exitCode: b.code, derivedInCache: derived };
  if (b.code !== 0) fail(`setup as nobody with a read-only bundle exited ${b.code}`);
  if (!derived.length) fail(`vmlinux was not derived into ${cached}`);
  if (existsSync(join(project, "node_modules/@supermachine/guest-x86_64/bundle/kernel/vmlinux")))
    fail("vmlinux was written into the read-only bundle dir");
}

async function main() {
  if (process.platform !== "linux")
    fail("the consumer test runs on Linux (it reads /proc to check for leftovers)");
  const ref = fixtureRef();
  const root = mkdtempSync(join(tmpdir(), "sm-consumer-"));
  if (root.startsWith(REPO)) fail(`temp dir ${root} is inside the repo`);
  const tarballs = join(root, "tarballs");
  const project = join(root, "project");
  const home = join(root, "home");
  for (const d of [tarballs, project, home, join(root, "npm-cache")]) mkdirSync(d);
  const results = { host: `${process.platform} ${process.arch}`, image: ref, packages: [], steps: {} };
  let ok = false;
  try {
    // 1. pack
    let t = Date.now();
    for (const dir of packageDirs()) {
      const r = await run("npm", ["pack", dir, "--json", "--pack-destination", tarballs], {
        cwd: REPO,
        echo: false,
      });
      if (r.code !== 0) fail(`npm pack ${dir} failed:\n${r.stderr.slice(-3000)}`);
      const info = JSON.parse(r.stdout.slice(r.stdout.indexOf("[")))[0];
      results.packages.push({
        name: info.name,
        version: info.version,
        file: info.filename,
        packedBytes: info.size,
        unpackedBytes: info.unpackedSize,
        files: info.entryCount,
      });
      log(
        `packed ${info.filename}: ${fmt(info.size)} (${fmt(info.unpackedSize)} unpacked, ${info.entryCount} files)`,
      );
    }
    results.steps.packS = (Date.now() - t) / 1000;
    const guests = results.packages.filter((p) => p.name.startsWith("@supermachine/guest-"));
    if (guests.length !== 2) fail(`expected 2 guest bundle packages, packed ${guests.map((g) => g.name)}`);

    // 2. an empty project, outside the repo, empty HOME and npm cache
    const spec = Object.fromEntries(results.packages.map((p) => [p.name, `file:${join(tarballs, p.file)}`]));
    writeFileSync(
      join(project, "package.json"),
      `${JSON.stringify(
        {
          name: "supermachine-consumer",
          private: true,
          dependencies: { "@supermachine/core": spec["@supermachine/core"] },
          // Transitive @supermachine/* deps (and core's optional guest bundles) come from the tarballs too.
          overrides: spec,
        },
        null,
        2,
      )}\n`,
    );
    writeFileSync(join(project, "hello.mjs"), readmeProgram());
    writeFileSync(join(project, "build.cjs"), REQUIRE_PROGRAM);
    const env = {
      PATH: process.env.PATH,
      HOME: home,
      LANG: process.env.LANG ?? "C.UTF-8",
      TMPDIR: root,
      npm_config_cache: join(root, "npm-cache"),
      npm_config_update_notifier: "false",
      npm_config_fund: "false",
      npm_config_audit: "false",
      ...carriedNpmConfig(),
    };
    // CA trust (the HTTPS proxy) and proxies; nothing else of this shell (no SUPERMACHINE_*, no XDG_*).
    for (const k of [
      "SSL_CERT_FILE",
      "SSL_CERT_DIR",
      "NODE_EXTRA_CA_CERTS",
      "HTTPS_PROXY",
      "HTTP_PROXY",
      "NO_PROXY",
      "https_proxy",
      "http_proxy",
      "no_proxy",
    ])
      if (process.env[k]) env[k] = process.env[k];

    t = Date.now();
    log(`npm install in ${project} (HOME=${home})`);
    const inst = await run("npm", ["install", "--no-audit", "--no-fund"], { cwd: project, env });
    if (inst.code !== 0) fail("npm install of the tarballs failed");
    results.steps.installS = (Date.now() - t) / 1000;
    results.installedBytes = duBytes(join(project, "node_modules"));
    const installed = readdirSync(join(project, "node_modules", "@supermachine")).sort();
    log(`installed @supermachine/{${installed.join(",")}}: node_modules ${fmt(results.installedBytes)}`);
    const hostGuest = `guest-${process.arch === "arm64" ? "aarch64" : "x86_64"}`;
    const otherGuest = hostGuest === "guest-x86_64" ? "guest-aarch64" : "guest-x86_64";
    if (!installed.includes(hostGuest)) fail(`@supermachine/${hostGuest} was not installed`);
    if (installed.includes(otherGuest))
      fail(`@supermachine/${otherGuest} was installed on a ${process.arch} host`);

    // 3. as a non-root user first (before root's setup derives vmlinux next to the kernel)
    if (typeof process.getuid === "function" && process.getuid() === 0)
      await nonRootChecks(root, project, env, results);
    else log("non-root checks skipped: they need root to switch to an unprivileged uid");

    // 4. npx supermachine setup
    t = Date.now();
    log("npx supermachine setup");
    const setup = await run("npx", ["--no-install", "supermachine", "setup"], { cwd: project, env });
    results.steps.setupS = (Date.now() - t) / 1000;
    if (setup.code !== 0) fail(`npx supermachine setup exited ${setup.code}`);

    // 5. build + exec + exit, with import and with require
    for (const [file, expect] of [
      ["hello.mjs", "Linux"],
      ["build.cjs", "via require"],
    ]) {
      t = Date.now();
      log(`node ${file} ${ref}`);
      const r = await run("node", [file, ref], { cwd: project, env, timeoutMs: 15 * 60_000 });
      results.steps[file] = (Date.now() - t) / 1000;
      if (r.code !== 0 || !r.stdout.includes(expect)) {
        results.steps[`${file}Failed`] = true;
        log(`FAIL: node ${file} exited ${r.code}${r.signal ? ` (${r.signal})` : ""}`);
        process.exitCode = 1;
      } else log(`node ${file}: ok (${results.steps[file].toFixed(1)} s)`);
    }
    ok = process.exitCode !== 1;
  } finally {
    const left = processesUnder(root);
    if (left.length) {
      log(`FAIL: processes left behind: ${left.join(", ")}; killing them`);
      for (const p of left)
        try {
          process.kill(p, "SIGKILL");
        } catch {}
      process.exitCode = 1;
      ok = false;
    }
    if (args.includes("--keep")) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
    results.totalS = (Date.now() - t0) / 1000;
    const jsonOut = opt("--json");
    if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write("\npackage                          packed    unpacked\n");
    for (const p of results.packages)
      process.stdout.write(
        `${p.name.padEnd(32)} ${fmt(p.packedBytes).padStart(9)} ${fmt(p.unpackedBytes).padStart(10)}\n`,
      );
    if (results.installedBytes)
      process.stdout.write(`installed node_modules: ${fmt(results.installedBytes)}\n`);
    process.stdout.write(`consumer test ${ok ? "passed" : "FAILED"} in ${secs(t0)}\n`);
  }
}

main().catch((err) => {
  if (process.exitCode !== 1) log(err?.stack ?? String(err));
  process.exitCode = 1;
});
