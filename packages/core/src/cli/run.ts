/**
 * `supermachine run` and `supermachine build`.
 *
 * `run IMAGE CMD...` execs CMD in a fresh VM next to the image's workload and exits with CMD's code.
 * `run IMAGE` (no CMD) attaches to the workload the VM already started at resume — it is never started a
 * second time: its console output is streamed, Ctrl-C / SIGTERM are forwarded to it, and the exit status
 * is the workload's (128 + signal when a signal ended it). With -i/-t and no CMD the workload is
 * replaced by the same command run on this terminal (the started copy, whose stdin is /dev/null, is
 * stopped first so a service does not find its port taken).
 */

import { statSync } from "node:fs";
import { keepVmsOnSignal } from "../cleanup";
import type { Image as ImageT } from "../image";
import { Image } from "../index";
import { networkFromFlags } from "../network/cli-flags";
import type { BuildOptions } from "../types";
import { MAX_TIMER_MS } from "../validate";
import { INTERNAL, type Vm } from "../vm";
import {
  all,
  type CommandHelp,
  flag,
  has,
  intFlag,
  type OptionSpec,
  oneOf,
  type Parsed,
  parseArgs,
  UsageError,
} from "./args";
import { followConsole } from "./console";
import { progressRenderer } from "./progress";

/** Image and VM options shared by run and build (issue 18's network flags go here too). */
export const BUILD_OPTIONS: OptionSpec[] = [
  { names: ["--memory"], value: "MIB", help: "guest memory in MiB (default 256)" },
  { names: ["--cpus"], value: "N", help: "vCPUs (default 1)" },
  { names: ["--name"], value: "NAME", help: "snapshot name (default: derived from IMAGE and options)" },
  { names: ["--pull"], value: "always|missing|never", help: "when to pull IMAGE (default missing)" },
  {
    names: ["--platform"],
    value: "OS/ARCH",
    help: "platform to pull, e.g. linux/arm64 (default: the host's)",
  },
  {
    names: ["--layout"],
    value: "DIR",
    help: "read IMAGE from an OCI layout directory instead of a registry",
  },
  { names: ["--archive"], value: "FILE", help: "read IMAGE from a docker-save / OCI archive tarball" },
  {
    names: ["--network"],
    value: "none|public|nat",
    help: "guest network (default public: TCP to public addresses + DNS, never the host, loopback or private ranges; nat is unfiltered, unsafe)",
  },
  {
    names: ["--allow"],
    value: "ENTRY",
    help: "reach only what allow entries name: CIDR, address, host name or *.suffix, optionally :port",
    repeatable: true,
  },
  { names: ["--deny"], value: "ENTRY", help: "never reach ENTRY (wins over --allow)", repeatable: true },
  {
    names: ["--snapshots-dir"],
    value: "DIR",
    help: "where snapshots live (default ~/.local/supermachine-snapshots, env SUPERMACHINE_SNAPSHOTS_DIR)",
  },
  { names: ["--quiet", "-q"], help: "no progress output" },
];

export const RUN_OPTIONS: OptionSpec[] = [
  { names: ["--interactive", "-i"], help: "keep stdin open (with -t: a terminal session)" },
  { names: ["--tty", "-t"], help: "allocate a pseudo-terminal" },
  {
    names: ["--env", "-e"],
    value: "K=V",
    help: "environment for CMD (K alone: take it from here)",
    repeatable: true,
  },
  { names: ["--workdir", "-w"], value: "DIR", help: "working directory of CMD in the guest" },
  {
    names: ["--publish", "-p"],
    value: "[HOST:]GUEST",
    help: "forward 127.0.0.1:HOST to GUEST port in the VM (no HOST: a free one, printed)",
    repeatable: true,
  },
  {
    names: ["--timeout"],
    value: "MS",
    help: "kill CMD (or the workload) after MS (0 = never; default 60000 for a CMD without -i/-t, else 0)",
  },
  ...BUILD_OPTIONS,
];

export const RUN_HELP: CommandHelp = {
  usage: "run [options] IMAGE [--] [CMD...]",
  summary: "bake IMAGE if needed, start a VM from its snapshot, run CMD or attach to the image's workload",
  description: [
    "With CMD: CMD runs in the VM (output streamed) and its exit code is supermachine's.",
    "Without CMD: attaches to the image's workload (ENTRYPOINT + CMD), which the VM has started: its",
    "console output is streamed, Ctrl-C / SIGTERM are forwarded to it (a second Ctrl-C stops the VM),",
    "and the exit code is the workload's (128 + signal number when a signal ended it). A service keeps",
    "running until interrupted; reach its ports with -p. With -i/-t and no CMD, the image's command runs",
    "on this terminal instead.",
  ].join("\n"),
  options: RUN_OPTIONS,
  examples: [
    "supermachine run alpine:latest -- uname -a",
    "supermachine run -p 8080:80 nginx:latest        # then: curl http://127.0.0.1:8080/",
    "supermachine run -it alpine:latest sh",
  ],
};

