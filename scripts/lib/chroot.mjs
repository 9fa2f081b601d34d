// Helpers for scripts/ci/fresh-root.mjs: find what is mounted under a directory and which processes live
// in a chroot, tear both down, and read `npm start`'s step summary. Node built-ins only. The parsers take
// their input as arguments so they can be tested without root.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { resolve } from "node:path";

/** Undo the octal escapes of /proc/PID/mountinfo (`\040` = space, `\011` tab, `\012` newline, `\134` \). */
export function unescapeMountPath(s) {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * Parse /proc/PID/mountinfo text.
 * @returns {{id:number, parent:number, mountPoint:string, fsType:string, source:string}[]} in file order
 */
export function parseMountinfo(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const [pre, post = ""] = line.split(" - ");
    const f = pre.split(" ");
    if (f.length < 5) continue;
    const [fsType = "", source = ""] = post.split(" ");
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      mountPoint: unescapeMountPath(f[4]),
      fsType,
      source: unescapeMountPath(source),
    });
  }
  return out;
}

/** `p` is `dir` or below it (path-wise: /a/bc is not below /a/b). */
export function isUnder(p, dir) {
  const d = dir.endsWith("/") ? dir.slice(0, -1) : dir;
  return p === d || p.startsWith(`${d}/`);
}

/**
 * Mount points at or below `dir`, in the order they must be unmounted: the deepest first, and of two
 * mounts on one path the later (upper) one first.
 */
export function mountsUnder(dir, mountinfoText) {
  const all = parseMountinfo(mountinfoText)
    .map((m, i) => ({ ...m, i }))
    .filter((m) => isUnder(m.mountPoint, dir));
  all.sort((a, b) => b.mountPoint.split("/").length - a.mountPoint.split("/").length || b.i - a.i);
  return all.map((m) => m.mountPoint);
}

/**
 * Processes whose root directory (`/proc/PID/root`) is `dir` or below it: everything started inside a
 * chroot at `dir`, including chroots nested in it. A root that was deleted reads as "<path> (deleted)".
 * @param {string} dir absolute path
 * @param {string} [procDir] where procfs is (tests pass a fake tree)
 * @returns {number[]}
 */
export function processesInRoot(dir, procDir = "/proc") {
  const pids = [];
  let names;
  try {
    names = readdirSync(procDir);
  } catch {
    return pids;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    let root;
    try {
      root = readlinkSync(`${procDir}/${n}/root`);
    } catch {
      continue; // gone, a zombie, or not ours to read
    }
    root = root.replace(/ \(deleted\)$/, "");
    if (isUnder(root, dir)) pids.push(Number(n));
  }
  return pids;
}

const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Tear down a chroot directory: SIGKILL every process rooted in it (until none is left), unmount
 * everything under it (deepest first; lazily when a plain unmount fails), then delete it. Synchronous so
 * it can run from signal and exit handlers. The directory is deleted only when nothing is mounted under
 * it any more (a bind of /dev under it would otherwise lose the host's device nodes).
 * @returns {{killed:number[], unmounted:string[], removed:boolean, problems:string[]}}
 */
export function teardownRoot(dir, opts = {}) {
  const abs = resolve(dir);
  if (abs === "/" || abs.split("/").length < 3) throw new Error(`refusing to tear down ${abs}`);
  const res = { killed: [], unmounted: [], removed: false, problems: [] };
  const deadline = Date.now() + (opts.killTimeoutMs ?? 20_000);
  for (;;) {
    const pids = processesInRoot(abs).filter((p) => p !== process.pid);
    if (pids.length === 0) break;
    if (Date.now() > deadline) {
      res.problems.push(`processes still running in ${abs}: ${pids.join(" ")}`);
      break;
    }
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
        if (!res.killed.includes(pid)) res.killed.push(pid);
      } catch {}
    }
    sleepSync(100);
  }
  for (let round = 0; round < 5; round++) {
    const mps = mountsUnder(abs, readFileSync("/proc/self/mountinfo", "utf8"));
    if (mps.length === 0) break;
    for (const mp of mps) {
      const r = spawnSync("umount", round < 2 ? [mp] : ["-l", mp], { stdio: "ignore" });
      if (r.status === 0) res.unmounted.push(mp);
    }
  }
  const left = mountsUnder(abs, readFileSync("/proc/self/mountinfo", "utf8"));
  if (left.length) {
    res.problems.push(`still mounted, so ${abs} was NOT deleted: ${left.join(" ")}`);
    return res;
  }
  if (opts.remove !== false && existsSync(abs)) {
    // --one-file-system: a second guard against crossing into anything mounted meanwhile.
    const r = spawnSync("rm", ["-rf", "--one-file-system", abs], { stdio: "ignore" });
    if (r.status !== 0 || existsSync(abs)) {
      try {
        rmSync(abs, { recursive: true, force: true });
      } catch (e) {
        res.problems.push(`could not delete ${abs}: ${e.message}`);
      }
    }
    res.removed = !existsSync(abs);
  }
  return res;
}

/**
 * Read the summary table that scripts/lib/steps.mjs prints at the end (`<title> summary`, then one line
 * per step: `  name   12.3 s  ok|skipped: why|FAILED (exit N)`).
 * @returns {{found:boolean, steps:{name:string, secs:number, status:string}[], failed:string[]}}
 */
export function parseStepSummary(output, title = "npm start") {
  const text = output.replace(/\x1b\[[0-9;]*m/g, "");
  const at = text.lastIndexOf(`${title} summary`);
  if (at < 0) return { found: false, steps: [], failed: [] };
  const steps = [];
  for (const line of text.slice(at).split("\n").slice(1)) {
    const m = /^ {2}(.+?)\s+(\d+(?:\.\d+)?) s {2}(.+)$/.exec(line);
    if (!m) break;
    steps.push({ name: m[1].trim(), secs: Number(m[2]), status: m[3].trim() });
  }
  const failed = steps.filter((s) => s.status.startsWith("FAILED")).map((s) => s.name);
  return { found: steps.length > 0, steps, failed };
}
