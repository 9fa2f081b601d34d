/**
 * AgentChild: a process started with `spawn` (SPEC §6.2) — its stdio as streams or pull-style reads,
 * process control through the client, and wait().
 */
import type { Readable, Writable } from "node:stream";
import type { Channel, InboundQueue } from "../channel";
import { AgentError } from "../errors";
import { channelWritable } from "../streams";
import type { AgentClient } from "./agent-client";
import type { CallOptions, ExitEvent, ExitInfo } from "./types";

/** A process started with `spawn`: streams, pull-style reads, stdin, wait(). */
export class AgentChild {
  readonly pid: number;
  private exitInfo: ExitInfo | null = null;
  private failure: Error | null = null;
  private waiters: Array<{ resolve: (e: ExitInfo) => void; reject: (e: Error) => void }> = [];
  private _stdin: Writable | null = null;

  /** @internal */
  constructor(
    private readonly client: AgentClient,
    pid: number,
    private readonly qOut: InboundQueue,
    private readonly qErr: InboundQueue,
    private readonly stdinChannel: () => Channel | undefined,
    private readonly hwm: number,
  ) {
    this.pid = pid;
  }

  /** stdout (with tty: the terminal output) as a Readable; backpressure holds the guest process. */
  get stdout(): Readable {
    return this.qOut.toReadable();
  }
  /** stderr as a Readable (ends at once with tty). */
  get stderr(): Readable {
    return this.qErr.toReadable();
  }
  /** stdin as a Writable; `end()` closes the process's stdin. */
  get stdin(): Writable {
    if (this._stdin === null) this._stdin = channelWritable(this.stdinChannel, this.hwm, "stdin is closed");
    return this._stdin;
  }

  /** Up to maxBytes of stdout; an empty Buffer at EOF. */
  readStdout(maxBytes = 65_536): Promise<Buffer> {
    return this.qOut.read(maxBytes);
  }
  /** Up to maxBytes of stderr; an empty Buffer at EOF. */
  readStderr(maxBytes = 65_536): Promise<Buffer> {
    return this.qErr.read(maxBytes);
  }
  /** Writes to stdin; resolves once the bytes are sent within the agent's credit (backpressure). */
  writeStdin(data: Uint8Array | string): Promise<void> {
    const ch = this.stdinChannel();
    if (ch === undefined) return Promise.reject(new AgentError("SM_AGENT_LOST", "stdin is closed"));
    return ch.write(
      typeof data === "string" ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.length),
    );
  }
  /** Closes stdin (eof on the stdin channel) after pending writes. */
  async closeStdin(): Promise<void> {
    const ch = this.stdinChannel();
    if (ch !== undefined) await ch.end();
  }
  resize(cols: number, rows: number, options?: CallOptions): Promise<void> {
    return this.client.resize(this.pid, cols, rows, options);
  }
  signal(signum: number, options?: CallOptions): Promise<void> {
    return this.client.signal(this.pid, signum, options);
  }
  /** The exit information once the process has exited, else null. */
  get exit(): ExitInfo | null {
    return this.exitInfo;
  }
  /** Waits for exit. Unread stdout/stderr is discarded (unless consumed as Readable streams). */
  wait(): Promise<ExitInfo> {
    this.qOut.drain();
    this.qErr.drain();
    if (this.exitInfo !== null) return Promise.resolve(this.exitInfo);
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** @internal */
  _exited(e: ExitEvent): void {
    this.exitInfo = {
      exitCode: e.exitCode,
      signal: e.signal,
      timedOut: e.timedOut,
      peakRssKib: e.peakRssKib,
    };
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) x.resolve(this.exitInfo);
  }
  /** @internal */
  _failed(err: Error): void {
    this.failure = err;
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) x.reject(err);
  }
}
