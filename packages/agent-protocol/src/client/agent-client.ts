/**
 * AgentClient: the host side of the agent protocol over any Node Duplex (SPEC.md). This file is the
 * public class and its op wrappers (SPEC §6): argument checks, channel setup and result shaping.
 * The session state machine is ./session, the request table ./rpc, stream views ../streams.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { MAX_TIMER_MS } from "@supermachine/base";
import type { CborMap } from "../cbor";
import { InboundQueue, type InboundSink } from "../channel";
import {
  DEFAULT_WINDOW,
  EGRESS_DNS_ANSWER_MAX,
  FILE_MAX,
  HELLO_RESEND_MS,
  HELLO_TIMEOUT_MS,
  MAX_FRAME,
  MAX_WINDOW,
  MIN_MAX_FRAME,
  MIN_WINDOW,
  UINT32_MAX,
} from "../constants";
import { AgentError } from "../errors";
import { channelDuplex } from "../streams";
import { VERSION } from "../version";
import { checkPath, checkRange, checkShareTag, invalid, processArgs } from "./args";
import { AgentChild } from "./child";
import { Session } from "./session";
import type {
  AgentClientEvents,
  AgentClientOptions,
  AgentClientState,
  AgentHello,
  AgentStats,
  CallOptions,
  ExecResult,
  ExecSpec,
  FsAttachSpec,
  ProcessSpec,
  ResumeSpec,
  WriteFileOptions,
} from "./types";

const KNOWN_OPTIONS = new Set([
  "maxFrame",
  "window",
  "helloTimeoutMs",
  "helloResendMs",
  "hostVersion",
  "streamHighWaterMark",
]);

/** Host side of the agent protocol over one transport. */
export class AgentClient extends EventEmitter<AgentClientEvents> {
  private readonly session: Session;
  private readonly hwm: number;

  constructor(transport: Duplex, options: AgentClientOptions = {}) {
    super();
    for (const k of Object.keys(options))
      if (!KNOWN_OPTIONS.has(k)) throw invalid(`unknown AgentClient option "${k}"`);
    checkRange("maxFrame", options.maxFrame, MIN_MAX_FRAME, MAX_FRAME);
    checkRange("window", options.window, MIN_WINDOW, MAX_WINDOW);
    checkRange("helloTimeoutMs", options.helloTimeoutMs, 1, MAX_TIMER_MS);
    checkRange("helloResendMs", options.helloResendMs, 1, MAX_TIMER_MS);
    this.hwm = options.streamHighWaterMark ?? 65_536;
    this.session = new Session(
      transport,
      {
        maxFrame: options.maxFrame ?? MAX_FRAME,
        window: options.window ?? DEFAULT_WINDOW,
        helloTimeoutMs: options.helloTimeoutMs ?? HELLO_TIMEOUT_MS,
        helloResendMs: options.helloResendMs ?? HELLO_RESEND_MS,
        hostVersion: options.hostVersion ?? VERSION,
      },
      this,
    );
  }

  // ---- state ----

  get state(): AgentClientState {
    return this.session.state;
  }
  /** The agent's hello answer, once connected. */
  get hello(): AgentHello | null {
    return this.session.hello;
  }
  /** Whether the agent reported `ready` (in hello or as an event). */
  get ready(): boolean {
    return this.session.ready;
  }
  /** The port the agent reported in LISTEN state, if any. */
  get listeningPort(): number | null {
    return this.session.listening;
  }
  /** Requests awaiting an answer (abandoned ones included). */
  get pendingRequests(): number {
    return this.session.rpc.size;
  }
  /** Open channels. */
  get openChannels(): number {
    return this.session.channels.size;
  }
  /**
   * Bytes received on channels and not yet consumed by their readers (SPEC §8.4 bounds this by
   * `window` per channel). A partially received frame (at most maxFrame) is not included.
   */
  get bufferedBytes(): number {
    return this.session.bufferedBytes;
  }

  /** Performs the handshake (idempotent: later calls return the same promise). */
  connect(options: CallOptions = {}): Promise<AgentHello> {
    return this.session.connect(options);
  }

