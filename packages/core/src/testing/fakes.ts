/**
 * TEST DOUBLES for unit tests (no VM): a fake agent session with an in-memory guest filesystem and a
 * handful of commands, a fake live VM whose VMM "crash" can be triggered, and a fake runtime. The real
 * agent is the C program in guest-agent/; the real backends are in @supermachine/hypervisor-*.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { type Duplex, PassThrough } from "node:stream";
import type {
  AgentChild,
  AgentExecArgs,
  AgentExecResult,
  AgentPort,
  BackendPort,
  LiveVmPort,
  PreparedRestorePort,
  RestoreSpec,
} from "../ports";
import type { Runtime } from "../runtime-port";

class RemoteError extends Error {
  readonly code = "SM_AGENT_REMOTE";
  constructor(
    readonly remoteCode: string,
    message: string,
  ) {
    super(message);
  }
}

/** Pull-style read over a Readable: up to max bytes, empty at EOF. */
function pullRead(stream: PassThrough, max: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const attempt = (): boolean => {
      const chunk = stream.read() as Buffer | null;
      if (chunk !== null) {
        if (chunk.length > max) stream.unshift(chunk.subarray(max));
        resolve(chunk.subarray(0, max));
        return true;
      }
      if (stream.readableEnded) {
        resolve(Buffer.alloc(0));
        return true;
      }
      return false;
    };
    if (attempt()) return;
    const onReadable = () => {
      if (attempt()) done();
    };
    const onEnd = () => {
      done();
      resolve(Buffer.alloc(0));
    };
    const done = () => {
      stream.off("readable", onReadable);
      stream.off("end", onEnd);
    };
    stream.on("readable", onReadable);
    stream.on("end", onEnd);
  });
}

export class FakeAgent implements AgentPort {
  files = new Map<string, Buffer>();
  resumes: { timeNs: bigint; entropy: Buffer }[] = [];
  execs: AgentExecArgs[] = [];
  workloadSignals: number[] = [];
  /** guest port → host port, for tcpConnect. */
  ports = new Map<number, number>();
  lost = false;
  #lostCbs: ((e: Error) => void)[] = [];
  #pending = new Set<(e: Error) => void>();
  hello = {
    agentVersion: "fake-1",
    caps: ["agent-exe"] as string[],
    ready: true,
    listening: null,
    bootMs: 1,
  };