export const BUILD_HELP: CommandHelp = {
  usage: "build [options] IMAGE",
  summary: "bake IMAGE into a snapshot (or reuse the cached one) and print the snapshot directory",
  options: BUILD_OPTIONS,
  examples: [
    "supermachine build alpine:latest",
    "supermachine build --memory 512 --name py python:3.12-slim",
  ],
};

const quiet = (p: Parsed) => has(p, "--quiet");

function buildOptionsFrom(command: string, p: Parsed, ref: string): BuildOptions {
  const o: BuildOptions = { ref };
  const memory = intFlag(command, p, "--memory", { min: 1 });
  if (memory !== undefined) o.memoryMib = memory;
  const cpus = intFlag(command, p, "--cpus", { min: 1 });
  if (cpus !== undefined) o.vcpus = cpus;
  const name = flag(p, "--name");
  if (name) o.name = name;
  const pull = oneOf(command, p, "--pull", ["always", "missing", "never"] as const);
  if (pull) o.pullPolicy = pull;
  const platform = flag(p, "--platform");
  if (platform) o.platform = platform;
  const layout = flag(p, "--layout");
  const archive = flag(p, "--archive");
  if (layout && archive) throw new UsageError("--layout and --archive exclude each other", command);
  if (layout) o.source = { type: "oci-layout", path: layout };
  if (archive) o.source = { type: "archive", path: archive };
  const network = networkFromFlags({
    network: flag(p, "--network"),
    allow: all(p, "--allow"),
    deny: all(p, "--deny"),
  });
  if (network !== undefined) o.network = network;
  const dir = flag(p, "--snapshots-dir");
  if (dir) o.snapshotsDir = dir;
  return o;
}

async function bake(command: string, p: Parsed, ref: string): Promise<ImageT> {
  const opts = buildOptionsFrom(command, p, ref);
  const prog = progressRenderer(quiet(p));
  try {
    return await Image.build({ ...opts, onProgress: prog.onProgress });
  } finally {
    prog.done();
  }
}

export async function cmdBuild(args: string[]): Promise<number> {
  const p = parseArgs("build", args, BUILD_OPTIONS, Number.POSITIVE_INFINITY);
  const [ref, ...extra] = [...p.positionals, ...p.rest];
  if (!ref) throw new UsageError("build needs an IMAGE", "build");
  if (extra.length) throw new UsageError(`build takes one IMAGE, got also: ${extra.join(" ")}`, "build");
  const img = await bake("build", p, ref);
  // Nothing will acquire the bake's VM in this process: stop it so we exit at once.
  await img.takeHandoff()?.stop();
  process.stdout.write(`${img.snapshotPath}\n`);
  return 0;
}

export interface Publish {
  hostPort: number;
  guestPort: number;
}

/** `-p 8080:80`, `-p 80` (= `0:80`), `-p 127.0.0.1:8080:80`. */
export function parsePublish(spec: string): Publish {
  const parts = spec.split(":");
  if (parts.length === 3 && parts[0] !== "127.0.0.1" && parts[0] !== "localhost") {
    throw new UsageError(
      `--publish ${spec}: only 127.0.0.1 can be listened on (the forward is for this host only)`,
      "run",
    );
  }
  const nums = parts.length === 3 ? parts.slice(1) : parts;
  const port = (s: string | undefined, min: number) => {
    const n = Number(s);
    if (s === undefined || !/^\d+$/.test(s) || n < min || n > 65535) return undefined;
    return n;
  };
  const guest = port(nums[nums.length - 1], 1);
  const host = nums.length === 2 ? port(nums[0], 0) : 0;
  if (nums.length > 2 || guest === undefined || host === undefined) {
    throw new UsageError(
      `--publish expects [HOST:]GUEST with ports 0..65535 (guest 1..65535), e.g. 8080:80; got "${spec}"`,
      "run",
    );
  }
  return { hostPort: host, guestPort: guest };
}

function envFlags(p: Parsed): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of p.flags.get("--env") ?? []) {
    const eq = kv.indexOf("=");
    if (eq === 0) throw new UsageError(`--env expects K=V or K, got "${kv}"`, "run");
    if (eq < 0) {
      const v = process.env[kv];
      if (v !== undefined) out[kv] = v;
    } else out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };
const FORWARDED = Object.keys(SIGNALS) as NodeJS.Signals[];

/**
 * SIGINT/SIGTERM/SIGHUP while run is busy: the first goes to `target` (the workload or CMD) when there
 * is one; a second one, or one before there is a target, calls `force` with 128 + signal number.
 */
