/**
 * Vm: the handle a pool hands out. A `VmHandle` (vm-handle.ts) owns one running VMM + its agent
 * session (the pooled resource); every acquire wraps it in a fresh `Vm` facade, so a released facade
 * stays released even when the handle is reused (restoreOnRelease: false).
 */
import { codeOf, SupermachineError } from "./errors";
import { execOn, RPC_ANSWER_TIMEOUT_MS } from "./exec";
import { createExecChild, type ExecChild, releaseChildHold } from "./exec-child";
import { startForwarder, type TcpForwarder } from "./forwarder";
import type { Image } from "./image";
import { whileHeld } from "./keepalive";
import { setVmNetwork } from "./network/vm-network";
import type { ExecOptions, ExecOutput, NetworkMode } from "./types";
import { MAX_FILE_BYTES, optInt, toBuffer, validateExecOptions } from "./validate";
import type { VmHandle } from "./vm-handle";

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
      const c = createExecChild(child, h);
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
  snapshot(destDir: string): Promise<Image> {
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
      return (await this.#owner.snapshot(h, destDir)) as Image;
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
      for (const c of this.#children) releaseChildHold(c);
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
