#!/usr/bin/env node
/**
 * `supermachine` — the command line of @supermachine/core.
 *
 *   supermachine run [options] IMAGE [--] [CMD...]   bake if needed, acquire a VM, run CMD, exit with its code
 *   supermachine build [options] IMAGE               bake (or hit the cache) and print the snapshot path
 *   supermachine images                              list snapshots with size and age
 *   supermachine rm NAME...                          delete snapshots
 *   supermachine pull IMAGE                          pull into the local OCI store
 *   supermachine doctor                              check QEMU, kernel, accelerator, /dev/shm, disk, agent
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statfsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { findExecutable, resolveKernelBundle, type VmmBackend } from "@supermachine/hypervisor";
import { pull } from "@supermachine/oci";
import type { Image as ImageT } from "./image";
import { Image } from "./index";
import { defaultSnapshotsDir, hostArch, runtimeRoot } from "./paths";
import { agentCandidates, BACKEND_PACKAGES, defaultBackendName } from "./runtime";
import type { BuildOptions, BuildProgress } from "./types";
import { NAME_RE } from "./validate";
import { MKE2FS_CANDIDATES } from "./volumes";

const USAGE = `Usage: supermachine <command> [options]

Commands:
  run [options] IMAGE [--] [CMD...]  bake if needed, run CMD in a fresh VM, exit with its code
                                     (no CMD: the image's ENTRYPOINT+CMD)
  build [options] IMAGE              bake (or hit the cache); prints the snapshot directory
  images                             list snapshots (name, image, size, age)
  rm NAME...                         delete snapshots
  pull [--platform P] IMAGE          pull an image into the local store
  doctor                             check QEMU, kernel, accelerator, /dev/shm, disk, guest agent

Options (run, build):
  -i, --interactive       keep stdin open (with -t: a terminal session)
  -t, --tty               allocate a pseudo-terminal
  -e, --env K=V           environment for the command (repeatable)
  -w, --workdir DIR       working directory in the guest
  --memory MIB            guest memory (default 256)
  --cpus N                vCPUs (default 1)
  --name NAME             snapshot name
  --pull always|missing|never
  --platform OS/ARCH      platform to pull
  --layout DIR            read the image from an OCI layout directory instead of a registry
  --archive FILE          read the image from a docker-save / OCI archive tarball
  --network none|nat      guest networking (default none)
  --timeout MS            kill the command after MS (run without -i/-t; default 60000, 0 = none)
  --snapshots-dir DIR     where snapshots live (default ~/.local/supermachine-snapshots)
  -q, --quiet             no progress output
`;

class UsageError extends Error {}

interface Parsed {
  flags: Map<string, string[]>;
  positionals: string[];
  rest: string[];
}

const BOOL_FLAGS = new Set([
  "-i",
  "--interactive",
  "-t",
  "--tty",
  "-q",
  "--quiet",
  "-h",
  "--help",
  "-it",
  "-ti",
]);
const VALUE_FLAGS = new Set([
  "-e",
  "--env",
  "-w",
  "--workdir",
  "--memory",
  "--cpus",
  "--name",
  "--pull",
  "--platform",
  "--layout",
  "--archive",
  "--network",
  "--timeout",
  "--snapshots-dir",
]);

/** Options stop at the first positional after IMAGE (docker style): `run img ls -l` runs `ls -l`. */
function parse(argv: string[], maxPositionals: number): Parsed {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  let i = 0;
  const add = (k: string, v: string) => flags.set(k, [...(flags.get(k) ?? []), v]);
  while (i < argv.length) {
    const a = argv[i]!;
    if (a === "--") {
      return { flags, positionals, rest: argv.slice(i + 1) };
    }
    if (positionals.length >= maxPositionals) return { flags, positionals, rest: argv.slice(i) };
    if (a.startsWith("-") && a !== "-") {
      const eq = a.indexOf("=");
      const name = eq > 0 ? a.slice(0, eq) : a;
      if (BOOL_FLAGS.has(name)) {
        if (name === "-it" || name === "-ti") {
          add("-i", "1");
          add("-t", "1");
        } else add(name, "1");
        i++;
        continue;
      }
      if (VALUE_FLAGS.has(name)) {
        const v = eq > 0 ? a.slice(eq + 1) : argv[i + 1];
        if (v === undefined) throw new UsageError(`${name} needs a value`);
        add(name, v);
        i += eq > 0 ? 1 : 2;
        continue;
      }
      throw new UsageError(`unknown option ${a}`);
    }
    positionals.push(a);
    i++;
  }
  return { flags, positionals, rest: [] };
}

