#!/usr/bin/env node
// Fresh-machine check: does `npm start` work on a clean Debian 12 with only Node 20, as a new user's
// machine would be? (See ../shared/spec/environment.md, "A fresh machine is not this machine".)
//
//   node scripts/ci/fresh-root.mjs [--refresh] [--no-download-cache] [--on-disk] [--start-only] [--then "CMD"]...
//
// 1. A pristine root made by `debootstrap --variant=minbase bookworm` from the Debian mirror this machine's
//    apt is configured with, kept in CACHE/fresh-root/pristine (CACHE = ${XDG_CACHE_HOME:-~/.cache}/
//    supermachine; never in git). `--refresh` rebuilds it.
// 2. Per run a copy (`cp -a`) in CACHE/fresh-root/runs/<pid>, on a tmpfs mounted there (--on-disk: not);
//    into it: this process's `node` and its npm,
//    /etc/resolv.conf, the machine's CA trust (the files SSL_CERT_FILE / NODE_EXTRA_CA_CERTS name and
//    /usr/local/share/ca-certificates; both variables are passed in), and a clone of the repository this
//    script runs from, checked out at its HEAD commit (uncommitted changes are NOT tested). sysfs, a bind
//    of /dev and a tmpfs on /dev/shm are mounted; proc is mounted inside the run's own pid namespace.
// 3. `npm start` runs inside (chroot in a new pid + mount namespace, fresh HOME=/root, a clean environment). The check fails when npm
//    start exits non-zero or its step summary shows a failed step. Then, unless --start-only, the checks
//    that need what a fresh machine lacks run inside too (DEFAULT_CHECKS below), plus each --then command.
// 4. Always (also on failure, Ctrl-C, SIGTERM): every process whose root is the copy is killed, everything
//    mounted under it is unmounted (lazily if needed), and the copy is deleted. Copies left by a run that
//    was SIGKILLed are torn down by the next run.
//
// Download caches: apt's .deb archive (CACHE/fresh-root/apt-archives → /var/cache/apt/archives) and npm's
// cache (CACHE/fresh-root/npm-cache → /var/cache/npm through npm_config_cache) are kept between runs and
// bind-mounted in, to save download time. Every setup step still runs for real inside the root (apt-get
// update and install, kernel downloads, agent build, registry, fixtures, npm ci). `--no-download-cache`
// runs without them.
//
// Needs root (debootstrap, chroot, mount). Exit code 0 when everything passed, 1 otherwise, 2 not root.
import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseStepSummary, teardownRoot } from "../lib/chroot.mjs";
import { debianMirror } from "../lib/fixture-build.mjs";
import { cacheDir, isRoot, pidAlive, REPO_ROOT, readJson, withLock } from "../lib/util.mjs";

