/**
 * Cross-process bake lock: `<snapshotsDir>/.locks/<key>.lock` created with O_EXCL holding
 * `{pid, hostname, startedAt}`. A lock whose pid is dead on this host (or older than staleMs) is stale
 * and taken over. Two processes building the same fingerprint: one bakes, the other waits, then finds
 * the cache hit.
 */

import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";

export interface LockInfo {
  pid: number;
  hostname: string;
  startedAt: number;
  token: string;
}

export interface HeldLock {
  readonly path: string;
  release(): Promise<void>;
}

export interface LockOptions {
  /** Poll interval while waiting. */
  pollMs?: number;
  /** A lock older than this is stale even if its pid seems alive (pid reuse). Default 30 min. */
  staleMs?: number;
  /** Give up waiting after this long. Default: wait forever. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** True when a process with this pid exists on this host (EPERM: it exists, owned by someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export async function isStale(path: string, staleMs: number): Promise<boolean> {
  let info: Partial<LockInfo>;
  try {
    info = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false; // gone: retry the create
    // Unparsable: a writer crashed between create and write, or is writing right now. Treat as stale
    // only after a grace period handled by the caller's retries (empty file = being written).
    return false;
  }
  if (typeof info.startedAt === "number" && Date.now() - info.startedAt > staleMs) return true;
  if (info.hostname === hostname() && typeof info.pid === "number" && !pidAlive(info.pid)) return true;
  return false;
}

async function tryCreate(path: string, info: LockInfo): Promise<boolean> {
  // Write to a private temp file, then link it into place atomically with O_EXCL semantics via rename
  // of a unique file only when absent: use open(wx) on the lock path directly so readers never see a
  // partial file for long (the content is tiny and written right after).
  try {
    const fh = await open(path, "wx", 0o644);
    try {
      await fh.writeFile(JSON.stringify(info));
    } finally {
      await fh.close();
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function acquireLock(dir: string, key: string, opts: LockOptions = {}): Promise<HeldLock> {
  const pollMs = opts.pollMs ?? 100;
  const staleMs = opts.staleMs ?? 30 * 60_000;
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${key}.lock`);
  const info: LockInfo = {
    pid: process.pid,
    hostname: hostname(),
    startedAt: Date.now(),
    token: randomBytes(8).toString("hex"),
  };
  const deadline = opts.timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + opts.timeoutMs;
  let emptySince: number | undefined;
  for (;;) {
    opts.signal?.throwIfAborted();
    if (await tryCreate(path, info)) {
      return {
        path,
        release: async () => {
          // Only remove the lock if it is still ours (a stale takeover may have replaced it).
          try {
            const cur = JSON.parse(await readFile(path, "utf8")) as LockInfo;
            if (cur.token === info.token) await rm(path, { force: true });
          } catch {
            /* already gone */
          }
        },
      };
    }
    if (await isStale(path, staleMs)) {
      // Take over: move the stale file aside atomically (only one taker wins the rename).
      const aside = `${path}.stale-${randomBytes(4).toString("hex")}`;
      try {
        await rename(path, aside);
        await rm(aside, { force: true });
      } catch {
        /* someone else took it over */
      }
      continue;
    }
    // An empty/unparsable lock file for more than 5 s: its writer died between create and write.
    try {
      const raw = await readFile(path, "utf8");
      if (raw.length === 0) {
        emptySince ??= Date.now();
        if (Date.now() - emptySince > 5000) await rm(path, { force: true });
      } else emptySince = undefined;
    } catch {
      emptySince = undefined;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${path}`);
    await sleep(pollMs);
  }
}