const flag = (p: Parsed, ...names: string[]): string | undefined => {
  for (const n of names) {
    const v = p.flags.get(n);
    if (v?.length) return v[v.length - 1];
  }
  return undefined;
};
const has = (p: Parsed, ...names: string[]) => names.some((n) => p.flags.has(n));

function intFlag(p: Parsed, name: string): number | undefined {
  const v = flag(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${name} expects a non-negative integer, got ${v}`);
  return n;
}

function envFlags(p: Parsed): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of [...(p.flags.get("-e") ?? []), ...(p.flags.get("--env") ?? [])]) {
    const eq = kv.indexOf("=");
    if (eq <= 0) {
      const v = process.env[kv];
      if (v !== undefined) out[kv] = v;
    } else out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

// ------------------------------------------------------------------ progress

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

function progressRenderer(quiet: boolean): { onProgress: (e: BuildProgress) => void; done: () => void } {
  const tty = process.stderr.isTTY === true && !quiet;
  const layers = new Map<string, { done: number; total: number }>();
  let lastPhase = "";
  let lastDraw = 0;
  let drawn = false;
  const draw = (line: string, force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < 80) return;
    lastDraw = now;
    process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns ?? 100) - 1)}`);
    drawn = true;
  };
  const bar = (done: number, total: number) => {
    const width = 24;
    const f = total > 0 ? Math.min(1, done / total) : 0;
    const full = Math.round(f * width);
    return `[${"#".repeat(full)}${".".repeat(width - full)}]`;
  };
  const onProgress = (e: BuildProgress) => {
    if (quiet) return;
    if (e.phase === "pull") {
      layers.set(e.layer, { done: e.bytesDone, total: e.bytesTotal });
      let done = 0;
      let total = 0;
      for (const l of layers.values()) {
        done += l.done;
        total += l.total;
      }
      if (tty)
        draw(`pulling ${bar(done, total)} ${fmtBytes(done)} / ${fmtBytes(total)} (${layers.size} layers)`);
      else if (lastPhase !== "pull") process.stderr.write("pulling layers...\n");
      lastPhase = "pull";
      return;
    }
    if (e.phase === "rootfs" && e.bytesDone !== undefined) {
      if (tty) draw(`building root filesystem ${fmtBytes(e.bytesDone)}`);
      return;
    }
    if (e.phase === lastPhase) return;
    lastPhase = e.phase;
    const label: Record<string, string> = {
      resolve: `resolving ${"ref" in e ? e.ref : ""}`,
      rootfs: "building root filesystem",
      initramfs: "building initramfs",
      boot: "booting VM (first bake of this image)",
      warmup: "running warmup",
      snapshot: "capturing snapshot",
      done:
        e.phase === "done" ? (e.cacheHit ? "snapshot cache hit" : `snapshot ready: ${e.snapshotPath}`) : "",
    };
    const text = label[e.phase] ?? e.phase;
    if (tty) draw(text, true);
    else if (e.phase !== "resolve" && !(e.phase === "done" && e.cacheHit)) process.stderr.write(`${text}\n`);
  };
  return {
    onProgress,
    done: () => {
      if (drawn) process.stderr.write("\r\x1b[2K");
    },
  };
}

// ------------------------------------------------------------------ commands

