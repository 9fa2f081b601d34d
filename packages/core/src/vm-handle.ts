/**
 * VmHandle: the pooled resource — one running VMM and its agent session. It owns what lives as long as
 * the VM: host shares, forwarders, the vsockPath and execPath listeners, the guest egress, and the
 * stop sequence. Every acquire wraps it in a fresh Vm facade (vm.ts).
 */
import { randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import type { Server } from "node:net";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { registerForCleanup } from "./cleanup";
import { codeOf, SupermachineError } from "./errors";
import { execOn } from "./exec";
import { serveExecSocket } from "./exec-socket";
import type { RecordedMount } from "./fingerprint";
import { closeForwarder, startUnixForwarder, type TcpForwarder } from "./forwarder";
import { applyLimits, type RuntimeLimits } from "./limits";
import type { Egress } from "./network/egress";
import type { NetworkOption } from "./network/policy";
import { setVmNetwork, startEgress } from "./network/vm-network";
import type { AgentPort, LiveVmPort } from "./ports";
import { ShareServer } from "./share/server";
import type { VolumeMount } from "./snapshot";
import type { ExecOptions, ExecOutput } from "./types";
import { mountVolumes } from "./volume-guest";

let nextHandleId = 1;

/** The pooled resource: one live VM and its agent session. */
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
