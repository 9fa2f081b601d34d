/**
 * Per-VM runtime directories and host-exit cleanup.
 *
 * - Each VM gets `<runtimeRoot>/<id>` (mode 0700) for sockets, console log and the boot RAM file.
 * - On normal exit, SIGINT/SIGTERM/SIGHUP (when nobody else handles them) and uncaught exceptions, every live
 *   VMM is SIGKILLed and its dir removed synchronously.
 * - SIGKILL of Node: QEMU dies through PR_SET_PDEATHSIG (setpriv); the dirs are removed by a tiny detached
 *   "reaper" (awk) that holds a pipe from this process and deletes the registered dirs when the pipe closes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** /dev/shm/supermachine when /dev/shm is a writable directory, else <tmpdir>/supermachine. */
export function defaultRuntimeRoot(): string {
  try {
    if (statSync("/dev/shm").isDirectory()) {
      accessSync("/dev/shm", constants.W_OK);
      return "/dev/shm/supermachine";
    }
  } catch {}
  return join(tmpdir(), "supermachine");
}

interface Live {
  dir: string;
  pid?: number;
}
const live = new Map<string, Live>();
let hooksInstalled = false;
let reaper: ChildProcess | undefined;
let reaperBroken = false;

const REAPER_AWK =
  '/^\\+/ { d[substr($0, 2)] = 1; next } /^-/ { delete d[substr($0, 2)]; next } END { for (k in d) system("rm -rf -- \\"" k "\\"") }';

function reaperWrite(line: string): void {
  if (reaperBroken) return;
  if (!reaper) {
    try {
      reaper = spawn("awk", [REAPER_AWK], { stdio: ["pipe", "ignore", "ignore"], detached: true });
      reaper.on("error", () => {
        reaperBroken = true;
      });
      reaper.stdin?.on("error", () => {
        reaperBroken = true;
      });
      reaper.unref();
      (reaper.stdin as unknown as { unref?: () => void })?.unref?.();
    } catch {
      reaperBroken = true;
      return;
    }
  }
  reaper.stdin?.write(`${line}\n`);
}

function cleanupAllSync(): void {
  for (const [, v] of live) {
    if (v.pid) {
      try {
        process.kill(v.pid, "SIGKILL");
      } catch {}
    }
    try {
      rmSync(v.dir, { recursive: true, force: true });
    } catch {}
  }
  live.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", cleanupAllSync);
  process.on("uncaughtExceptionMonitor", cleanupAllSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const handler = () => {
      // Only act as the default handler when the application does not listen itself (other supermachine
      // cleanup listeners, e.g. core's, do not count); otherwise the app decides and 'exit' cleans up.
      if (!onlyExitCleanupListeners(sig)) return;
      cleanupAllSync();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, markExitCleanupListener(handler));
  }
}

/**
 * Marks the signal listeners of supermachine packages (this driver, core, other copies): each cleans up
 * and keeps the default behaviour, so they must not take each other for the application's own handler
 * (then nobody would re-raise and Ctrl-C would leave the process running). Global: copies agree.
 */
const CLEANUP_LISTENER = Symbol.for("supermachine.exit-cleanup-listener");

/** Mark a signal listener as a supermachine exit cleanup (see `onlyExitCleanupListeners`); returns it. */
export function markExitCleanupListener<F extends (...args: never[]) => unknown>(listener: F): F {
  (listener as unknown as Record<symbol, unknown>)[CLEANUP_LISTENER] = true;
  return listener;
}

/** True when every listener of `signal` is a supermachine exit cleanup: the application has none of its own. */
export function onlyExitCleanupListeners(signal: NodeJS.Signals): boolean {
  return process
    .listeners(signal)
    .every((l) => (l as unknown as Record<symbol, unknown>)[CLEANUP_LISTENER] === true);
}

/** Remove runtime dirs left behind by dead processes (owner pid recorded in `<dir>/owner`). */
export function sweepStaleRuntimeDirs(root: string): string[] {
  const removed: string[] = [];
  if (!existsSync(root)) return removed;
  for (const name of readdirSync(root)) {
    const dir = join(root, name);
    let owner = Number.NaN;
    try {
      owner = Number(readFileSync(join(dir, "owner"), "utf8").trim());
    } catch {}
    if (!Number.isInteger(owner) || owner <= 0) continue;
    let alive = true;
    try {
      process.kill(owner, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === "EPERM";
    }
    if (!alive) {
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  return removed;
}

const sweptRoots = new Set<string>();

/** Create `<root>/<id>` (0700) and register it for cleanup. Throws if it already exists. */
export function createRuntimeDir(root: string, id: string): string {
  installHooks();
  mkdirSync(root, { recursive: true, mode: 0o700 });
  if (!sweptRoots.has(root)) {
    sweptRoots.add(root);
    sweepStaleRuntimeDirs(root);
  }
  const dir = join(root, id);
  mkdirSync(dir, { mode: 0o700 }); // throws EEXIST for a duplicate id
  writeFileSync(join(dir, "owner"), `${process.pid}\n`);
  live.set(dir, { dir });
  reaperWrite(`+${dir}`);
  return dir;
}

/** Record the VMM pid living in `dir` (killed on host exit). */
export function registerVmmPid(dir: string, pid: number): void {
  const v = live.get(dir);
  if (v) v.pid = pid;
}

/** Remove a runtime dir and unregister it. */
export function removeRuntimeDir(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } finally {
    live.delete(dir);
    reaperWrite(`-${dir}`);
  }
}

/** Number of runtime dirs this process currently owns (for tests/diagnostics). */
export function liveRuntimeDirCount(): number {
  return live.size;
}