function buildOptionsFrom(p: Parsed, ref: string, onProgress: (e: BuildProgress) => void): BuildOptions {
  const o: BuildOptions = { ref, onProgress };
  const memory = intFlag(p, "--memory");
  if (memory !== undefined) o.memoryMib = memory;
  const cpus = intFlag(p, "--cpus");
  if (cpus !== undefined) o.vcpus = cpus;
  const name = flag(p, "--name");
  if (name) o.name = name;
  const pull = flag(p, "--pull");
  if (pull) o.pullPolicy = pull as BuildOptions["pullPolicy"];
  const platform = flag(p, "--platform");
  if (platform) o.platform = platform;
  const layout = flag(p, "--layout");
  const archive = flag(p, "--archive");
  if (layout) o.source = { type: "oci-layout", path: layout };
  if (archive) o.source = { type: "archive", path: archive };
  const network = flag(p, "--network");
  if (network) o.network = network as BuildOptions["network"];
  const dir = flag(p, "--snapshots-dir");
  if (dir) o.snapshotsDir = dir;
  return o;
}

async function cmdBuild(args: string[]): Promise<number> {
  const p = parse(args, 1);
  const ref = p.positionals[0];
  if (!ref || p.rest.length) throw new UsageError("build takes exactly one IMAGE");
  const prog = progressRenderer(has(p, "-q", "--quiet"));
  let img: ImageT;
  try {
    img = await Image.build(buildOptionsFrom(p, ref, prog.onProgress));
  } finally {
    prog.done();
  }
  // Nothing will acquire the bake's VM in this process: stop it so we exit at once.
  await img.takeHandoff()?.stop();
  process.stdout.write(`${img.snapshotPath}\n`);
  return 0;
}

async function cmdRun(args: string[]): Promise<number> {
  const p = parse(args, 1);
  const ref = p.positionals[0];
  if (!ref) throw new UsageError("run needs an IMAGE");
  const interactive = has(p, "-i", "--interactive");
  const tty = has(p, "-t", "--tty") && process.stdin.isTTY === true;
  const prog = progressRenderer(has(p, "-q", "--quiet"));
  let img: ImageT;
  try {
    img = await Image.build(buildOptionsFrom(p, ref, prog.onProgress));
  } finally {
    prog.done();
  }
  const argv = p.rest.length > 0 ? p.rest : (img.meta.workload ?? ["/bin/sh"]);
  const pool = await img.pool({ min: 0, max: 1 });
  const onSignal = () => {
    void pool.shutdown().then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const vm = await pool.acquire();
  try {
    const env = envFlags(p);
    const cwd = flag(p, "-w", "--workdir");
    const base = { argv, env, ...(cwd ? { cwd } : {}) };
    // Output is streamed as it comes (no size cap, flow-controlled) in every mode; the timeout applies
    // to non-interactive runs only.
    const timeoutMs = !interactive && !tty ? (intFlag(p, "--timeout") ?? 60_000) : 0;
    const child = await vm.spawn({
      ...base,
      tty,
      ...(tty ? { winsize: { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 } } : {}),
    });
    const onResize = () => {
      void child.resize(process.stdout.columns || 80, process.stdout.rows || 24).catch(() => undefined);
    };
    if (tty) {
      process.stdin.setRawMode(true);
      process.stdout.on("resize", onResize);
    }
    child.stdout.pipe(process.stdout, { end: false });
    child.stderr.pipe(process.stderr, { end: false });
    if (interactive) process.stdin.pipe(child.stdin);
    else await child.closeStdin();
    let timedOut = false;
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            void child.signal(9).catch(() => undefined);
          }, timeoutMs)
        : undefined;
    try {
      const exit = await child.wait();
      await Promise.all(
        [child.stdout, child.stderr].map(
          (s) =>
            new Promise<void>((r) =>
              s.readableEnded || s.destroyed ? r() : s.once("close", () => r()).once("end", () => r()),
            ),
        ),
      );
      if (timedOut) process.stderr.write(`supermachine: command timed out after ${timeoutMs} ms\n`);
      return exit.exitCode < 0 ? 128 + (exit.signal ?? 9) : exit.exitCode;
    } finally {
      clearTimeout(timer);
      if (tty) {
        process.stdin.setRawMode(false);
        process.stdout.off("resize", onResize);
      }
      process.stdin.unpipe(child.stdin);
      process.stdin.pause();
    }
  } finally {
    await vm.release().catch(() => undefined);
    await pool.shutdown();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

function snapshotsDirFrom(p: Parsed): string {
  return resolve(flag(p, "--snapshots-dir") ?? defaultSnapshotsDir());
}

function dirSize(dir: string): number {
  let total = 0;
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, ent.name);
    if (ent.isDirectory()) total += dirSize(full);
    else if (ent.isFile()) total += statSync(full).blocks * 512;
  }
  return total;
}

