// Shared helpers for the provisioning scripts. Node built-ins only: these run before node_modules exists.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (scripts/lib/.. /..). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine`, evaluated at call time (tests override XDG_CACHE_HOME). */
export function cacheDir() {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "supermachine");
}

export const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0;

// ---------------------------------------------------------------------------------------------- logging
let quiet = false;
/** Number of lines that reported actual work: used to decide between "everything is ready" and a summary. */
export const activity = { count: 0 };
export function setQuiet(q) {
  quiet = q;
}
/** Report work being done (counts as activity). */
export function say(msg) {
  activity.count++;
  if (!quiet) process.stderr.write(`setup: ${msg}\n`);
}
/** A note that does not count as work. */
export function note(msg) {
  if (!quiet) process.stderr.write(`setup: ${msg}\n`);
}

export class SetupError extends Error {
  constructor(message, opts) {
    super(message, opts);
    this.name = "SetupError";
  }
}

// ---------------------------------------------------------------------------------------------- processes
/**
 * Run a command, capture stdout/stderr. Rejects with the stderr tail on non-zero exit unless `allowFail`.
 * @returns {Promise<{code:number, stdout:string, stderr:string}>}
 */
export function run(cmd, args, opts = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? "ignore" : "pipe", opts.stdoutFd ?? "pipe", "pipe"],
    });
    const out = [];
    const err = [];
    child.stdout?.on("data", (d) => out.push(d));
    child.stderr.on("data", (d) => err.push(d));
    if (opts.input !== undefined) child.stdin.end(opts.input);
    child.on("error", (e) => reject(new SetupError(`cannot run ${cmd}: ${e.message}`, { cause: e })));
    child.on("close", (code, signal) => {
      const res = {
        code: code ?? 128,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      };
      if ((code !== 0 || signal) && !opts.allowFail) {
        const tail = (res.stderr || res.stdout).trim().split("\n").slice(-15).join("\n");
        reject(
          new SetupError(`command failed (${signal ?? `exit ${code}`}): ${cmd} ${args.join(" ")}\n${tail}`),
        );
      } else resolvePromise(res);
    });
  });
}

/**
 * Find an executable in PATH (like `command -v`), then in the sbin dirs, which a non-root user's PATH
 * often lacks on Debian (depmod, mke2fs, debootstrap live there).
 */
export function which(name) {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/local/sbin", "/usr/sbin", "/sbin"];
  for (const dir of dirs) {
    if (!dir) continue;
    const p = join(dir, name);
    if (isExecutable(p)) return p;
  }
  return null;
}
function isExecutable(p) {
  try {
    const st = statSync(p);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** The process exists and is not a zombie (an exited child nobody has reaped yet counts as gone). */
export function pidAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (e.code !== "EPERM") return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return true; // no procfs: trust kill(0)
  }
}

/** Process start time in clock ticks since boot (field 22 of /proc/PID/stat), or null. */
export function procStartTime(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[19] ?? null; // fields after comm start at field 3; field 22 → index 19
  } catch {
    return null;
  }
}

/**
 * The process has the same root directory as this one. A process in a chroot (e.g. the fresh-root check's
 * copy of Debian, which runs its own setup) is not ours even when its command line is the same.
 * When that cannot be read (another user's process) it counts as the same.
 */
export function sharesOurRoot(pid) {
  try {
    const a = statSync(`/proc/${pid}/root`);
    const b = statSync("/proc/self/root");
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return true;
  }
}

export function procCmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return null;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------- files
export function readJson(path) {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return null;
  }
}

/** Write a file atomically: temp file in the same directory, then rename. */
export function writeFileAtomic(path, data, mode) {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, mode === undefined ? undefined : { mode });
  renameSync(tmp, path);
}
export function writeJsonAtomic(path, obj) {
  writeFileAtomic(path, `${JSON.stringify(obj, null, 2)}\n`);
}

