/**
 * TEST DOUBLE — process ops of the reference agent (SPEC §6.1, §6.2): exec and spawn as host
 * processes in the agent's root, their output pumped into channels within credit.
 */
import { type ChildProcess, spawn as spawnProcess } from "node:child_process";
import { chmod, mkdir, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Readable } from "node:stream";
import type { Channel, InboundSink } from "../channel";
import { type ExecArgs, RequestError, type SpawnArgs } from "../ops";

export interface SpawnedProcess {
  child: ChildProcess;
  chIn: number;
  stdinClosed: boolean;
}

/** What the process ops need from their agent. */
export interface ProcessHost {
  readonly root: string;
  readonly execTailMax: number;
  /** Running exec processes (killed when the agent closes). */
  readonly execs: Set<ChildProcess>;
  /** Spawned processes by pid. */
  readonly spawned: Map<number, SpawnedProcess>;
  inSession(): boolean;
  /** Maps a guest path into the root; RequestError EACCES if it escapes. */
  hostPath(guestPath: string): string;
  claimChannels(ids: number[]): void;
  openChannel(
    id: number,
    canSend: boolean,
    canRecv: boolean,
    extra?: Partial<{ sink: InboundSink; onAbort: (e: Error) => void }>,
  ): Channel;
  respond(id: number, result: Record<string, unknown>): void;
  event(ev: string, data: Record<string, unknown>): void;
  /** Records bytes queued on a channel waiting for host credit. */
  queued(bytes: number): void;
}

function startProcess(
  h: ProcessHost,
  args: ExecArgs | SpawnArgs,
  argv: string[],
  env: Record<string, string>,
  cwd: string,
  stdin: boolean,
) {
  if (args.tty) throw new RequestError("EINVAL", "tty is not supported by the reference agent");
  const child = spawnProcess(argv[0]!, argv.slice(1), {
    cwd: h.hostPath(cwd),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: h.root, ...env },
    stdio: [stdin ? "pipe" : "ignore", "pipe", "pipe"],
    detached: true, // own process group, so the timeout can kill the group (SPEC §6.1)
  });
  return child;
}

async function stage(h: ProcessHost, args: ExecArgs | SpawnArgs): Promise<void> {
  for (const f of args.stage) {
    const p = h.hostPath(f.path);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, f.data);
    await chmod(p, f.mode);
  }
  await stat(h.hostPath(args.cwd)).catch(() => {
    throw new RequestError("ENOENT", `cwd ${args.cwd} does not exist`);
  });
}

/**
 * Pumps a pipe into a channel within credit: the pipe is paused while a write waits for credit.
 * `tail` mode (exec) keeps up to execTailMax bytes and only streams when the buffer is full.
 */
export function pump(
  h: ProcessHost,
  src: Readable,
  ch: Channel | null,
  tail: { bufs: Buffer[]; len: number } | null,
): Promise<void> {
  return new Promise((resolve) => {
    let writing: Promise<void> = Promise.resolve();
    const sendNow = (b: Buffer) => {
      if (ch === null || ch.state !== "open") return;
      const w = ch.write(b);
      w.catch(() => {});
      if (ch.pendingWriteBytes === 0) return; // sent within credit: keep reading
      h.queued(ch.pendingWriteBytes);
      src.pause();
      writing = w.then(
        () => {
          src.resume();
        },
        () => {
          src.resume();
        },
      );
    };
    src.on("data", (b: Buffer) => {
      if (tail === null) return sendNow(b);
      tail.bufs.push(b);
      tail.len += b.length;
      if (tail.len >= h.execTailMax) {
        const all = Buffer.concat(tail.bufs);
        tail.bufs = [];
        tail.len = 0;
        sendNow(all);
      }
    });
    src.on("error", () => {});
    src.on("close", () => {
      writing.then(resolve, resolve);
    });
  });
}

export async function execOp(h: ProcessHost, id: number, a: ExecArgs): Promise<void> {
  h.claimChannels(a.chErr === null ? [a.chOut] : [a.chOut, a.chErr]);
  let killed = false;
  let current: ChildProcess | null = null;
  const kill = () => {
    killed = true;
    if (current !== null) killGroup(current);
  };
  const out = h.openChannel(a.chOut, true, false, { onAbort: kill });
  const err = a.chErr === null ? null : h.openChannel(a.chErr, true, false, { onAbort: kill });
  const tails = { out: { bufs: [] as Buffer[], len: 0 }, err: { bufs: [] as Buffer[], len: 0 } };
  let timedOut = false;
  const timer =
    a.timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          kill();
        }, a.timeoutMs)
      : undefined;
  try {
    await stage(h, a);
    let result = await runOne(h, a, a.argv, a.env, a.cwd, out, err, tails, (c) => {
      current = c;
      if (killed) killGroup(c);
    });
    if (result.exitCode === 0 && a.chain !== null && !killed) {
      const c = a.chain;
      result = await runOne(h, a, c.argv, { ...a.env, ...c.env }, c.cwd, out, err, tails, (ch) => {
        current = ch;
        if (killed) killGroup(ch);
      });
    }
    if (timedOut) result = { exitCode: -1, signal: 9 };
    if (out.state === "open") out.remove();
    if (err !== null && err.state === "open") err.remove();
    h.respond(id, {
      exitCode: result.exitCode,
      signal: result.signal,
      timedOut,
      peakRssKib: 0,
      stdout: Buffer.concat(tails.out.bufs),
      stderr: Buffer.concat(tails.err.bufs),
    });
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (out.state !== "removed") out.remove();
    if (err !== null && err.state !== "removed") err.remove();
  }
}

