/**
 * Test harness: mounts a ShareServer on the HOST kernel through the test-only C relay
 * (fuse-relay.c), standing in for the guest agent. Guest-side file operations must run in
 * child processes: the server runs on this process's event loop and libuv thread pool, so a
 * synchronous or thread-pool file call on the mount from this process could deadlock.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ShareServer, type ShareServerOptions } from "../../src/share/server";

const execFileP = promisify(execFile);
const RELAY_SRC = fileURLToPath(new URL("./fuse-relay.c", import.meta.url));

/** Compiles the relay; returns its path or a reason to skip. */
export async function buildRelay(): Promise<{ path: string } | { skip: string }> {
  if (process.platform !== "linux") return { skip: "not Linux" };
  if (!existsSync("/dev/fuse")) return { skip: "/dev/fuse missing" };
  if (process.getuid?.() !== 0) return { skip: "mounting FUSE needs root" };
  const dir = await fsp.mkdtemp(join(tmpdir(), "sm-relay-"));
  const out = join(dir, "fuse-relay");
  try {
    await execFileP("gcc", ["-O2", "-pthread", "-o", out, RELAY_SRC]);
  } catch (e) {
    return { skip: `gcc could not build the relay: ${(e as Error).message.split("\n")[0]}` };
  }
  return { path: out };
}

export interface Mounted {
  mnt: string;
  server: ShareServer;
  relay: ChildProcess;
  serving: Promise<void>;
  errors: Error[];
  stop(): Promise<void>;
}

/** Mounts `root` at `mnt` with a ShareServer; resolves once mounted (or rejects with the relay's reason). */
export async function mountShare(
  relayPath: string,
  mnt: string,
  opts: Omit<ShareServerOptions, "tag"> & { tag?: string },
): Promise<Mounted> {
  const relay = spawn(relayPath, [mnt], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes("mounted\n")) {
        relay.stderr!.off("data", onData);
        resolve();
      }
    };
    relay.stderr!.on("data", onData);
    relay.once("exit", (code) => reject(new Error(`relay exited ${code}: ${stderr.trim()}`)));
    relay.once("error", reject);
  });
  const errors: Error[] = [];
  const server = new ShareServer({ tag: "t", ...opts, onError: (e) => errors.push(e) });
  const stream = Duplex.from({ readable: relay.stdout!, writable: relay.stdin! });
  const exited = new Promise<void>((r) => {
    if (relay.exitCode !== null) r();
    else relay.once("exit", () => r());
  });
  const serving = server.serve(stream);
  return {
    mnt,
    server,
    relay,
    serving,
    errors,
    async stop() {
      relay.stdin!.end();
      const timer = setTimeout(() => relay.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
      await server.close();
    },
  };
}

/** True when `dir` is a mount point listed in /proc/mounts. */
export async function isMounted(dir: string): Promise<boolean> {
  const m = await fsp.readFile("/proc/mounts", "utf8");
  return m.split("\n").some((l) => l.split(" ")[1] === dir);
}

/**
 * Runs `body` (the inside of an async ESM function; `fs` = node:fs/promises, `M` = the mount dir,
 * `A` = extra JSON argument) in a child node process and returns what it returns (JSON).
 */
export async function guest<T = unknown>(mnt: string, body: string, arg: unknown = null, timeoutMs = 60_000) {
  const code = `import fs from "node:fs/promises"; import fsSync from "node:fs";
const M = process.env.SM_MNT; const A = JSON.parse(process.env.SM_ARG);
const run = async () => { ${body} };
const err = (e) => ({ error: e.code ?? String(e) });
run().then((r) => process.stdout.write(JSON.stringify(r ?? null)), (e) => { process.stdout.write(JSON.stringify(err(e))); });`;
  const { stdout } = await execFileP(process.execPath, ["--input-type=module", "-e", code], {
    env: { ...process.env, SM_MNT: mnt, SM_ARG: JSON.stringify(arg) },
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout) as T;
}
