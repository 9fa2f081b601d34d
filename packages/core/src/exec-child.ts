/**
 * ExecChild: the public handle of a process started with `vm.spawn()`, over the agent's child channel.
 */
import type { Readable, Writable } from "node:stream";
import { SupermachineError } from "./errors";
import { hold, whileHeld } from "./keepalive";
import type { AgentChild } from "./ports";
import type { ExecWaitResult } from "./types";
import { optInt, toBuffer } from "./validate";
import type { VmHandle } from "./vm-handle";

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

/** An ExecChild for a process just spawned on `handle` (vm.spawn). */
export function createExecChild(child: AgentChild, handle: VmHandle): ExecChild {
  return newExecChild(child, handle);
}

/** End the hold of a spawned process on the event loop (its Vm was released). */
export function releaseChildHold(c: ExecChild): void {
  childHolds.get(c)?.();
}