  loseSession(err = Object.assign(new Error("transport closed"), { code: "SM_AGENT_LOST" })): void {
    if (this.lost) return;
    this.lost = true;
    for (const r of this.#pending) r(err);
    for (const cb of this.#lostCbs) cb(err);
  }

  #check(): void {
    if (this.lost) throw Object.assign(new Error("agent lost"), { code: "SM_AGENT_LOST" });
  }

  async exec(args: AgentExecArgs): Promise<AgentExecResult> {
    this.#check();
    this.execs.push(args);
    for (const s of args.stage) this.files.set(s.path, s.data);
    const [cmd, ...rest] = args.argv;
    const ok = (stdout = "", stderr = "", exitCode = 0): AgentExecResult => ({
      exitCode,
      signal: null,
      timedOut: false,
      peakRssKib: 100,
      stdout: Buffer.from(stdout),
      stderr: Buffer.from(stderr),
    });
    let r: AgentExecResult;
    switch (cmd) {
      case "echo":
        r = ok(`${rest.join(" ")}\n`);
        break;
      case "true":
        r = ok();
        break;
      case "false":
        r = ok("", "", 1);
        break;
      case "cat": {
        const f = this.files.get(rest[0] ?? "");
        r = f ? ok(f.toString()) : ok("", `cat: ${rest[0]}: No such file or directory\n`, 1);
        break;
      }
      case "env":
        r = ok(
          `${Object.entries(args.env)
            .map(([k, v]) => `${k}=${v}`)
            .join("\n")}\n`,
        );
        break;
      case "hang":
        r = await new Promise<AgentExecResult>((_, reject) => {
          this.#pending.add(reject);
        });
        break;
      case "/bin/sh":
      case "/proc/1/exe":
        r = ok();
        break;
      default:
        r = ok("", `sm-agent: ${cmd}: command not found\n`, 127);
    }
    if (r.exitCode === 0 && args.chain)
      return this.exec({ ...args, argv: args.chain.argv, chain: null, stage: [] });
    return r;
  }

  async spawn(args: Omit<AgentExecArgs, "timeoutMs">): Promise<AgentChild> {
    this.#check();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const stdin = new PassThrough();
    let resolveExit: (v: {
      exitCode: number;
      signal: number | null;
      timedOut: boolean;
      peakRssKib: number;
    }) => void = () => {};
    const exit = new Promise<{
      exitCode: number;
      signal: number | null;
      timedOut: boolean;
      peakRssKib: number;
    }>((r) => {
      resolveExit = r;
    });
    if (args.argv[0] === "cat") {
      stdin.pipe(stdout);
      stdin.on("end", () => {
        stderr.end();
        resolveExit({ exitCode: 0, signal: null, timedOut: false, peakRssKib: 10 });
      });
    } else if (args.argv[0] === "yes") {
      // Writes `n` lines then exits.
      const n = Number(args.argv[1] ?? 3);
      for (let i = 0; i < n; i++) stdout.write(`y${i}\n`);
      stdout.end();
      stderr.end("done\n");
      resolveExit({ exitCode: 0, signal: null, timedOut: false, peakRssKib: 10 });
    } else {
      stdout.end();
      stderr.end(`sm-agent: ${args.argv[0]}: command not found\n`);
      resolveExit({ exitCode: 127, signal: null, timedOut: false, peakRssKib: 1 });
    }
    return {
      pid: 42,
      stdout,
      stderr,
      stdin,
      readStdout: (n) => pullRead(stdout, n),
      readStderr: (n) => pullRead(stderr, n),
      writeStdin: (d) =>
        new Promise<void>((resolve, reject) => stdin.write(d, (e) => (e ? reject(e) : resolve()))),
      closeStdin: () => new Promise<void>((resolve) => stdin.end(() => resolve())),
      wait: () => exit,
      signal: async (signum) => {
        stdout.end();
        stderr.end();
        resolveExit({ exitCode: -1, signal: signum, timedOut: false, peakRssKib: 10 });
      },
      resize: async () => {},
    };
  }

  async writeFile(path: string, data: Buffer): Promise<void> {
    this.#check();
    if (data.length > 4 * 1024 * 1024)
      throw Object.assign(new Error("too large"), { code: "SM_FILE_TOO_LARGE" });
    this.files.set(path, Buffer.from(data));
  }

  async readFile(path: string): Promise<{ data: Buffer; mode: number }> {
    this.#check();
    const f = this.files.get(path);
    if (!f) throw new RemoteError("ENOENT", `${path}: no such file`);
    return { data: f, mode: 0o644 };
  }

  async workloadSignal(signum: number): Promise<void> {
    this.#check();
    this.workloadSignals.push(signum);
  }

  async tcpConnect(port: number): Promise<Duplex> {
    this.#check();
    const hostPort = this.ports.get(port);
    if (!hostPort) throw new RemoteError("ECONNREFUSED", `port ${port}: connection refused`);
    const sock = connect({ host: "127.0.0.1", port: hostPort });
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", () => resolve());
      sock.once("error", reject);
    });
    return sock;
  }

  /** Shares attached now: tag → guest path (undefined = staging only). */
  readonly shares = new Map<string, string | undefined>();
  /** Every fs-attach / fs-detach in order, e.g. "attach src". */
  readonly shareLog: string[] = [];
  async fsAttach(tag: string, path?: string): Promise<Duplex> {
    this.#check();
    this.shareLog.push(`attach ${tag}`);
    if (this.shares.has(tag)) throw new RemoteError("EEXIST", `share ${tag} is already attached`);
    this.shares.set(tag, path);
    // The fake guest kernel never sends FUSE requests: an idle stream.
    return new PassThrough();
  }
  async fsDetach(tag: string): Promise<void> {
    this.#check();
    this.shareLog.push(`detach ${tag}`);
    if (!this.shares.delete(tag)) throw new RemoteError("ENOENT", `share ${tag} is not attached`);
  }

  async resume(timeNs: bigint, entropy: Buffer): Promise<void> {
    this.#check();
    this.resumes.push({ timeNs, entropy });
  }
  async ping(): Promise<void> {
    this.#check();
  }
  async shutdown(): Promise<void> {}
  async waitReady(): Promise<void> {}
  async waitListening(): Promise<void> {}
  onLost(cb: (err: Error) => void): void {
    this.#lostCbs.push(cb);
  }
  close(): void {}
}

let nextPid = 1000;

