/**
 * Vm: the handle a pool hands out. A `VmHandle` owns one running VMM + its agent session (the pooled
 * resource); every acquire wraps it in a fresh `Vm` facade, so a released facade stays released even
 * when the handle is reused (restoreOnRelease: false).
 */
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import type { Duplex, Readable, Writable } from "node:stream";
import { registerForCleanup } from "./cleanup";
import { codeOf, SupermachineError } from "./errors";
import type { RecordedMount } from "./fingerprint";
import { closeForwarder, startForwarder, startUnixForwarder, type TcpForwarder } from "./forwarder";
import { hold, whileHeld } from "./keepalive";
import { applyLimits, type RuntimeLimits } from "./limits";
import type { Egress } from "./network/egress";
import type { NetworkOption } from "./network/policy";
import { setVmNetwork, startEgress } from "./network/vm-network";
import type { AgentChild, AgentExecArgs, AgentPort, LiveVmPort } from "./ports";
import { ShareServer } from "./share/server";
import type { VolumeMount } from "./snapshot";
import type { ExecOptions, ExecOutput, ExecWaitResult, NetworkMode, WarmupVm } from "./types";
import { MAX_FILE_BYTES, MAX_TIMER_MS, optInt, toBuffer, validateExecOptions } from "./validate";
import { mountVolumes } from "./volume-guest";

let nextHandleId = 1;

/** The pooled resource: one live VM and its agent session. */
/**
 * How long past an exec's own timeoutMs the host waits for the agent's answer before it declares the
 * guest unresponsive. The agent kills the command at timeoutMs itself; the grace covers a loaded host.
 */
export const EXEC_ANSWER_GRACE_MS = 15_000;
/** The guest agent's own deadline for a file job (write-file, read-file, stage on a share path). */
const AGENT_FILE_JOB_MS = 60_000;
/** Host-side deadline for the answers to writeFile, readFile and the start of a spawn. */
export const RPC_ANSWER_TIMEOUT_MS = AGENT_FILE_JOB_MS + 30_000;

/** A command core runs itself in the guest (not a user's exec): root, cwd /, no env, stage or tty. */
export function internalExec(argv: string[], timeoutMs: number): AgentExecArgs {
  return { argv, env: {}, cwd: "/", stage: [], timeoutMs, chain: null, tty: false, cols: 80, rows: 24 };
}

export class VmHandle {
  readonly id = nextHandleId++;
  dead = false;
  deathError: Error | undefined;
  readonly forwarders = new Set<TcpForwarder>();
  /** Released when the VM stops (e.g. holds of spawned processes still running). */
  readonly #onStop = new Set<() => void>();
  #unregister: () => void;
  #stopping: Promise<void> | undefined;
  #execServer: Server | undefined;
  #execPath: string | undefined;
  /** Guest egress (README "Network"); undefined for "nat" VMs and agents without the cap. */
  egress: Egress | undefined;

  constructor(
    readonly live: LiveVmPort,
    readonly agent: AgentPort,
    /** Guest devices of the attached volumes (/dev/vdb, …). */
    readonly volumeDevices: readonly string[] = [],
    /** Live host shares, attached after every resume (README "Mounts"). */
    readonly mounts: readonly RecordedMount[] = [],
    /** The workload's port in the guest (BuildOptions.guestPort): what vsockPath connects to. */
    readonly guestPort = 80,
  ) {
    this.#unregister = registerForCleanup(() => live.killSync());
    live.exited.then(
      (r) =>
        this.#markDead(r.error ?? new Error(r.expected ? "VM stopped" : "VMM process exited unexpectedly")),
      (err) => this.#markDead(err as Error),
    );
    agent.onLost((err) => {
      // The session died: if the VMM is gone too, exited will say so; treat the VM as failed either way.
      this.#markDead(err);
    });
  }

  /** Starts enforcing the network policy of this VM, or sets it (a bake VM handed to a pool). */
  startNetwork(n: NetworkOption): void {
    if (this.egress && n !== "nat") setVmNetwork(this, n);
    else this.egress ??= startEgress(this.agent, n, this.id);
  }