export const SUITE = "bookworm";
/** Where the repository is cloned inside the root (the fresh HOME is /root). */
export const REPO_IN_ROOT = "/root/supermachine";
/** Checks that use what a minimal Debian lacks (C headers, pgrep, ...), run after `npm start`. */
export const DEFAULT_CHECKS = [
  [
    "setup again does no work",
    // Idempotence: a second run installs, downloads, builds nothing (the registry, which ended with npm
    // start's namespace, may be started again).
    'out=$(node scripts/setup.mjs 2>&1); rc=$?; printf "%s\n" "$out"; [ $rc -eq 0 ] || exit $rc; ' +
      '! printf "%s\n" "$out" | grep -E "^setup: (apt-get|installing|dpkg)|downloading|: building|make ARCH|debootstrap"',
  ],
  ["guest agent host C tests", "make -C guest-agent test"],
  ["setup script tests", "node --test scripts/test/"],
];
/** Upper bound of the run's tmpfs (only what is written uses memory). */
const TMPFS_SIZE = "12g";
const PATH_IN_ROOT = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const freshDir = () => join(cacheDir(), "fresh-root");
const log = (m) => process.stdout.write(`fresh-root: ${m}\n`);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || r.stdout).trim().split("\n").slice(-10).join("\n");
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.signal ?? `exit ${r.status}`}):\n${why}`);
  }
  return r.stdout;
}

/** Run a command with output passed through; resolves with {code, output tail}. */
function stream(cmd, args, opts = {}) {
  return new Promise((res) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let tail = "";
    const keep = (d) => {
      tail = (tail + d).slice(-256 * 1024);
    };
    child.stdout.on("data", (d) => {
      process.stdout.write(d);
      keep(d);
    });
    child.stderr.on("data", (d) => {
      process.stderr.write(d);
      keep(d);
    });
    child.on("error", (e) => res({ code: 127, output: `${tail}\ncannot run ${cmd}: ${e.message}` }));
    child.on("close", (code, sig) => res({ code: code ?? (sig ? 128 : 1), output: tail }));
  });
}

// ------------------------------------------------------------------------------------------- phases
class Phases {
  constructor() {
    this.rows = [];
    this.t0 = Date.now();
  }
  async run(name, fn) {
    const t = Date.now();
    log(`▶ ${name}`);
    try {
      const r = await fn();
      const status = typeof r === "string" ? r : "ok";
      this.rows.push({ name, secs: (Date.now() - t) / 1000, status });
      return r;
    } catch (e) {
      this.rows.push({ name, secs: (Date.now() - t) / 1000, status: `FAILED: ${e.message.split("\n")[0]}` });
      throw e;
    }
  }
  record(name, secs, status) {
    this.rows.push({ name, secs, status });
  }
  get failed() {
    return this.rows.filter((r) => r.status.startsWith("FAILED"));
  }
  summary() {
    const w = Math.max(...this.rows.map((r) => r.name.length), 5);
    const lines = ["", "fresh-root summary"];
    for (const r of this.rows)
      lines.push(`  ${r.name.padEnd(w)}  ${r.secs.toFixed(1).padStart(6)} s  ${r.status}`);
    const total = ((Date.now() - this.t0) / 1000).toFixed(1);
    lines.push(
      this.failed.length
        ? `fresh-root: FAILED (${this.failed.map((r) => r.name).join(", ")}) in ${total} s`
        : `fresh-root: passed in ${total} s`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
  }
}

// ------------------------------------------------------------------------------------------- pristine root
/** Tear down `.tmp-*` roots and run copies whose owner process is gone (e.g. a SIGKILLed run). */
export function removeStaleRoots() {
  const removed = [];
  for (const d of [freshDir(), join(freshDir(), "runs")]) {
    if (!existsSync(d)) continue;
    for (const n of readdirSync(d)) {
      const m = /^(?:\.tmp-)?(\d+)(?:-|$)/.exec(n);
      if (!m || (d === freshDir() && !n.startsWith(".tmp-"))) continue;
      if (Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue;
      const r = teardownRoot(join(d, n));
      if (r.problems.length) throw new Error(r.problems.join("; "));
      removed.push(join(d, n));
    }
  }
  return removed;
}

/** The pristine minbase root, made once (temp dir → rename) and reused while the mirror is the same. */
async function ensurePristine(refresh) {
  const dir = join(freshDir(), "pristine");
  const mirror = debianMirror();
  const want = { suite: SUITE, variant: "minbase", mirror };
  const have = readJson(join(dir, ".fresh-root.json"));
  if (!refresh && have && have.mirror === mirror && have.suite === SUITE && existsSync(join(dir, "bin/sh")))
    return `reused (made ${have.created})`;
  const tmp = join(freshDir(), `.tmp-${process.pid}-pristine`);
  teardownRoot(tmp);
  mkdirSync(tmp, { recursive: true });
  try {
    log(`debootstrap --variant=minbase ${SUITE} (from the mirror in /etc/apt)`);
    const r = await stream("debootstrap", ["--variant=minbase", SUITE, tmp, mirror], {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    if (r.code !== 0) throw new Error(`debootstrap failed (exit ${r.code})`);
    // debootstrap keeps the .debs it installed; a new user's machine does not have them.
    sh("find", [join(tmp, "var/cache/apt/archives"), "-name", "*.deb", "-delete"]);
    writeFileSync(
      join(tmp, ".fresh-root.json"),
      JSON.stringify({ ...want, created: new Date().toISOString() }),
    );
    const check = teardownRoot(tmp, { remove: false }); // debootstrap's own mounts, if any are left
    if (check.problems.length) throw new Error(check.problems.join("; "));
    if (existsSync(dir)) {
      const r2 = teardownRoot(dir);
      if (r2.problems.length) throw new Error(r2.problems.join("; "));
    }
    renameSync(tmp, dir);
  } catch (e) {
    teardownRoot(tmp);
    throw e;
  }
  return "debootstrap";
}

// ------------------------------------------------------------------------------------------- the copy
/** Copy a file or directory into the root at the same absolute path (following a symlinked source). */
function carry(root, hostPath) {
  const dst = join(root, hostPath);
  mkdirSync(dirname(dst), { recursive: true });
  cpSync(hostPath, dst, { recursive: true, dereference: true, force: true });
}

/** node + npm (+ its headers, as a Node install has them) into /usr/local. */
function installNode(root) {
  const prefix = resolve(dirname(process.execPath), "..");
  const npmDir = [
    join(prefix, "lib/node_modules/npm"),
    join(dirname(process.execPath), "node_modules/npm"),
  ].find((d) => existsSync(join(d, "bin/npm-cli.js")));
  if (!npmDir) throw new Error(`npm not found next to ${process.execPath}`);
  const usrLocal = join(root, "usr/local");
  mkdirSync(join(usrLocal, "bin"), { recursive: true });
  copyFileSync(process.execPath, join(usrLocal, "bin/node"));
  sh("chmod", ["0755", join(usrLocal, "bin/node")]);
  mkdirSync(join(usrLocal, "lib/node_modules"), { recursive: true });
  sh("cp", ["-a", npmDir, join(usrLocal, "lib/node_modules/")]);
  symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", join(usrLocal, "bin/npm"));
  symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", join(usrLocal, "bin/npx"));
  if (existsSync(join(prefix, "include/node"))) {
    mkdirSync(join(usrLocal, "include"), { recursive: true });
    sh("cp", ["-a", join(prefix, "include/node"), join(usrLocal, "include/")]);
  }
  return `node ${process.version}, npm from ${npmDir}`;
}

/** CA trust of this machine (HTTPS passes a TLS-intercepting proxy here). Returns the env to pass in. */
function carryCaTrust(root) {
  const env = {};
  for (const v of ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"]) {
    const p = process.env[v];
    if (!p || !existsSync(p)) continue;
    carry(root, p);
    env[v] = p;
  }
  if (existsSync("/usr/local/share/ca-certificates")) carry(root, "/usr/local/share/ca-certificates");
  return env;
}

/** `git clone` of the repository this script belongs to, checked out at its HEAD. */
function cloneRepo(root) {
  const head = sh("git", ["-C", REPO_ROOT, "rev-parse", "HEAD"]).trim();
  const common = resolve(REPO_ROOT, sh("git", ["-C", REPO_ROOT, "rev-parse", "--git-common-dir"]).trim());
  const dirty = sh("git", ["-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"]).trim();
  const dst = join(root, REPO_IN_ROOT);
  sh("git", ["clone", "-q", "--no-checkout", common, dst]);
  if (spawnSync("git", ["-C", dst, "cat-file", "-e", `${head}^{commit}`]).status !== 0)
    sh("git", ["-C", dst, "fetch", "-q", common, head]);
  sh("git", ["-C", dst, "checkout", "-q", "--detach", head]);
  const subject = sh("git", ["-C", dst, "log", "-1", "--format=%h %s"]).trim();
  log(`testing commit ${subject.slice(0, 100)}`);
  if (dirty)
    log(`note: ${dirty.split("\n").length} uncommitted change(s) in ${REPO_ROOT} are NOT part of this check`);
  return head.slice(0, 12);
}

function mountAll(root, useCaches) {
  const mount = (args) => sh("mount", args);
  mount(["-t", "sysfs", "sysfs", join(root, "sys")]);
  mount(["--bind", "/dev", join(root, "dev")]);
  mount(["-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", join(root, "dev/shm")]);
  if (!useCaches) return;
  const apt = join(freshDir(), "apt-archives");
  const npmCache = join(freshDir(), "npm-cache");
  mkdirSync(join(apt, "partial"), { recursive: true });
  mkdirSync(npmCache, { recursive: true });
  mkdirSync(join(root, "var/cache/apt/archives"), { recursive: true });
  mkdirSync(join(root, "var/cache/npm"), { recursive: true });
  mount(["--bind", apt, join(root, "var/cache/apt/archives")]);
  mount(["--bind", npmCache, join(root, "var/cache/npm")]);
}

function chrootEnv(extra) {
  return {
    PATH: PATH_IN_ROOT,
    HOME: "/root",
    USER: "root",
    LOGNAME: "root",
    SHELL: "/bin/sh",
    LANG: "C.UTF-8",
    TERM: process.env.TERM || "dumb",
    ...extra,
  };
}

/**
 * Run a shell command in the clone inside the root, in a new pid (and mount) namespace: processes inside
 * cannot see or signal the machine's processes (setup inside would otherwise take the machine's test
 * registry, whose command line is the same, for an orphan of its own), and when the command ends the kernel
 * kills whatever it left running. /proc inside is that namespace's own.
 */
const inRoot = (root, env, command) =>
  stream(
    "unshare",
    [
      "--pid",
      "--fork",
      "--kill-child",
      "--mount",
      "--propagation",
      "private",
      "chroot",
      root,
      "/bin/sh",
      "-c",
      `mount -t proc proc /proc && cd ${REPO_IN_ROOT} && ${command}`,
    ],
    { env },
  );

// ------------------------------------------------------------------------------------------- main
export async function main(argv) {
  const opt = { refresh: false, caches: true, checks: true, tmpfs: true, extra: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--refresh") opt.refresh = true;
    else if (a === "--no-download-cache") opt.caches = false;
    else if (a === "--start-only") opt.checks = false;
    else if (a === "--on-disk") opt.tmpfs = false;
    else if (a === "--then" && argv[i + 1]) opt.extra.push(argv[++i]);
    else {
      console.error(
        `fresh-root: unknown argument ${a}\nusage: ${process.argv[1]} [--refresh] [--no-download-cache] [--on-disk] [--start-only] [--then "CMD"]...`,
      );
      return 64;
    }
  }
  if (!isRoot()) {
    console.error(
      "fresh-root: needs root (debootstrap, chroot, mount). Run:\n  sudo node scripts/ci/fresh-root.mjs",
    );
    return 2;
  }
  for (const tool of ["debootstrap", "chroot", "unshare", "mount", "umount", "git"])
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) {
      console.error(`fresh-root: ${tool} is missing (node scripts/setup.mjs installs it)`);
      return 1;
    }

  const phases = new Phases();
  const run = join(freshDir(), "runs", String(process.pid));
  let torn = false;
  const teardown = () => {
    if (torn) return null;
    torn = true;
    const t = Date.now();
    const r = teardownRoot(run);
    const what = `killed ${r.killed.length} process(es), unmounted ${r.unmounted.length}, ${r.removed ? "copy deleted" : "copy NOT deleted"}`;
    phases.record(
      "cleanup",
      (Date.now() - t) / 1000,
      r.problems.length ? `FAILED: ${r.problems.join("; ")}` : what,
    );
    return r;
  };
  const onSignal = (sig) => {
    process.stderr.write(`\nfresh-root: ${sig}: cleaning up ${run}\n`);
    phases.record("interrupted", 0, `FAILED: ${sig}`);
    teardown();
    phases.summary();
    process.exit(130);
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, onSignal);

  try {
    await withLock("fresh-root", async () => {
      await phases.run("stale copies", () => {
        const r = removeStaleRoots();
        return r.length ? `removed ${r.length}` : "none";
      });
      await phases.run("pristine root", () => ensurePristine(opt.refresh));
      await phases.run("copy", () => {
        mkdirSync(run, { recursive: true });
        // On a tmpfs by default: dpkg's fsyncs cost nothing there and the teardown is an unmount instead of
        // a minutes-long rm of a few GB of small files. It holds ~3 GB of RAM while the check runs.
        if (opt.tmpfs) sh("mount", ["-t", "tmpfs", "-o", `size=${TMPFS_SIZE},mode=0755`, "fresh-root", run]);
        sh("cp", ["-a", `${join(freshDir(), "pristine")}/.`, run]);
        rmSync(join(run, ".fresh-root.json"), { force: true });
        return `cp -a → ${relative(cacheDir(), run)}${opt.tmpfs ? ` (tmpfs, size=${TMPFS_SIZE})` : " (on disk)"}`;
      });
      let env;
      await phases.run("prepare", () => {
        const what = installNode(run);
        copyFileSync("/etc/resolv.conf", join(run, "etc/resolv.conf"));
        env = chrootEnv(carryCaTrust(run));
        if (opt.caches) env.npm_config_cache = "/var/cache/npm";
        const commit = cloneRepo(run);
        mountAll(run, opt.caches);
        return `${what}; commit ${commit}; download caches ${opt.caches ? "bound in" : "off"}`;
      });
      await phases.run("npm start", async () => {
        const r = await inRoot(run, env, "npm start");
        const s = parseStepSummary(r.output, "npm start");
        const table = s.steps.map((x) => `${x.name} ${x.secs.toFixed(0)} s`).join(", ");
        if (r.code !== 0 || !s.found || s.failed.length)
          throw new Error(
            `npm start exit ${r.code}${s.found ? `; failed step(s): ${s.failed.join(", ") || "none"}` : "; no step summary"} (${table})`,
          );
        return `ok (${table})`;
      });
      const checks = [...(opt.checks ? DEFAULT_CHECKS : []), ...opt.extra.map((c) => [c, c])];
      for (const [name, cmd] of checks) {
        await phases
          .run(name, async () => {
            const r = await inRoot(run, env, cmd);
            if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}`);
          })
          .catch(() => {}); // recorded as FAILED; go on with the other checks
      }
    });
  } catch (e) {
    process.stderr.write(`fresh-root: ${e.message}\n`);
  } finally {
    teardown();
  }
  phases.summary();
  return phases.failed.length ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(`fresh-root: ${e.stack ?? e}`);
      process.exit(1);
    },
  );
}