function age(iso: string): string {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  if (s < 129600) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

async function cmdImages(args: string[]): Promise<number> {
  const p = parse(args, 0);
  const dir = snapshotsDirFrom(p);
  const rows: string[][] = [["NAME", "IMAGE", "MEMORY", "SIZE", "CREATED"]];
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue;
      const metaPath = join(dir, name, "metadata.json");
      if (!existsSync(metaPath)) continue;
      try {
        const m = JSON.parse(readFileSync(metaPath, "utf8"));
        rows.push([
          name,
          String(m.ref),
          `${m.memoryMib} MiB`,
          fmtBytes(dirSize(join(dir, name))),
          age(m.createdAt),
        ]);
      } catch {
        rows.push([name, "(unreadable metadata)", "", "", ""]);
      }
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const r of rows)
    process.stdout.write(
      `${r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd()}\n`,
    );
  return 0;
}

async function cmdRm(args: string[]): Promise<number> {
  const p = parse(args, Number.POSITIVE_INFINITY);
  if (p.positionals.length === 0)
    throw new UsageError("rm needs at least one NAME (see `supermachine images`)");
  const dir = snapshotsDirFrom(p);
  let rc = 0;
  for (const name of p.positionals) {
    const target = join(dir, name);
    if (!NAME_RE.test(name) || !existsSync(join(target, "metadata.json"))) {
      process.stderr.write(`supermachine: no snapshot named ${name} in ${dir}\n`);
      rc = 1;
      continue;
    }
    rmSync(target, { recursive: true, force: true });
    process.stdout.write(`${name}\n`);
  }
  return rc;
}

async function cmdPull(args: string[]): Promise<number> {
  const p = parse(args, 1);
  const ref = p.positionals[0];
  if (!ref) throw new UsageError("pull needs an IMAGE");
  const prog = progressRenderer(has(p, "-q", "--quiet"));
  const platform = flag(p, "--platform");
  try {
    const img = await pull(ref, {
      pullPolicy: "always",
      ...(platform ? { platform } : {}),
      onProgress: (e) => {
        if (e.type === "blob-progress" && e.kind === "layer") {
          prog.onProgress({ phase: "pull", layer: e.digest, bytesDone: e.done, bytesTotal: e.total });
        }
      },
    });
    prog.done();
    process.stdout.write(`${img.reference} ${img.digest}\n`);
  } finally {
    prog.done();
  }
  return 0;
}