  #markDead(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.deathError = err;
    for (const release of this.#onStop) release();
    this.#onStop.clear();
  }

  /** True once stop() was called (release with restoreOnRelease, pool shutdown, idle eviction). */
  get stopping(): boolean {
    return this.#stopping !== undefined;
  }

  /** Map an agent error to the public error space. */
  async translate(err: unknown, what: string): Promise<Error> {
    if (this.#stopping) {
      return new SupermachineError(
        "SM_VM_RELEASED",
        `Cannot ${what}: this VM was stopped (released or its pool shut down).`,
        {
          cause: err ?? undefined,
        },
      );
    }
    const remote = (err as { remoteCode?: unknown } | null)?.remoteCode;
    const code = typeof remote === "string" ? remote : codeOf(err);
    if (code === "SM_AGENT_TIMEOUT" && !this.dead) {
      // out of service from now on, like a dead VM, although its VMM still runs
      const e = new SupermachineError(
        "SM_GUEST_UNRESPONSIVE",
        `The guest agent did not answer ${what} in time (${(err as Error).message}): the guest is wedged or overloaded (a fork bomb, say). This Vm is out of service: release it and the pool replaces it.`,
        { cause: err },
      );
      this.#markDead(e);
      return e;
    }
    if (codeOf(this.deathError) === "SM_GUEST_UNRESPONSIVE") {
      return new SupermachineError(
        "SM_GUEST_UNRESPONSIVE",
        `Cannot ${what}: this Vm stopped answering earlier. Release it; the pool replaces it.`,
        { cause: this.deathError },
      );
    }
    if (code === "SM_AGENT_LOST" || code === "SM_AGENT_PROTOCOL" || this.dead) {
      // Give the VMM exit a moment to be observed, so the message names the real cause.
      await Promise.race([this.live.exited.catch(() => undefined), new Promise((r) => setTimeout(r, 200))]);
      return new SupermachineError(
        "SM_GUEST_CRASHED",
        `The VM died during ${what}${this.deathError ? `: ${this.deathError.message}` : ""}. The pool replaces it; acquire a new Vm.`,
        { cause: err },
      );
    }
    if (code === "SM_AGENT_INVALID_ARGS") {
      // what core's own validation lets through and the protocol refuses (e.g. a request over the frame limit)
      return new SupermachineError("SM_INVALID_OPTIONS", `${what}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (code === "SM_AGENT_OUTPUT_LIMIT") {
      return new SupermachineError(
        "SM_OUTPUT_LIMIT",
        `${what}: the command wrote more than maxOutputBytes of stdout + stderr, so its process group was killed. Stream large output with vm.spawn(), or raise maxOutputBytes.`,
        { cause: err },
      );
    }
    if (code === "SM_FILE_TOO_LARGE") {
      return new SupermachineError("SM_FILE_TOO_LARGE", `${what}: file larger than 4 MiB`, { cause: err });
    }
    if (code && /^E[A-Z]+$/.test(code)) {
      const e = new SupermachineError(
        "SM_AGENT_ERROR",
        `${what} failed in the guest: ${code} ${(err as Error).message ?? ""}`.trim(),
        {
          cause: err,
          details: { agentCode: code },
        },
      );
      return e;
    }
    return err instanceof Error ? err : new Error(String(err));
  }

  /** Pool memoryMib/vcpus override, applied in the guest by every resume (limits.ts). */
  limits: RuntimeLimits | undefined;

  /** Guest mounts of volumes captured with the snapshot, mounted again by every resume (README "Volumes"). */
  volumeMounts: readonly VolumeMount[] = [];

  /** After a restore (or the bake VM's handoff): set clock + reseed RNG, then mount volumes. */
  async resume(): Promise<void> {
    const timeNs = BigInt(Date.now()) * 1_000_000n + BigInt(process.hrtime()[1] % 1_000_000);
    await this.agent.resume(timeNs, randomBytes(64));
    const l = this.limits;
    if (l) await applyLimits(this.agent, l.limits, l.maxVcpus, l.bootWorkMemoryMax);
    await mountVolumes(this.agent, this.volumeMounts);
    await this.attachMounts();
  }

  readonly #shares = new Map<string, { server: ShareServer; stream: Duplex }>();

  /** Attach every live host share: the agent mounts FUSE in the guest, a ShareServer answers on the host. */
  async attachMounts(): Promise<void> {
    for (const m of this.mounts) {
      if (this.#shares.has(m.guestTag)) continue;
      const st = await stat(m.hostPath).catch(() => undefined);
      if (!st?.isDirectory())
        throw new SupermachineError(
          "SM_MOUNT_INVALID",
          `Share ${JSON.stringify(m.guestTag)}: ${m.hostPath} ${st ? "is not a directory" : "does not exist"} any more. Recreate it, or rebuild the image with other mounts.`,
          { details: { tag: m.guestTag, hostPath: m.hostPath } },
        );
      let stream: Duplex;
      try {
        stream = await this.agent.fsAttach(m.guestTag, m.guestPath);
      } catch (err) {
        const code = (err as { remoteCode?: string }).remoteCode ?? codeOf(err);
        if (code === "SM_AGENT_LOST" || code === "SM_AGENT_PROTOCOL")
          throw await this.translate(err, "attach mounts");
        throw new SupermachineError(
          "SM_MOUNT_INVALID",
          `Attaching share ${JSON.stringify(m.guestTag)} (${m.hostPath}) in the guest failed: ${code ?? ""} ${(err as Error).message}. ${
            code === "ENODEV"
              ? "The image was baked without FUSE support: rebuild it with this `mounts` option."
              : ""
          }`.trim(),
          { cause: err, details: { tag: m.guestTag } },
        );
      }
      const server = new ShareServer({
        root: m.hostPath,
        policy: m.symlinks,
        tag: m.guestTag,
        cacheTtlMs: m.cacheTtlMs ?? 0,
      });
      this.#shares.set(m.guestTag, { server, stream });
      // serve() never throws on guest input; a local failure (e.g. the host dir vanished) ends the share,
      // and the guest then sees EIO for it (the agent answers for an orphaned share).
      server.serve(stream).catch(() => undefined);
    }
  }

  /** Detach every share (before a snapshot: a snapshot must never hold a live FUSE connection). */
  async detachMounts(): Promise<void> {
    for (const [tag, s] of this.#shares) {
      this.#shares.delete(tag);
      try {
        if (!this.dead) await this.agent.fsDetach(tag);
      } finally {
        s.stream.destroy();
        await s.server.close().catch(() => undefined);
      }
    }
  }

  #closeShares(): void {
    for (const s of this.#shares.values()) {
      s.stream.destroy();
      s.server.close().catch(() => undefined);
    }
    this.#shares.clear();
  }

  #vsock: TcpForwarder | undefined;

  /**
   * A Unix socket in the VM's runtime dir whose connections are forwarded to the workload's listener
   * on guestPort, each over its own agent tcp channel (like exposeTcp). Started on first access.
   */
  get vsockPath(): string {
    this.#vsock ??= startUnixForwarder(join(this.live.runtimeDir, "vsock.sock"), this.guestPort, (port) =>
      this.agent.tcpConnect(port),
    );
    return this.#vsock.localAddr;
  }

  /** Close the vsockPath listener and its connections; its socket file goes away (release, stop). */
  closeVsock(): void {
    const f = this.#vsock;
    this.#vsock = undefined;
    if (f) closeForwarder(f);
  }

  /** Run `fn` when the VM stops or dies (once); returns the function that cancels it. */
  onStop(fn: () => void): () => void {
    if (this.#stopping || this.dead) {
      fn();
      return () => {};
    }
    this.#onStop.add(fn);
    return () => this.#onStop.delete(fn);
  }

  get execPath(): string {
    if (this.#execPath) return this.#execPath;
    const path = join(this.live.runtimeDir, "exec.sock");
    this.#execPath = path;
    this.#execServer = serveExecSocket(path, (opts) => this.exec(opts));
    return path;
  }

  exec(options: ExecOptions): Promise<ExecOutput> {
    return execOn(this, options);
  }

  /** Stop the VM (idempotent). Volumes are unmounted cleanly by the agent's shutdown first. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      for (const f of this.forwarders) closeForwarder(f);
      this.forwarders.clear();
      this.closeVsock();
      for (const release of this.#onStop) release();
      this.#onStop.clear();
      this.egress?.close();
      this.#closeShares();
      this.#execServer?.close();
      if (this.volumeDevices.length > 0 && !this.dead) {
        // Clean guest shutdown (sync + unmount) so the volume file is consistent for the next VM: the
        // agent answers first, then powers off; wait for the VMM to exit on its own. The deadlines are
        // cleared as soon as the wait ends: a pending timer would hold a finished program open (issue 17).
        const asked = await withDeadline(
          this.agent.shutdown().then(
            () => true,
            () => false,
          ),
          3000,
          false,
        );
        if (asked)
          await withDeadline(
            this.live.exited.catch(() => undefined),
            10_000,
            undefined,
          );
      }
      this.agent.close();
      try {
        await this.live.stop();
      } finally {
        this.dead = true;
        this.#unregister();
      }
    })();
    return this.#stopping;
  }
}

/** `p`, or `fallback` after `ms`; the timer is cleared when `p` settles first. */
async function withDeadline<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = new Promise<T>((r) => {
      timer = setTimeout(() => r(fallback), ms);
    });
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function execOn(handle: VmHandle, options: ExecOptions): Promise<ExecOutput> {
  const o = validateExecOptions(options);
  if (handle.dead) throw await handle.translate(null, "exec");
  try {
    const r = await handle.agent.exec({
      argv: o.argv,
      env: o.env,
      cwd: o.cwd,
      stage: o.stage,
      timeoutMs: o.timeoutMs,
      chain: o.chain,
      tty: o.tty,
      cols: o.cols,
      rows: o.rows,
      maxOutputBytes: o.maxOutputBytes,
      // staged files may first take the agent up to its 60 s file-job deadline (share paths)
      ...(o.timeoutMs > 0
        ? {
            answerTimeoutMs: Math.min(
              MAX_TIMER_MS,
              o.timeoutMs + EXEC_ANSWER_GRACE_MS + (o.stage.length > 0 ? AGENT_FILE_JOB_MS : 0),
            ),
          }
        : {}),
    });
    return {
      stdout: r.stdout,
      stderr: r.stderr,
      exitCode: r.exitCode,
      timedOut: r.timedOut,
      signal: r.signal,
      peakRssKib: r.peakRssKib,
    };
  } catch (err) {
    const e = await handle.translate(err, "exec");
    if (codeOf(e) === "SM_AGENT_ERROR" && (e as SupermachineError).details?.agentCode === "ENOENT") {
      // cwd missing: report like a shell would rather than as an exception.
      return {
        stdout: Buffer.alloc(0),
        stderr: Buffer.from(`supermachine: ${(err as Error).message}\n`),
        exitCode: 127,
      };
    }
    throw e;
  }
}

/** JSON-lines exec server behind `vm.execPath` (see README "Escape hatches"). */
function serveExecSocket(path: string, exec: (o: ExecOptions) => Promise<ExecOutput>): Server {
  if (existsSync(path)) rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = "";
    let chain = Promise.resolve();
    sock.setEncoding("utf8");
    sock.on("error", () => undefined);
    sock.on("data", (chunk: string) => {
      buf += chunk;
      if (buf.length > 8 * 1024 * 1024) {
        sock.destroy();
        return;
      }
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
        if (!line.trim()) continue;
        chain = chain.then(async () => {
          let reply: Record<string, unknown>;
          try {
            const req = JSON.parse(line) as Record<string, unknown>;
            const { stdin: _ignored, ...opts } = req;
            const out = await exec(opts as unknown as ExecOptions);
            reply = {
              exitCode: out.exitCode,
              stdout: out.stdout.toString("base64"),
              stderr: out.stderr.toString("base64"),
              timedOut: out.timedOut ?? false,
            };
          } catch (err) {
            reply = { error: { code: codeOf(err) ?? "EIO", message: (err as Error).message } };
          }
          if (!sock.destroyed) sock.write(`${JSON.stringify(reply)}\n`);
        });
      }
    });
  });
  server.listen(path);
  server.unref();
  return server;
}

const EXEC_CHILD_TOKEN = Symbol("ExecChild");
/** Ends the hold of a spawned process (its exit, its VM's stop, or the release of its Vm). */
const childHolds = new WeakMap<ExecChild, () => void>();
let newExecChild: (child: AgentChild, handle: VmHandle) => ExecChild;

/**
 * A streaming process started with `vm.spawn()` (no public constructor). While it runs it keeps the
 * program alive, like a Node child process; it stops doing so at exit (or when its VM goes away).
 */
export class ExecChild {
  readonly #child: AgentChild;
  readonly #handle: VmHandle;
  #exit: Promise<ExecWaitResult> | undefined;
  #streams = new WeakSet<object>();

  private constructor(token: symbol, child: AgentChild, handle: VmHandle) {
    if (token !== EXEC_CHILD_TOKEN)
      throw new SupermachineError("SM_UNSUPPORTED", "ExecChild has no public constructor: use vm.spawn().");
    this.#child = child;
    this.#handle = handle;
    // Keep the program alive while the process runs: until wait() has seen its exit or the VM stops.
    const release = hold();
    const cancel = handle.onStop(release);
    this.#released = () => {
      cancel();
      release();
    };
    childHolds.set(this, this.#released);
  }

  readonly #released: () => void;

  static {
    newExecChild = (child, handle) => new ExecChild(EXEC_CHILD_TOKEN, child, handle);
  }

  /** Streams are created on first access; a no-op error listener keeps a VM loss from becoming an
   * uncaught 'error' event (async iteration and pipes still see the error). */
  #guardStream<T extends Readable | Writable>(s: T): T {
    if (!this.#streams.has(s)) {
      this.#streams.add(s);
      s.on("error", () => undefined);
    }
    return s;
  }

  /** Guest pid. */
  get pid(): number {
    return this.#child.pid;
  }
  /** Beyond: stdout as a Node Readable (also async-iterable), with backpressure. */
  get stdout(): Readable {
    return this.#guardStream(this.#child.stdout);
  }
  /** Beyond: stderr as a Node Readable (empty with tty). */
  get stderr(): Readable {
    return this.#guardStream(this.#child.stderr);
  }
  /** Beyond: stdin as a Node Writable, with backpressure; end() closes stdin. */
  get stdin(): Writable {
    return this.#guardStream(this.#child.stdin);
  }

  async #call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await whileHeld(fn);
    } catch (err) {
      throw await this.#handle.translate(err, what);
    }
  }

  /** Write to stdin (resolves when accepted under flow control). */
  writeStdin(bytes: Buffer | Uint8Array | string): Promise<void> {
    const data = toBuffer(bytes, "bytes");
    return this.#call("writeStdin", () => this.#child.writeStdin(data));
  }

  /** Close stdin (EOF for the process). */
  closeStdin(): Promise<void> {
    return this.#call("closeStdin", () => this.#child.closeStdin());
  }

  /** Up to maxBytes (default 65536, also for null) of stdout; an empty Buffer at EOF. */
  readStdout(maxBytes?: number | null): Promise<Buffer> {
    const n = optInt(maxBytes, "maxBytes", { min: 1 }) ?? 65536;
    return this.#call("readStdout", () => this.#child.readStdout(n));
  }

  /** Up to maxBytes (default 65536, also for null) of stderr; an empty Buffer at EOF. */
  readStderr(maxBytes?: number | null): Promise<Buffer> {
    const n = optInt(maxBytes, "maxBytes", { min: 1 }) ?? 65536;
    return this.#call("readStderr", () => this.#child.readStderr(n));
  }

  resize(cols: number, rows: number): Promise<void> {
    optInt(cols, "cols", { min: 1, max: 65535 });
    optInt(rows, "rows", { min: 1, max: 65535 });
    return this.#call("resize", () => this.#child.resize(cols, rows));
  }

  signal(signum: number): Promise<void> {
    optInt(signum, "signum", { min: 1, max: 64 });
    return this.#call("signal", () => this.#child.signal(signum));
  }

  /** Waits for exit; output nobody reads is discarded so the process never blocks on a full pipe. */
  wait(): Promise<ExecWaitResult> {
    this.#exit ??= this.#call("wait", async () => {
      const r = await this.#child.wait();
      return { exitCode: r.exitCode, timedOut: r.timedOut, peakRssKib: r.peakRssKib, signal: r.signal };
    });
    void this.#exit.then(this.#released, this.#released);
    return this.#exit;
  }
}

export interface VmOwner {
  /** Return the handle (called once per facade). */
  release(handle: VmHandle): Promise<void>;
  /** Capture a snapshot of a running handle into destDir; returns the new Image. */
  snapshot(handle: VmHandle, destDir: string): Promise<unknown>;
}

/**
 * Internal accessor for benches and tests of this repository (not part of the API): `vm[INTERNAL]()`
 * returns the pooled handle (agent session, backend VM) or undefined after release.
 */
export const INTERNAL: unique symbol = Symbol.for("supermachine.core.internal") as never;

const VM_TOKEN = Symbol("Vm");
let newVm: (handle: VmHandle, owner: VmOwner) => Vm;
/**
 * What keeps what reachable: a Vm its public Pool (a pool is not collected while one of its Vms is in
 * use), an ExecChild or TcpForwarder its Vm (a Vm is not returned while one is still held).
 */
const anchors = new WeakMap<object, object>();

/**
 * A Vm dropped without release() (it became unreachable) goes back to its pool. The held value is the
 * pooled handle and its owner, never the Vm itself (or it would stay reachable).
 */
const droppedVms = new FinalizationRegistry<{ handle: VmHandle; owner: VmOwner }>(({ handle, owner }) => {
  owner.release(handle).catch(() => undefined);
});

/** Keeps `o` reachable until a promise settles: `.finally(() => reachable(this))`. */
function reachable(_o: object): void {}

/** A Vm facade over a pooled handle (the pool's acquire). */
export function createVm(handle: VmHandle, owner: VmOwner): Vm {
  return newVm(handle, owner);
}

/** Keep `keep` (the public Pool) reachable for as long as the Vm is. */
export function anchorVm(vm: Vm, keep: object): void {
  anchors.set(vm, keep);
}

/**
 * A VM checked out of a pool (from `pool.acquire()`; no public constructor). `release()` returns it;
 * a Vm that becomes unreachable without a release is returned to its pool too.
 */
export class Vm implements AsyncDisposable {
  #handle: VmHandle | undefined;
  #released: Promise<void> | undefined;
  /** Processes spawned through this Vm: a release ends their hold on the event loop. */
  readonly #children = new Set<ExecChild>();
  readonly #owner: VmOwner;

  private constructor(token: symbol, handle: VmHandle, owner: VmOwner) {
    if (token !== VM_TOKEN)
      throw new SupermachineError("SM_UNSUPPORTED", "Vm has no public constructor: use pool.acquire().");
    this.#handle = handle;
    this.#owner = owner;
    droppedVms.register(this, { handle, owner }, this);
  }

  static {
    newVm = (handle, owner) => new Vm(VM_TOKEN, handle, owner);
  }

  /** Run a user operation: the event loop and this Vm stay alive until it settles. */
  #held<T>(fn: () => Promise<T>): Promise<T> {
    return whileHeld(fn).finally(() => reachable(this));
  }

  #live(what: string): VmHandle {
    const h = this.#handle;
    if (!h || this.#released) {
      throw new SupermachineError(
        "SM_VM_RELEASED",
        `Cannot ${what}: this Vm was released. Acquire a new one from the pool.`,
      );
    }
    return h;
  }

  #guard<T>(what: string, fn: (h: VmHandle) => Promise<T>): Promise<T> {
    return this.#held(async () => {
      const h = this.#live(what);
      if (h.dead) throw await h.translate(null, what);
      try {
        return await fn(h);
      } catch (err) {
        if (err instanceof SupermachineError) throw err;
        throw await h.translate(err, what);
      }
    });
  }

  /** Run to completion and collect the output. */
  exec(options: ExecOptions): Promise<ExecOutput> {
    try {
      const h = this.#live("exec");
      return this.#held(() => execOn(h, options));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Start a streaming process; timeoutMs is ignored. */
  spawn(options: ExecOptions): Promise<ExecChild> {
    return this.#guard("spawn", async (h) => {
      const o = validateExecOptions(options);
      const child = await h.agent.spawn({
        argv: o.argv,
        env: o.env,
        cwd: o.cwd,
        stage: o.stage,
        chain: o.chain,
        tty: o.tty,
        cols: o.cols,
        rows: o.rows,
        answerTimeoutMs: RPC_ANSWER_TIMEOUT_MS,
      });
      const c = newExecChild(child, h);
      this.#children.add(c);
      anchors.set(c, this);
      return c;
    });
  }

  /** Write a file (≤ 4 MiB) in the guest, mode 0644, parent directories created. */
  writeFile(path: string, bytes: Buffer | Uint8Array | string): Promise<void> {
    return this.#guard("writeFile", async (h) => {
      if (typeof path !== "string" || !path.startsWith("/")) {
        throw new SupermachineError(
          "SM_INVALID_OPTIONS",
          "Invalid option `path`: must be an absolute guest path",
          {
            details: { field: "path" },
          },
        );
      }
      const data = toBuffer(bytes, "bytes");
      if (data.length > MAX_FILE_BYTES) {
        throw new SupermachineError(
          "SM_FILE_TOO_LARGE",
          `writeFile(${path}): ${data.length} bytes is over the 4 MiB cap; write it in pieces (e.g. several files joined by an exec of cat), stream it through spawn stdin (sh -c 'cat > path'), or use a volume.`,
        );
      }
      await h.agent.writeFile(path, data, 0o644, RPC_ANSWER_TIMEOUT_MS);
    });
  }

  /** Read a file (≤ 4 MiB) from the guest. */
  readFile(path: string): Promise<Buffer> {
    return this.#guard("readFile", async (h) => {
      if (typeof path !== "string" || !path.startsWith("/")) {
        throw new SupermachineError(
          "SM_INVALID_OPTIONS",
          "Invalid option `path`: must be an absolute guest path",
          {
            details: { field: "path" },
          },
        );
      }
      try {
        return (await h.agent.readFile(path, RPC_ANSWER_TIMEOUT_MS)).data;
      } catch (err) {
        const remote = (err as { remoteCode?: unknown }).remoteCode;
        if (codeOf(err) === "SM_FILE_TOO_LARGE" || remote === "SM_FILE_TOO_LARGE") {
          throw new SupermachineError(
            "SM_FILE_TOO_LARGE",
            `readFile(${path}): the file is over the 4 MiB cap; use exec/spawn (e.g. cat) to stream it.`,
            {
              cause: err,
            },
          );
        }
        throw err;
      }
    });
  }

  /** Pause, capture into destDir, resume; the Vm stays usable. Resolves with an Image of the snapshot. */
  snapshot(destDir: string): Promise<import("./image").Image> {
    return this.#guard("snapshot", async (h) => {
      if (typeof destDir !== "string" || destDir.length === 0) {
        throw new SupermachineError(
          "SM_INVALID_OPTIONS",
          "Invalid option `destDir`: expected a directory path",
          {
            details: { field: "destDir" },
          },
        );
      }
      return (await this.#owner.snapshot(h, destDir)) as import("./image").Image;
    });
  }

  /** Signal the image's workload (the CMD started at boot/resume), not an exec'd process. */
  workloadSignal(signum: number): Promise<void> {
    return this.#guard("workloadSignal", async (h) => {
      optInt(signum, "signum", { min: 1, max: 64 });
      if (signum === undefined)
        throw new SupermachineError("SM_INVALID_OPTIONS", "Invalid option `signum`: is required");
      await h.agent.workloadSignal(signum);
    });
  }

  /** Listen on 127.0.0.1:hostPort (0 = free port) and forward each connection to guestPort in the guest. */
  exposeTcp(hostPort: number, guestPort: number): Promise<TcpForwarder> {
    return this.#guard("exposeTcp", async (h) => {
      optInt(hostPort, "hostPort", { min: 0, max: 65535 });
      optInt(guestPort, "guestPort", { min: 1, max: 65535 });
      if (hostPort === undefined || guestPort === undefined) {
        throw new SupermachineError(
          "SM_INVALID_OPTIONS",
          "Invalid option `guestPort`: hostPort and guestPort are required",
        );
      }
      const fwd = await startForwarder(hostPort, guestPort, (port) => h.agent.tcpConnect(port));
      h.forwarders.add(fwd);
      anchors.set(fwd, this);
      return fwd;
    });
  }

  /**
   * Beyond: changes this VM's network policy (README "Network") for new connections and DNS
   * queries; open connections stay. SM_INVALID_OPTIONS for a malformed policy; "nat" cannot be
   * switched on or off at run time.
   */
  setNetwork(policy: NetworkMode): void {
    setVmNetwork(this.#live("set the network policy"), policy);
  }

  /** Return the VM to its pool; idempotent. */
  release(): Promise<void> {
    if (!this.#released) {
      const h = this.#handle;
      this.#handle = undefined;
      h?.closeVsock();
      droppedVms.unregister(this);
      for (const c of this.#children) childHolds.get(c)?.();
      this.#children.clear();
      anchors.delete(this);
      this.#released = h ? this.#held(() => this.#owner.release(h)) : Promise.resolve();
    }
    return this.#released;
  }

  /** Same as release(). */
  dispose(): Promise<void> {
    return this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  /** @internal see INTERNAL */
  [INTERNAL](): VmHandle | undefined {
    return this.#released ? undefined : this.#handle;
  }

  /**
   * Host path of a Unix stream socket (in the VM's runtime dir) that reaches the workload's listener on
   * guestPort in the guest: each connection is forwarded over its own agent channel, like exposeTcp.
   * Started on first access; removed on release.
   */
  get vsockPath(): string {
    return this.#live("read vsockPath").vsockPath;
  }

  /**
   * Beyond: host path of the VM's agent transport socket (QEMU virtio-serial chardev, Unix stream). It
   * speaks the agent protocol (packages/agent-protocol/SPEC.md). Core holds the single session while the
   * Vm is in use: a client connecting here starts a new session (hello) and ends core's — use it for
   * debugging or a fully custom client only. (What `vsockPath` meant before 0.x; see README.)
   */
  get agentSocketPath(): string {
    return this.#live("read agentSocketPath").live.agentSocketPath;
  }

  /**
   * Host path of a Unix socket served by core for bring-your-own exec clients, speaking JSON lines:
   * each request line is an ExecOptions object (`stageFiles` values base64 are not supported; use
   * strings), each reply line `{exitCode, stdout: base64, stderr: base64, timedOut}` or `{error:{code,message}}`.
   * Started on first access; closed on release.
   */
  get execPath(): string {
    return this.#live("read execPath").execPath;
  }
}

/** The warmup facade: exec only, and only until the warmup callback returns. */
export class WarmupVmImpl implements WarmupVm {
  #open = true;
  constructor(private readonly handle: VmHandle) {}

  exec(options: ExecOptions): Promise<ExecOutput> {
    if (!this.#open) {
      return Promise.reject(
        new SupermachineError(
          "SM_WARMUP_OVER",
          "The warmup is over: a WarmupVm cannot be used after the warmup callback returned.",
        ),
      );
    }
    return execOn(this.handle, options);
  }

  get vsockPath(): string {
    throw new SupermachineError("SM_UNSUPPORTED", "vsockPath is not available on the WarmupVm.");
  }

  get execPath(): string {
    throw new SupermachineError("SM_UNSUPPORTED", "execPath is not available on the WarmupVm.");
  }

  get agentSocketPath(): string {
    throw new SupermachineError("SM_UNSUPPORTED", "agentSocketPath is not available on the WarmupVm.");
  }

  /** @internal */
  close(): void {
    this.#open = false;
  }
}