class Signals {
  target: ((signum: number) => Promise<void>) | undefined;
  #count = 0;
  // Marked: core's exit hooks leave the VM alone on the signal (it goes to the guest first); the
  // pool shutdown in cmdRun's finally, or process exit, stops it.
  #handler = keepVmsOnSignal((sig: NodeJS.Signals) => {
    const num = SIGNALS[sig] ?? 15;
    this.#count++;
    if (this.target && this.#count === 1) {
      if (!this.quiet) process.stderr.write(`\nsupermachine: ${sig} forwarded (again: stop the VM)\n`);
      this.target(num).catch(() => this.force(128 + num));
    } else this.force(128 + num);
  });
  constructor(
    private readonly force: (code: number) => void,
    private readonly quiet: boolean,
  ) {
    for (const s of FORWARDED) process.on(s, this.#handler);
  }
  dispose(): void {
    for (const s of FORWARDED) process.off(s, this.#handler);
  }
}

export async function cmdRun(args: string[]): Promise<number> {
  const p = parseArgs("run", args, RUN_OPTIONS, 1);
  const ref = p.positionals[0];
  if (!ref) throw new UsageError("run needs an IMAGE", "run");
  const publish = (p.flags.get("--publish") ?? []).map(parsePublish);
  const timeoutFlag = intFlag("run", p, "--timeout", { max: MAX_TIMER_MS });
  const interactive = has(p, "--interactive");
  const tty = has(p, "--tty") && process.stdin.isTTY === true;
  const env = envFlags(p);
  const img = await bake("run", p, ref);
  const workload = img.meta.workload && img.meta.startWorkload !== "never" ? img.meta.workload : null;
  const attach = p.rest.length === 0 && workload !== null && !interactive && !tty;
  if (attach && (Object.keys(env).length > 0 || flag(p, "--workdir"))) {
    throw new UsageError(
      "--env and --workdir apply to a CMD; the workload runs with the image's (give a CMD to use them)",
      "run",
    );
  }
  // The first VM after a bake is the bake's own (warm handoff): its console already holds the boot
  // log. The workload starts at the resume in acquire, so its output begins at the current end.
  const handoff = img.handoff;
  const bootLogBytes = consoleSize(handoff?.live.consoleLogPath);
  // One VM, used once: dirty reuse keeps the pool from restoring a spare VM next to it.
  const pool = await img.pool({ min: 0, max: 1, restoreOnRelease: false });
  let forced!: (code: number) => void;
  const forcedP = new Promise<number>((r) => {
    forced = r;
  });
  const signals = new Signals((code) => forced(code), quiet(p));
  let vm: Vm | undefined;
  try {
    const acquired = pool.acquire();
    const first = await Promise.race([acquired, forcedP]);
    if (typeof first === "number") {
      void acquired.then((v) => v.release()).catch(() => undefined);
      return first;
    }
    vm = first;
    const ports: { addr: string; guest: number }[] = [];
    for (const pub of publish) {
      const fwd = await vm.exposeTcp(pub.hostPort, pub.guestPort);
      ports.push({ addr: fwd.localAddr, guest: pub.guestPort });
      process.stderr.write(`supermachine: ${fwd.localAddr} → guest port ${pub.guestPort}\n`);
    }
    if (attach) {
      const v = vm;
      signals.target = (n) => v.workloadSignal(n);
      const w = attachWorkload(vm, workload, {
        quiet: quiet(p),
        timeoutMs: timeoutFlag ?? 0,
        guestPort: img.meta.guestPort,
        ports,
        consoleFrom: vm[INTERNAL]() === handoff ? bootLogBytes : 0,
      });
      return await Promise.race([w, forcedP]);
    }
    let argv = p.rest;
    if (argv.length === 0) {
      argv = workload ?? ["/bin/sh"];
      // The VM started the workload with stdin on /dev/null: stop that copy, run it on this terminal.
      if (workload) await stopWorkload(vm);
    }
    const timeoutMs = timeoutFlag ?? (!interactive && !tty ? 60_000 : 0);
    const cmd = runCommand(vm, signals, {
      argv,
      env,
      cwd: flag(p, "--workdir"),
      interactive,
      tty,
      timeoutMs,
    });
    return await Promise.race([cmd, forcedP]);
  } finally {
    signals.dispose();
    await vm?.release().catch(() => undefined);
    await pool.shutdown();
  }
}

function consoleSize(path: string | undefined): number {
  try {
    return path ? statSync(path).size : 0;
  } catch {
    return 0;
  }
}

/** SIGKILL the VM's workload and wait (≤ 5 s) for it to be gone; no-op when it already exited. */
async function stopWorkload(vm: Vm): Promise<void> {
  const agent = vm[INTERNAL]()?.agent;
  const gone = new Promise<void>((r) => agent?.onWorkloadExit?.(() => r()));
  try {
    await vm.workloadSignal(9);
  } catch {
    return; // ESRCH: not running any more
  }
  let timer: NodeJS.Timeout | undefined;
  const waited = new Promise<void>((r) => {
    timer = setTimeout(r, 5000);
  });
  await Promise.race([gone, waited]);
  clearTimeout(timer);
}

/**
 * Stream the workload's console until it exits; resolve with its exit status (128 + signal when a
 * signal ended it). Signals are forwarded by the caller.
 */
async function attachWorkload(
  vm: Vm,
  argv: string[],
  o: {
    quiet: boolean;
    timeoutMs: number;
    guestPort: number;
    ports: { addr: string; guest: number }[];
    consoleFrom: number;
  },
): Promise<number> {
  const h = vm[INTERNAL]();
  if (!h?.agent.onWorkloadExit) throw new Error("this VM cannot report its workload's exit");
  const exitP = new Promise<{ exitCode: number; signal: number | null }>((r) => h.agent.onWorkloadExit?.(r));
  const consolePath = h.live.consoleLogPath;
  const follower = consolePath
    ? followConsole(
        consolePath,
        (chunk) => {
          process.stdout.write(chunk);
        },
        { startAt: o.consoleFrom },
      )
    : undefined;
  if (!o.quiet) {
    process.stderr.write(`supermachine: attached to the workload \`${argv.join(" ")}\` (Ctrl-C stops it)\n`);
    // Say where it listens once the agent sees its port (guestPort, default 80) open.
    h.agent.waitListening(10 * 60_000).then(
      () => {
        const fwd = o.ports.find((x) => x.guest === o.guestPort);
        process.stderr.write(
          fwd
            ? `supermachine: the workload listens on guest port ${o.guestPort}: http://${fwd.addr}/\n`
            : `supermachine: the workload listens on guest port ${o.guestPort} (reach it with -p HOST:${o.guestPort})\n`,
        );
      },
      () => undefined,
    );
  }
  let timedOut = false;
  const timer =
    o.timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          vm.workloadSignal(9).catch(() => undefined);
        }, o.timeoutMs)
      : undefined;
  const died = h.live.exited.then((e) => {
    throw Object.assign(new Error(`The VM exited while attached: ${e.error?.message ?? "stopped"}`), {
      code: "SM_GUEST_CRASHED",
    });
  });
  try {
    const e = await Promise.race([exitP, died]);
    // The last lines reach the console just after the exit: give them a moment.
    await new Promise((res) => setTimeout(res, 200));
    await follower?.stop();
    if (timedOut) process.stderr.write(`supermachine: workload killed after --timeout ${o.timeoutMs} ms\n`);
    return e.signal ? 128 + e.signal : e.exitCode;
  } finally {
    clearTimeout(timer);
    await follower?.stop();
  }
}