async function cmdDoctor(): Promise<number> {
  let failures = 0;
  const line = (ok: boolean | "warn", what: string, detail: string) => {
    const mark = ok === true ? "ok  " : ok === "warn" ? "warn" : "FAIL";
    if (ok === false) failures++;
    process.stdout.write(`${mark}  ${what.padEnd(14)} ${detail}\n`);
  };
  const arch = hostArch();
  const hv = { findExecutable, resolveKernelBundle };
  const qemuName = arch === "x86_64" ? "qemu-system-x86_64" : "qemu-system-aarch64";
  const qemu = hv.findExecutable(qemuName);
  if (qemu) {
    let version = "";
    try {
      version = execFileSync(qemu, ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "";
    } catch {
      /* ignore */
    }
    line(true, "qemu", `${qemu} ${version}`);
  } else line(false, "qemu", `${qemuName} not on PATH (apt-get install qemu-system-x86 / brew install qemu)`);
  let kernelPath: string | undefined;
  try {
    const b = hv.resolveKernelBundle({ arch });
    kernelPath = b.kernelPath;
    line(true, "kernel", `${b.release} (${b.dir})`);
  } catch (err) {
    line(false, "kernel", (err as Error).message);
  }
  const agent = agentCandidates(arch).find((c) => existsSync(c));
  line(agent !== undefined, "guest agent", agent ?? `not found; build with make -C guest-agent ARCH=${arch}`);
  const backendName = defaultBackendName();
  try {
    const entry = BACKEND_PACKAGES[backendName];
    if (!entry) throw new Error(`unknown backend ${backendName}`);
    const mod = (await entry.load()) as Record<string, (() => VmmBackend) | undefined>;
    const factory = mod[entry.factory];
    if (!factory) throw new Error(`${entry.pkg} has no backend factory`);
    const be = factory();
    if (kernelPath) {
      const r = await be.resolveAccel("auto");
      line(
        r.accel === "tcg" ? "warn" : true,
        "accelerator",
        r.accel === "tcg" ? `tcg (software emulation, slow): ${r.fallbackReason ?? ""}` : r.accel,
      );
    } else line("warn", "accelerator", "not probed (no kernel)");
  } catch (err) {
    line(false, "backend", `${backendName}: ${(err as Error).message}`);
  }
  const rt = runtimeRoot();
  try {
    const base = existsSync("/dev/shm") ? "/dev/shm" : rt;
    const s = statfsSync(base);
    const free = s.bavail * s.bsize;
    line(
      free > 512 * 1024 * 1024 ? true : "warn",
      "runtime dir",
      `${rt} (${fmtBytes(free)} free in ${base})`,
    );
  } catch (err) {
    line(false, "runtime dir", `${rt}: ${(err as Error).message}`);
  }
  const snaps = defaultSnapshotsDir();
  try {
    let probe = snaps;
    while (!existsSync(probe)) probe = resolve(probe, "..");
    const s = statfsSync(probe);
    const free = s.bavail * s.bsize;
    line(free > 2 * 1024 * 1024 * 1024 ? true : "warn", "disk", `${snaps} (${fmtBytes(free)} free)`);
  } catch (err) {
    line(false, "disk", (err as Error).message);
  }
  const mke2fs = MKE2FS_CANDIDATES.find((c) => (c.startsWith("/") ? existsSync(c) : hv.findExecutable(c)));
  line(mke2fs ? true : "warn", "mke2fs", mke2fs ?? "not found: volumes need e2fsprogs");
  return failures > 0 ? 1 : 0;
}

/** Node's default warning printer is replaced: one plain line per warning, none with -q/--quiet. */
function installWarningPrinter(quiet: boolean): void {
  process.removeAllListeners("warning");
  process.on("warning", (w) => {
    if (quiet) return;
    const text = w.message.startsWith("supermachine: ")
      ? w.message.slice("supermachine: ".length)
      : w.message;
    process.stderr.write(`supermachine: warning: ${text}\n`);
  });
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const own = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  installWarningPrinter(own.includes("-q") || own.includes("--quiet"));
  try {
    switch (cmd) {
      case "run":
        return await cmdRun(rest);
      case "build":
        return await cmdBuild(rest);
      case "images":
      case "ls":
        return await cmdImages(rest);
      case "rm":
        return await cmdRm(rest);
      case "pull":
        return await cmdPull(rest);
      case "doctor":
        return await cmdDoctor();
      case undefined:
      case "-h":
      case "--help":
      case "help":
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${cmd}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`supermachine: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    const code = (err as { code?: string }).code;
    process.stderr.write(
      `supermachine: ${code ? `${code}: ` : ""}${(err as Error).message ?? String(err)}\n`,
    );
    return 1;
  }
}

const isMain = (() => {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return (
      import.meta.url === new URL(`file://${resolve(entry)}`).href ||
      /supermachine$|cli\.[cm]?js$/.test(entry)
    );
  } catch {
    return false;
  }
})();

if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => {
      // Flush, then exit even if a library handle is still open.
      process.stdout.write("", () => process.exit(code));
    },
    (err) => {
      process.stderr.write(`supermachine: ${(err as Error).stack ?? err}\n`);
      process.exitCode = 1;
    },
  );
}
