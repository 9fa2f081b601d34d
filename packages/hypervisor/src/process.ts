/** Spawning and supervising the VMM process. */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";
import { STDERR_RING_BYTES } from "./constants";
import { HypervisorError } from "./errors";

/** Keeps the last `capacity` bytes written to it (QEMU stderr for error messages). */
export class RingBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private total = 0;
  constructor(readonly capacity = STDERR_RING_BYTES) {}
  /** Bytes pushed so far (a mark for `since`). */
  get written(): number {
    return this.total;
  }
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    this.total += chunk.length;
    while (this.size > this.capacity && this.chunks.length > 0) {
      const first = this.chunks[0] as Buffer;
      const excess = this.size - this.capacity;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
      }
    }
  }
  toString(): string {
    return Buffer.concat(this.chunks).toString("utf8");
  }
  /** What was pushed after `mark` (an earlier `written`), as far as the buffer still holds it. */
  since(mark: number): string {
    const n = Math.max(0, Math.min(this.total - mark, this.size));
    return Buffer.concat(this.chunks)
      .subarray(this.size - n)
      .toString("utf8");
  }
}

/** Find an executable on PATH (or check an absolute path). */
export function findExecutable(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const candidates = isAbsolute(name)
    ? [name]
    : (env.PATH ?? "")
        .split(delimiter)
        .filter(Boolean)
        .map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {}
  }
  return undefined;
}

/** Resolve the QEMU binary or throw SM_VMM_NOT_FOUND with the install command. */
export function resolveQemu(name: string, installHint: string): string {
  const found = findExecutable(name);
  if (!found) {
    throw new HypervisorError("SM_VMM_NOT_FOUND", `${name} not found on PATH. Install QEMU: ${installHint}`, {
      details: { binary: name },
    });
  }
  return found;
}

const versionCache = new Map<string, string>();
/** `qemu-system-* --version` first line's version number (cached). */
export function qemuVersion(binary: string): string | undefined {
  if (versionCache.has(binary)) return versionCache.get(binary);
  try {
    const out = execFileSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 });
    const m = /version\s+(\S+)/.exec(out);
    const v = m?.[1];
    if (v) versionCache.set(binary, v);
    return v;
  } catch {
    return undefined;
  }
}

let setprivPath: string | null | undefined;
/** setpriv (util-linux) when on Linux and available: used to set PR_SET_PDEATHSIG=SIGKILL on the VMM. */
export function deathSignalWrapper(): string[] {
  if (process.platform !== "linux") return [];
  if (setprivPath === undefined) setprivPath = findExecutable("setpriv") ?? null;
  return setprivPath ? [setprivPath, "--pdeathsig", "KILL", "--"] : [];
}

export interface SpawnedVmm {
  child: ChildProcess;
  pid: number;
  stderr: RingBuffer;
  /** Resolves when the process exited (and was reaped). */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Full argv including the wrapper (for diagnostics). */
  argv: string[];
}

/**
 * Spawn QEMU (through `setpriv --pdeathsig KILL` on Linux so it dies with this process even on SIGKILL).
 * Must be called from the main thread (PDEATHSIG follows the spawning thread).
 *
 * `unref`: the process and its pipes do not keep Node's event loop alive (QemuBackendOptions
 * `keepEventLoopAlive: false`). It still never outlives this process: the exit hooks of runtime.ts kill
 * it on a normal exit, the parent-death signal on a SIGKILL.
 */
export function spawnVmm(binary: string, args: string[], cwd: string, unref = false): SpawnedVmm {
  const wrapper = deathSignalWrapper();
  const argv = [...wrapper, binary, ...args];
  // Own process group: a terminal's Ctrl-C goes to the application (which decides what the VM gets),
  // not straight to QEMU, which would quit on it. PDEATHSIG and the exit hooks still end it with us.
  const child = spawn(argv[0] as string, argv.slice(1), {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const stderr = new RingBuffer();
  child.stdout?.on("data", (b: Buffer) => stderr.push(b));
  child.stderr?.on("data", (b: Buffer) => stderr.push(b));
  if (unref) {
    child.unref();
    for (const pipe of [child.stdout, child.stderr]) (pipe as unknown as { unref?: () => void })?.unref?.();
  }
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
    child.once("error", () => resolve({ code: null, signal: null }));
  });
  if (child.pid === undefined) {
    throw new HypervisorError("SM_VMM_START", `could not start ${binary}`, { details: { argv } });
  }
  return { child, pid: child.pid, stderr, exit, argv };
}

/** Read memory statistics of a process (Linux: /proc/<pid>/smaps_rollup; elsewhere: `ps` RSS only). */
export function readMemoryStats(pid: number): {
  rssBytes: number;
  pssBytes: number | null;
  pssAnonBytes: number | null;
  pssFileBytes: number | null;
  pssShmemBytes: number | null;
} {
  const rollup = `/proc/${pid}/smaps_rollup`;
  if (existsSync(rollup)) {
    let text = "";
    for (let attempt = 1; ; attempt++) {
      try {
        text = readFileSync(rollup, "utf8");
        break;
      } catch (err) {
        // ESRCH while the process is alive: it replaced its image (execve) between our open and
        // read, so the file still referred to the old one. Read again.
        if ((err as NodeJS.ErrnoException).code !== "ESRCH" || attempt >= 3 || !existsSync(`/proc/${pid}`))
          throw err;
      }
    }
    const kib = (key: string): number | null => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
      return m ? Number(m[1]) * 1024 : null;
    };
    return {
      rssBytes: kib("Rss") ?? 0,
      pssBytes: kib("Pss"),
      pssAnonBytes: kib("Pss_Anon"),
      pssFileBytes: kib("Pss_File"),
      pssShmemBytes: kib("Pss_Shmem"),
    };
  }
  const out = execFileSync("ps", ["-o", "rss=", "-p", String(pid)], { encoding: "utf8" });
  return {
    rssBytes: Number(out.trim()) * 1024,
    pssBytes: null,
    pssAnonBytes: null,
    pssFileBytes: null,
    pssShmemBytes: null,
  };
}