function runOne(
  h: ProcessHost,
  a: ExecArgs,
  argv: string[],
  env: Record<string, string>,
  cwd: string,
  out: Channel,
  err: Channel | null,
  tails: { out: { bufs: Buffer[]; len: number }; err: { bufs: Buffer[]; len: number } },
  started: (c: ChildProcess) => void,
): Promise<{ exitCode: number; signal: number | null }> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = startProcess(h, a, argv, env, cwd, false);
    } catch (e) {
      return reject(e);
    }
    h.execs.add(child);
    started(child);
    let spawnError: NodeJS.ErrnoException | null = null;
    child.on("error", (e: NodeJS.ErrnoException) => {
      spawnError = e;
    });
    const pumps = Promise.all([
      pump(h, child.stdout!, out, tails.out),
      pump(h, child.stderr!, err, tails.err),
    ]);
    child.on("close", (code, sig) => {
      h.execs.delete(child);
      void pumps.then(() => {
        if (spawnError !== null) {
          const notFound = spawnError.code === "ENOENT";
          const msg = `sm-agent: ${argv[0]}: ${notFound ? "command not found" : spawnError.message}\n`;
          tails.err.bufs.push(Buffer.from(msg));
          return resolve({ exitCode: notFound ? 127 : 126, signal: null });
        }
        resolve(
          sig !== null ? { exitCode: -1, signal: signalNumber(sig) } : { exitCode: code ?? -1, signal: null },
        );
      });
    });
  });
}

export async function spawnOp(h: ProcessHost, id: number, a: SpawnArgs): Promise<void> {
  const ids = a.chErr === null ? [a.chOut, a.chIn] : [a.chOut, a.chErr, a.chIn];
  h.claimChannels(ids);
  await stage(h, a);
  const child = startProcess(h, a, a.argv, a.env, a.cwd, true);
  let spawnError: NodeJS.ErrnoException | null = null;
  child.on("error", (e: NodeJS.ErrnoException) => {
    spawnError = e;
  });
  await new Promise<void>((r) => {
    child.once("spawn", () => r());
    child.once("error", () => r());
  });
  const pid = child.pid ?? 0x7fff_0000 + (id & 0xffff);
  const out = h.openChannel(a.chOut, true, false, { onAbort: () => child.stdout?.destroy() });
  const err =
    a.chErr === null ? null : h.openChannel(a.chErr, true, false, { onAbort: () => child.stderr?.destroy() });
  const proc: SpawnedProcess = { child, chIn: a.chIn, stdinClosed: false };
  const stdin = child.stdin!;
  stdin.on("error", () => {});
  const inCh = h.openChannel(a.chIn, false, true, {
    sink: {
      data: (b) => {
        if (proc.stdinClosed) return inCh.consumed(b.length);
        stdin.write(b, () => inCh.consumed(b.length));
      },
      eof: () => {
        proc.stdinClosed = true;
        stdin.end();
      },
      error: () => {
        proc.stdinClosed = true;
        stdin.destroy();
      },
    },
  });
  h.spawned.set(pid, proc);
  h.respond(id, { pid });
  const pumps = Promise.all([pump(h, child.stdout!, out, null), pump(h, child.stderr!, err, null)]);
  child.on("close", (code, sig) => {
    void pumps.then(async () => {
      if (spawnError !== null) {
        const notFound = (spawnError as NodeJS.ErrnoException).code === "ENOENT";
        const msg = `sm-agent: ${a.argv[0]}: ${notFound ? "command not found" : (spawnError as Error).message}\n`;
        if (err !== null && err.state === "open") await err.write(Buffer.from(msg)).catch(() => {});
      }
      await Promise.all([out.end().catch(() => {}), err?.end().catch(() => {})]);
      if (inCh.state === "open") inCh.abort();
      h.spawned.delete(pid);
      if (!h.inSession()) return;
      const failed = spawnError !== null;
      h.event("exit", {
        pid,
        exitCode: failed
          ? (spawnError as NodeJS.ErrnoException).code === "ENOENT"
            ? 127
            : 126
          : sig !== null
            ? -1
            : (code ?? -1),
        signal: failed || sig === null ? null : signalNumber(sig),
        timedOut: false,
        peakRssKib: 0,
      });
    });
  });
}

export function killGroup(c: ChildProcess): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(-c.pid, "SIGKILL");
  } catch {
    c.kill("SIGKILL");
  }
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};
export function signalNumber(sig: NodeJS.Signals): number {
  return SIGNALS[sig] ?? 15;
}