interface CommandSpec {
  argv: string[];
  env: Record<string, string>;
  cwd: string | undefined;
  interactive: boolean;
  tty: boolean;
  timeoutMs: number;
}

async function runCommand(vm: Vm, signals: Signals, c: CommandSpec): Promise<number> {
  const child = await vm.spawn({
    argv: c.argv,
    env: c.env,
    ...(c.cwd ? { cwd: c.cwd } : {}),
    tty: c.tty,
    ...(c.tty ? { winsize: { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 } } : {}),
  });
  const onResize = () => {
    void child.resize(process.stdout.columns || 80, process.stdout.rows || 24).catch(() => undefined);
  };
  // Ctrl-C goes to the command (in raw -t mode the terminal sends it to the guest as input instead).
  signals.target = (n) => child.signal(n);
  if (c.tty) {
    process.stdin.setRawMode(true);
    process.stdout.on("resize", onResize);
  }
  child.stdout.pipe(process.stdout, { end: false });
  child.stderr.pipe(process.stderr, { end: false });
  if (c.interactive) process.stdin.pipe(child.stdin);
  else await child.closeStdin();
  let timedOut = false;
  const timer =
    c.timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          void child.signal(9).catch(() => undefined);
        }, c.timeoutMs)
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
    if (timedOut) process.stderr.write(`supermachine: command timed out after ${c.timeoutMs} ms\n`);
    return exit.exitCode < 0 ? 128 + (exit.signal ?? 9) : exit.exitCode;
  } finally {
    clearTimeout(timer);
    signals.target = undefined;
    if (c.tty) {
      process.stdin.setRawMode(false);
      process.stdout.off("resize", onResize);
    }
    process.stdin.unpipe(child.stdin);
    process.stdin.pause();
  }
}