  /** Closes the session and the transport; pending calls reject with SM_AGENT_LOST. Idempotent. */
  close(): void {
    this.session.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- operations (SPEC §6) ----

  /** Sends any request (for ops newer than this client); resolves with the raw result map. */
  async request(op: string, args: Record<string, unknown> = {}, options?: CallOptions): Promise<CborMap> {
    await this.session.ensureConnected();
    return this.session.rpc.call(op, args, options);
  }

  /** Round trip with no work in the guest. */
  async ping(options?: CallOptions): Promise<void> {
    await this.session.ensureConnected();
    await this.session.rpc.call("ping", {}, options);
  }

  /** Runs a command to completion and collects its output (SPEC §6.1). */
  async exec(spec: ExecSpec, options?: CallOptions): Promise<ExecResult> {
    const args = processArgs(spec);
    checkRange("timeoutMs", spec.timeoutMs, 0, Number.MAX_SAFE_INTEGER);
    checkRange("maxOutputBytes", spec.maxOutputBytes, 0, Number.MAX_SAFE_INTEGER);
    const maxOutput = spec.maxOutputBytes ?? Number.POSITIVE_INFINITY;
    await this.session.ensureConnected();
    const tty = spec.tty === true;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const chOut = this.session.allocChannel();
    const chErr = tty ? undefined : this.session.allocChannel();
    let discard = false;
    let collected = 0;
    const overLimit = new AbortController();
    const collect = (chunks: Buffer[], id: number): InboundSink => ({
      data: (b) => {
        if (!discard) {
          collected += b.length;
          if (collected > maxOutput) {
            overLimit.abort(
              new AgentError(
                "SM_AGENT_OUTPUT_LIMIT",
                `exec output exceeded maxOutputBytes (${maxOutput}); the process group was killed`,
              ),
            );
          } else chunks.push(b);
        }
        this.session.channels.get(id)?.consumed(b.length);
      },
      eof: () => {},
      error: () => {},
    });
    const removeChannels = () => {
      this.session.channels.get(chOut)?.remove();
      if (chErr !== undefined) this.session.channels.get(chErr)?.remove();
    };
    // only pay for a combined signal when an output cap is set
    const signal =
      spec.maxOutputBytes === undefined
        ? options?.signal
        : options?.signal === undefined
          ? overLimit.signal
          : AbortSignal.any([options.signal, overLimit.signal]);
    const result = await this.session.rpc.call(
      "exec",
      { ...args, timeoutMs: spec.timeoutMs ?? 0, chOut, chErr },
      { timeoutMs: options?.timeoutMs, signal },
      {
        beforeSend: () => {
          this.session.openChannel(chOut, false, true, collect(out, chOut));
          if (chErr !== undefined) this.session.openChannel(chErr, false, true, collect(err, chErr));
        },
        // cancel in the guest: close on chOut kills the process group (SPEC §6.1); the channels
        // stay registered (output in flight is discarded) until the res removes them
        onAbandon: () => {
          discard = true;
          out.length = 0;
          err.length = 0;
          this.session.channels.get(chOut)?.abort();
        },
        onError: removeChannels,
        onLateResult: removeChannels,
      },
    );
    removeChannels();
    const stdoutTail = result.stdout as Buffer;
    const stderrTail = result.stderr as Buffer;
    if (collected + stdoutTail.length + stderrTail.length > maxOutput) {
      throw new AgentError("SM_AGENT_OUTPUT_LIMIT", `exec output exceeded maxOutputBytes (${maxOutput})`);
    }
    out.push(stdoutTail);
    err.push(stderrTail);
    return {
      exitCode: result.exitCode as number,
      signal: result.signal as number | null,
      timedOut: result.timedOut as boolean,
      peakRssKib: result.peakRssKib as number,
      stdout: Buffer.concat(out),
      stderr: Buffer.concat(err),
    };
  }

  /** Starts a streaming process (SPEC §6.2). */
  async spawn(spec: ProcessSpec, options?: CallOptions): Promise<AgentChild> {
    const args = processArgs(spec);
    await this.session.ensureConnected();
    const tty = spec.tty === true;
    const chOut = this.session.allocChannel();
    const chErr = tty ? undefined : this.session.allocChannel();
    const chIn = this.session.allocChannel();
    const qOut = new InboundQueue(() => this.session.channels.get(chOut), this.hwm);
    const qErr = new InboundQueue(
      () => (chErr === undefined ? undefined : this.session.channels.get(chErr)),
      this.hwm,
    );
    if (tty) qErr.eof();
    const drop = () => {
      this.session.channels.get(chOut)?.remove();
      if (chErr !== undefined) this.session.channels.get(chErr)?.remove();
      this.session.channels.get(chIn)?.remove();
    };
    let child: AgentChild | null = null;
    await this.session.rpc.call("spawn", { ...args, chOut, chErr, chIn }, options, {
      // registered synchronously: the exit event may be in the same chunk as the res
      onResult: (r) => {
        const pid = r.pid as number;
        child = new AgentChild(this, pid, qOut, qErr, () => this.session.channels.get(chIn), this.hwm);
        this.session.children.set(pid, child);
      },
      beforeSend: () => {
        this.session.openChannel(chOut, false, true, qOut);
        if (chErr !== undefined) this.session.openChannel(chErr, false, true, qErr);
        this.session.openChannel(chIn, true, false);
      },
      onError: drop,
      onLateResult: (r) => {
        // nobody wants this process any more: kill it and close its channels
        this.session.rpc.call("signal", { pid: r.pid, signum: 9 }, undefined).catch(() => {});
        for (const id of [chOut, chErr, chIn]) if (id !== undefined) this.session.channels.get(id)?.abort();
      },
    });
    return child!;
  }

  /** Sends a signal to a spawned process. */
  async signal(pid: number, signum: number, options?: CallOptions): Promise<void> {
    checkRange("pid", pid, 1, UINT32_MAX);
    checkRange("signum", signum, 1, 64);
    await this.session.ensureConnected();
    await this.session.rpc.call("signal", { pid, signum }, options);
  }

  /** Changes the pty size of a spawned tty process. */
  async resize(pid: number, cols: number, rows: number, options?: CallOptions): Promise<void> {
    checkRange("pid", pid, 1, UINT32_MAX);
    checkRange("cols", cols, 1, 65535);
    checkRange("rows", rows, 1, 65535);
    await this.session.ensureConnected();
    await this.session.rpc.call("resize", { pid, cols, rows }, options);
  }

  /** Closes a spawned process's stdin by pid (the child's closeStdin() does it in-band). */
  async closeStdin(pid: number, options?: CallOptions): Promise<void> {
    checkRange("pid", pid, 1, UINT32_MAX);
    await this.session.ensureConnected();
    await this.session.rpc.call("close-stdin", { pid }, options);
  }

  /** Writes a file in the guest (at most 4 MiB; SM_FILE_TOO_LARGE before sending otherwise). */
  async writeFile(path: string, data: Uint8Array, options: WriteFileOptions = {}): Promise<void> {
    checkPath(path);
    if (!(data instanceof Uint8Array)) throw invalid("writeFile data must be a Buffer or Uint8Array");
    const limit = Math.min(FILE_MAX, (this.session.hello?.maxFrame ?? MAX_FRAME) - 8192);
    if (data.length > limit) {
      throw new AgentError(
        "SM_FILE_TOO_LARGE",
        `writeFile ${path}: ${data.length} bytes exceeds the ${limit}-byte limit; split the file or use exec with stdin`,
      );
    }
    checkRange("mode", options.mode, 0, 0o7777);
    await this.session.ensureConnected();
    await this.session.rpc.call(
      "write-file",
      { path, data, mode: options.mode ?? 0o644, mkdirs: options.mkdirs ?? true },
      options,
    );
  }

  /** Reads a file from the guest (at most 4 MiB). */
  async readFile(path: string, options?: CallOptions): Promise<{ data: Buffer; mode: number }> {
    checkPath(path);
    await this.session.ensureConnected();
    const r = await this.session.rpc.call("read-file", { path }, options);
    return { data: Buffer.from(r.data as Buffer), mode: r.mode as number };
  }

  /** Signals the image's workload process. */
  async workloadSignal(signum: number, options?: CallOptions): Promise<void> {
    checkRange("signum", signum, 1, 64);
    await this.session.ensureConnected();
    await this.session.rpc.call("workload-signal", { signum }, options);
  }

  /** Opens a TCP connection to 127.0.0.1:port inside the guest, as a Duplex (SPEC §6.3). */
  async tcpConnect(port: number, options?: CallOptions): Promise<Duplex> {
    checkRange("port", port, 1, 65535);
    await this.session.ensureConnected();
    return this.openDuplexChannel("tcp-connect", { port }, options);
  }

  /**
   * Accepts a guest connect announced by a `dial` event (SPEC §6.5): the guest's socket is
   * connected and bridged to the returned Duplex. Rejects (ENOENT) when the process is gone.
   */
  async dialAccept(id: number, options?: CallOptions): Promise<Duplex> {
    checkRange("id", id, 1, UINT32_MAX);
    return this.openDuplexChannel("dial-answer", { id }, options);
  }

  /** Refuses a guest connect (SPEC §6.5): its connect(2) fails with that errno (e.g. "ECONNREFUSED"). */
  async dialRefuse(id: number, error: string, options?: CallOptions): Promise<void> {
    checkRange("id", id, 1, UINT32_MAX);
    await this.session.rpc.call("dial-answer", { id, error }, options);
  }

  /** Answers a `dns` event with a complete DNS message (SPEC §6.5). */
  async dnsAnswer(id: number, answer: Buffer, options?: CallOptions): Promise<void> {
    checkRange("id", id, 1, UINT32_MAX);
    if (answer.length < 12 || answer.length > EGRESS_DNS_ANSWER_MAX)
      throw invalid("dns answer must be 12..4096 bytes");
    await this.session.rpc.call("dns-answer", { id, a: answer }, options);
  }

  /**
   * Attaches a live host share (SPEC §6.4): the agent mounts a FUSE file system at
   * `/run/supermachine/shares/<tag>` (and bind-mounts it at `path` if given) and relays the raw
   * FUSE protocol over the returned Duplex: readable = FUSE requests (fuse_in_header + body,
   * concatenated), writable = FUSE replies/notifications (fuse_out_header + body). The caller is
   * the FUSE server. Destroying the Duplex (or losing the session) orphans the share: the guest
   * then gets EIO until `fsDetach(tag)`. Agent errors: EEXIST (tag attached), EBUSY (16 shares),
   * ENODEV (no fuse module in the image); as SM_AGENT_REMOTE with `remoteCode`.
   */
  async fsAttach(spec: FsAttachSpec, options?: CallOptions): Promise<Duplex> {
    if (typeof spec !== "object" || spec === null) throw invalid("fsAttach needs { tag, path? }");
    checkShareTag(spec.tag);
    if (spec.path !== undefined && spec.path !== null) checkPath(spec.path);
    await this.session.ensureConnected();
    const args: Record<string, unknown> = { tag: spec.tag };
    if (spec.path !== undefined && spec.path !== null) args.path = spec.path;
    return this.openDuplexChannel("fs-attach", args, options);
  }

  /** Detaches a share (SPEC §6.4): unmounts it everywhere in the guest and closes its channel. ENOENT if unknown. */
  async fsDetach(tag: string, options?: CallOptions): Promise<void> {
    checkShareTag(tag);
    await this.session.ensureConnected();
    await this.session.rpc.call("fs-detach", { tag }, options);
  }

  /** Sends an op that opens one bidirectional channel `ch` on success and wraps it as a Duplex. */
  private async openDuplexChannel(
    op: string,
    args: Record<string, unknown>,
    options: CallOptions | undefined,
  ): Promise<Duplex> {
    const chId = this.session.allocChannel();
    const q = new InboundQueue(() => this.session.channels.get(chId), this.hwm);
    await this.session.rpc.call(op, { ...args, ch: chId }, options, {
      beforeSend: () => {
        this.session.openChannel(chId, true, true, q);
      },
      onError: () => this.session.channels.get(chId)?.remove(),
      onLateResult: () => this.session.channels.get(chId)?.abort(),
    });
    return channelDuplex(q, () => this.session.channels.get(chId), this.hwm);
  }

  /** After a restore: sets the guest clock and reseeds its RNG (SPEC §6.3). */
  async resume(spec: ResumeSpec = {}, options?: CallOptions): Promise<void> {
    const timeNs = spec.timeNs ?? BigInt(Date.now()) * 1_000_000n;
    const entropy = spec.entropy ?? randomBytes(64);
    if (typeof timeNs !== "bigint" || timeNs < 0n)
      throw invalid("resume timeNs must be a non-negative bigint");
    if (entropy.length < 32 || entropy.length > 512) throw invalid("resume entropy must be 32..512 bytes");
    await this.session.ensureConnected();
    await this.session.rpc.call("resume", { timeNs, entropy }, options);
  }

  /** Guest memory/uptime/load figures. */
  async stats(options?: CallOptions): Promise<AgentStats> {
    await this.session.ensureConnected();
    const r = await this.session.rpc.call("stats", {}, options);
    return {
      memTotalKib: r.memTotalKib as number,
      memAvailKib: r.memAvailKib as number,
      uptimeMs: r.uptimeMs as number,
      loadAvg1Milli: r.loadAvg1Milli as number,
    };
  }

  /** Asks the agent to power the guest off; the following transport loss closes the client normally. */
  async shutdown(options?: CallOptions): Promise<void> {
    await this.session.ensureConnected();
    this.session.shuttingDown = true;
    try {
      await this.session.rpc.call("shutdown", {}, options);
    } catch (e) {
      this.session.shuttingDown = false;
      throw e;
    }
  }

  /** @internal used by AgentChild */
  _forget(pid: number): void {
    this.session.children.delete(pid);
  }
}

/** Creates a client over `transport` and performs the handshake. */
export async function connectAgent(
  transport: Duplex,
  options: AgentClientOptions & { signal?: AbortSignal } = {},
): Promise<AgentClient> {
  const { signal, ...rest } = options;
  const client = new AgentClient(transport, rest);
  await client.connect({ signal });
  return client;
}