export function sha256File(path) {
  return new Promise((res, rej) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("error", rej)
      .on("end", () => res(h.digest("hex")));
  });
}
export const sha256 = (data) => createHash("sha256").update(data).digest("hex");

/**
 * Replace directory `dst` by the fully written directory `src` (same filesystem): the old one (if any) is
 * moved aside first, then removed, so a reader never sees a half-written `dst`.
 */
export function replaceDir(src, dst) {
  if (existsSync(dst)) {
    const trash = join(dirname(dst), `.trash-${process.pid}-${Date.now()}`);
    renameSync(dst, trash);
    renameSync(src, dst);
    rmSync(trash, { recursive: true, force: true });
  } else {
    renameSync(src, dst);
  }
}

/** Temp names are `.tmp-<pid>-<label>`, so leftovers of dead processes can be recognised. */
export const tempName = (label) => `.tmp-${process.pid}-${label}`;

/** Remove `.tmp-*` / `.trash-*` leftovers of dead processes in `dir` (call while holding the lock). */
export function cleanStaleTemps(dir) {
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const m = /^\.(?:tmp|trash)-(\d+)(?:-|$)/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    note(`removing leftover of an interrupted run: ${join(dir, name)}`);
    rmSync(join(dir, name), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------- locking
const heldLocks = new Map(); // name → promise chain (in-process serialisation)

/**
 * Cross-process lock: `CACHE/<name>.lock` created with O_EXCL and holding `{pid, start}`. A lock whose owner
 * is dead (or whose pid was reused by another process) is stale and taken over. In-process callers are
 * serialised too.
 */
export async function withLock(name, fn) {
  const prev = heldLocks.get(name) ?? Promise.resolve();
  let release;
  const mine = new Promise((r) => {
    release = r;
  });
  heldLocks.set(
    name,
    prev.then(() => mine),
  );
  await prev;
  try {
    return await withFileLock(name, fn);
  } finally {
    release();
  }
}

const ownedLockFiles = new Set();
process.once("exit", () => {
  for (const p of ownedLockFiles) {
    try {
      const c = JSON.parse(readFileSync(p, "utf8"));
      if (c.pid === process.pid) unlinkSync(p);
    } catch {}
  }
});

async function withFileLock(name, fn) {
  const dir = cacheDir();
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.lock`);
  const me = { pid: process.pid, start: procStartTime(process.pid) };
  let waited = false;
  for (;;) {
    try {
      const fd = openSync(path, "wx", 0o644);
      writeSync(fd, JSON.stringify(me));
      closeSync(fd);
      break;
    } catch (e) {
      if (e.code !== "EEXIST") throw e;
    }
    const raw = (() => {
      try {
        return readFileSync(path, "utf8");
      } catch {
        return null;
      }
    })();
    if (raw === null) continue; // vanished meanwhile
    let owner = null;
    try {
      owner = JSON.parse(raw);
    } catch {}
    let stale = false;
    if (!owner) {
      // Partially written lock: stale if it stays unreadable for a while.
      try {
        stale = Date.now() - statSync(path).mtimeMs > 5000;
      } catch {}
    } else {
      stale = !pidAlive(owner.pid) || (owner.start && procStartTime(owner.pid) !== owner.start);
    }
    if (stale) {
      // Re-check the content right before removing, so we never delete a lock just taken by someone else.
      try {
        if (readFileSync(path, "utf8") === raw) {
          unlinkSync(path);
          note(`removed stale ${name} lock (owner ${owner ? `pid ${owner.pid}` : "unknown"} is gone)`);
        }
      } catch {}
      continue;
    }
    if (!waited) {
      waited = true;
      if (!quiet) process.stderr.write(`setup: waiting for ${name} lock held by pid ${owner?.pid}...\n`);
    }
    await sleep(250);
  }
  ownedLockFiles.add(path);
  try {
    return await fn();
  } finally {
    ownedLockFiles.delete(path);
    try {
      const c = JSON.parse(readFileSync(path, "utf8"));
      if (c.pid === process.pid) unlinkSync(path);
    } catch {}
  }
}