export class FakeLive implements LiveVmPort {
  readonly pid = nextPid++;
  readonly runtimeDir: string;
  readonly agentSocketPath: string;
  readonly accel = "tcg";
  readonly exited: Promise<{ expected: boolean; error?: Error }>;
  stopped = false;
  killed = false;
  snapshots: string[] = [];
  #exit: (v: { expected: boolean; error?: Error }) => void = () => {};

  constructor(
    runtimeDir: string,
    readonly agent: FakeAgent,
  ) {
    this.runtimeDir = runtimeDir;
    this.agentSocketPath = join(runtimeDir, "agent.sock");
    this.exited = new Promise((r) => {
      this.#exit = r;
    });
  }

  crash(): void {
    const error = Object.assign(new Error("QEMU killed by SIGKILL"), { code: "SM_VMM_CRASHED" });
    this.#exit({ expected: false, error });
    this.agent.loseSession();
  }

  async agentStream(): Promise<Duplex> {
    return new PassThrough();
  }
  async snapshot(dir: string): Promise<Record<string, unknown>> {
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "state"), "state");
    await writeFile(join(dir, "memory"), Buffer.alloc(4096));
    this.snapshots.push(dir);
    return { fake: true };
  }
  async stop(): Promise<void> {
    this.stopped = true;
    this.#exit({ expected: true });
  }
  killSync(): void {
    this.killed = true;
  }
}

export interface FakeRuntimeState {
  boots: number;
  restores: number;
  /** prepareRestore calls (only with opts.prepared) and their discards. */
  prepared: number;
  preparedDiscards: number;
  lives: FakeLive[];
  resolves: number;
  rootfsBuilds: number;
}

/** A runtime whose "VMs" are FakeLive + FakeAgent. rootfs/initramfs outputs are small placeholder files. */
export function fakeRuntime(
  runtimeDir: string,
  opts: {
    digest?: string;
    restoreDelayMs?: number;
    /** Offer prepareRestore like the QEMU backends; "hang": its restore never completes (a stuck VMM). */
    prepared?: "ok" | "hang";
    /** The agents' hello caps (default: the features core uses). */
    agentCaps?: string[];
  } = {},
): Runtime & { state: FakeRuntimeState } {
  const state: FakeRuntimeState = {
    boots: 0,
    restores: 0,
    prepared: 0,
    preparedDiscards: 0,
    lives: [],
    resolves: 0,
    rootfsBuilds: 0,
  };
  const makeLive = () => {
    const agent = new FakeAgent();
    if (opts.agentCaps) agent.hello.caps = opts.agentCaps;
    const live = new FakeLive(runtimeDir, agent);
    state.lives.push(live);
    return live;
  };
  const backend: BackendPort = {
    name: "fake",
    version: "1",
    async boot() {
      state.boots++;
      return makeLive();
    },
    async restore(_spec: RestoreSpec) {
      state.restores++;
      if (opts.restoreDelayMs) await new Promise((r) => setTimeout(r, opts.restoreDelayMs));
      return makeLive();
    },
  };
  if (opts.prepared) {
    backend.prepareRestore = async (_spec: RestoreSpec): Promise<PreparedRestorePort> => {
      state.prepared++;
      let discarded = false;
      return {
        restore: () =>
          opts.prepared === "hang" ? new Promise<LiveVmPort>(() => {}) : Promise.resolve(makeLive()),
        async discard() {
          if (!discarded) state.preparedDiscards++;
          discarded = true;
        },
        killSync() {},
      };
    };
  }
  return {
    state,
    async resolveImage() {
      state.resolves++;
      return {
        digest: opts.digest ?? "sha256:1111",
        reference: "127.0.0.1:5000/busybox:latest",
        config: { Cmd: ["/bin/sh"], Env: ["PATH=/bin"] },
        layers: async () => [],
      };
    },
    kernel() {
      return { release: "6.1.0-test", dir: "/nonexistent/kernel", modulesDir: "/nonexistent/kernel/modules" };
    },
    async agentBinary() {
      return { path: "/nonexistent/sm-agent", sha256: "ab".repeat(32) };
    },
    async buildRootfs(o) {
      state.rootfsBuilds++;
      await writeFile(o.out, "sqsh");
    },
    async buildInitramfs(o) {
      await writeFile(o.out, o.config);
    },
    async backend() {
      return backend;
    },
    async connectAgent(vm) {
      return (vm as FakeLive).agent;
    },
  };
}
