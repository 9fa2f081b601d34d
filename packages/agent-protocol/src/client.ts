/**
 * AgentClient: the host side of the agent protocol over any Node Duplex (SPEC.md).
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { Duplex, Writable } from "node:stream";
import type { CborMap } from "./cbor";
import { encodeDataHeader } from "./cbor";
import { Channel, type ChannelIo, InboundQueue, type InboundSink } from "./channel";
import {
  DEFAULT_WINDOW,
  EGRESS_DNS_ANSWER_MAX,
  FATAL_LINGER_MS,
  FILE_MAX,
  FS_TAG_MAX,
  HELLO_RESEND_MS,
  HELLO_TIMEOUT_MS,
  MAX_FRAME,
  MAX_PENDING_REQUESTS,
  MAX_WINDOW,
  MIN_MAX_FRAME,
  MIN_WINDOW,
  PROTOCOL_VERSION,
  UINT32_MAX,
} from "./constants";
import { AgentError, type FatalCode, isAgentError, violation } from "./errors";
import {
  type AgentHelloFrame,
  type ChannelFrame,
  decodeFrame,
  encodeFrame,
  FATAL_CODES,
  type Frame,
  validateResult,
} from "./frames";
import { isValidShareTag } from "./ops";
import { FrameReader, type ScanVerdict } from "./reader";
import { VERSION } from "./version";

/** Connection state of an AgentClient. */
export type AgentClientState = "idle" | "connecting" | "connected" | "closed" | "failed";

export interface AgentClientOptions {
  /** Largest frame we accept, bytes; MIN_MAX_FRAME..MAX_FRAME (default 5 MiB). */
  maxFrame?: number;
  /** Receive window we grant per channel, bytes; MIN_WINDOW..MAX_WINDOW (default 256 KiB). */
  window?: number;
  /** Handshake deadline, ms (default 10000). */
  helloTimeoutMs?: number;
  /** Hello resend period, ms (default 200). */
  helloResendMs?: number;
  /** Version text sent as `host` in hello (default: this package's version). */
  hostVersion?: string;
  /** highWaterMark of the Readable/Writable streams handed out, bytes (default 64 KiB). */
  streamHighWaterMark?: number;
}

/** Per-call options accepted by every request method. */
export interface CallOptions {
  /** Rejects the call with SM_AGENT_ABORTED (and cancels the work in the guest where possible). */
  signal?: AbortSignal | undefined;
  /** Host-side deadline for the answer, ms; SM_AGENT_TIMEOUT when it passes. 0/undefined = none. */
  timeoutMs?: number | undefined;
}

/** What the agent said in its hello answer (SPEC §4.2). */
export interface AgentHello {
  protocolVersion: number;
  agentVersion: string;
  caps: string[];
  maxFrame: number;
  window: number;
  ready: boolean;
  listening: number | null;
  bootMs: number;
}

export interface CommandSpec {
  argv: string[];
  env?: Record<string, string> | undefined;
  cwd?: string | undefined;
  user?: string | undefined;
}
export interface StageFileSpec {
  path: string;
  data: Uint8Array;
  mode?: number | undefined;
}
export interface ProcessSpec extends CommandSpec {
  /** Files written before the command starts (SPEC §6). */
  stage?: StageFileSpec[] | undefined;
  /** Run after argv only if it exits 0 (SPEC §6.1). */
  chain?: CommandSpec | null | undefined;
  tty?: boolean | undefined;
  winsize?: { cols: number; rows: number } | undefined;
}
export interface ExecSpec extends ProcessSpec {
  /** Guest-side kill timeout for the process group, ms; 0/undefined = none. */
  timeoutMs?: number | undefined;
  /**
   * Host-side cap on collected stdout + stderr, bytes (default: none). When exceeded the process
   * group is killed and the call rejects with SM_AGENT_OUTPUT_LIMIT. Set it for untrusted guests.
   */
  maxOutputBytes?: number | undefined;
}
export interface ExecResult {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  peakRssKib: number;
  stdout: Buffer;
  stderr: Buffer;
}
export interface ExitInfo {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  peakRssKib: number;
}
export interface ExitEvent extends ExitInfo {
  pid: number;
}
export interface AgentStats {
  memTotalKib: number;
  memAvailKib: number;
  uptimeMs: number;
  /** 1-minute load average × 1000. */
  loadAvg1Milli: number;
}
/** A live host share to attach (SPEC §6.4). */
export interface FsAttachSpec {
  /** 1..35 characters of [A-Za-z0-9._-], not "." or ".."; unique among attached shares. */
  tag: string;
  /** Absolute guest path where the share is also bind-mounted (created if missing). */
  path?: string | undefined;
}
export interface ResumeSpec {
  /** Unix epoch time in ns (default: now). */
  timeNs?: bigint | undefined;
  /** 32..512 random bytes (default: 64 fresh bytes). */
  entropy?: Uint8Array | undefined;
}
export interface WriteFileOptions extends CallOptions {
  /** File mode (default 0o644). */
  mode?: number | undefined;
  /** Create parent directories (default true). */
  mkdirs?: boolean | undefined;
}

/** Typed events of AgentClient. */
export interface AgentClientEvents {
  ready: [{ bootMs: number }];
  listening: [{ port: number }];
  exit: [ExitEvent];
  "workload-exit": [{ exitCode: number; signal: number | null }];
  /** A guest process connects to addr:port (SPEC §6.5); answer with dialAccept or dialRefuse. */
  dial: [{ id: number; addr: string; port: number }];
  /** A DNS query reached the guest's stub (SPEC §6.5); answer with dnsAnswer (or not at all). */
  dns: [{ id: number; q: Buffer }];
  state: [AgentClientState];
  /** The session failed (protocol violation or transport loss); always emitted, never throws. */
  failed: [AgentError];
  /** Same as `failed`, only emitted when someone listens for it. */
  error: [AgentError];
}

interface Pending {
  id: number;
  op: string;
  resolve: (result: CborMap) => void;
  reject: (err: Error) => void;
  /** The caller gave up (abort/timeout); the res is still expected and is then discarded. */
  abandoned: boolean;
  /** Called synchronously with a successful result, before the promise resolves. */
  onResult?: ((result: CborMap) => void) | undefined;
  /** Called with the result when an abandoned request still succeeds (cancel guest-side work). */
  onLateResult?: ((result: CborMap) => void) | undefined;
  /** Called when the request ends without a result (error res, session loss), abandoned or not. */
  onError?: ((err: Error) => void) | undefined;
  cleanup: () => void;
}

function invalid(message: string): AgentError {
  return new AgentError("SM_AGENT_INVALID_ARGS", message);
}

function checkRange(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
    throw invalid(`${name} must be an integer in ${min}..${max}, got ${v}`);
  }
}

/** Host side of the agent protocol over one transport. */
export class AgentClient extends EventEmitter<AgentClientEvents> {
  private readonly transport: Duplex;
  private readonly maxFrame: number;
  private readonly window: number;
  private readonly helloTimeoutMs: number;
  private readonly helloResendMs: number;
  private readonly hostVersion: string;
  private readonly hwm: number;
  private readonly reader: FrameReader;
  private _state: AgentClientState = "idle";
  private _hello: AgentHello | null = null;
  private peerWindow = DEFAULT_WINDOW;
  private peerMaxFrame = MAX_FRAME;
  private nonce = 0;
  private hellosSent = 0;
  private extraHellos = 0;
  private handshake: Promise<AgentHello> | null = null;
  private handshakeSettle: { resolve: (h: AgentHello) => void; reject: (e: Error) => void } | null = null;
  private helloTimers: NodeJS.Timeout[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextChannel = 1;
  private readonly channels = new Map<number, Channel>();
  private readonly children = new Map<number, AgentChild>();
  private shuttingDown = false;
  private fatalSent = false;
  private _ready = false;
  private _listening: number | null = null;
  private failure: AgentError | null = null;
  private readonly io: ChannelIo;
  private readonly onTransportData = (chunk: Buffer) => this.receive(chunk);
  private readonly onTransportEnd = () => this.lost("the transport ended");
  private readonly onTransportClose = () => this.lost("the transport closed");
  private readonly onTransportError = (err: Error) => this.lost(`the transport failed: ${err.message}`, err);

  constructor(transport: Duplex, options: AgentClientOptions = {}) {
    super();
    const known = new Set([
      "maxFrame",
      "window",
      "helloTimeoutMs",
      "helloResendMs",
      "hostVersion",
      "streamHighWaterMark",
    ]);
    for (const k of Object.keys(options))
      if (!known.has(k)) throw invalid(`unknown AgentClient option "${k}"`);
    checkRange("maxFrame", options.maxFrame, MIN_MAX_FRAME, MAX_FRAME);
    checkRange("window", options.window, MIN_WINDOW, MAX_WINDOW);
    checkRange("helloTimeoutMs", options.helloTimeoutMs, 1, 2 ** 31 - 1);
    checkRange("helloResendMs", options.helloResendMs, 1, 2 ** 31 - 1);
    this.transport = transport;
    this.maxFrame = options.maxFrame ?? MAX_FRAME;
    this.window = options.window ?? DEFAULT_WINDOW;
    this.helloTimeoutMs = options.helloTimeoutMs ?? HELLO_TIMEOUT_MS;
    this.helloResendMs = options.helloResendMs ?? HELLO_RESEND_MS;
    this.hostVersion = options.hostVersion ?? VERSION;
    this.hwm = options.streamHighWaterMark ?? 65_536;
    this.reader = new FrameReader({
      maxFrame: this.maxFrame,
      onFrame: (body) => this.onFrame(body),
      onError: (err) => this.fail(err),
    });
    this.io = {
      sendFrame: (f) => this.send(f),
      sendData: (ch, payload) => this.sendData(ch, payload),
      violation: (err) => this.fail(err),
      removed: (ch) => {
        this.channels.delete(ch);
      },
    };
  }

  // ---- state ----

  get state(): AgentClientState {
    return this._state;
  }
  /** The agent's hello answer, once connected. */
  get hello(): AgentHello | null {
    return this._hello;
  }
  /** Whether the agent reported `ready` (in hello or as an event). */
  get ready(): boolean {
    return this._ready;
  }
  /** The port the agent reported in LISTEN state, if any. */
  get listeningPort(): number | null {
    return this._listening;
  }
  /** Requests awaiting an answer (abandoned ones included). */
  get pendingRequests(): number {
    return this.pending.size;
  }
  /** Open channels. */
  get openChannels(): number {
    return this.channels.size;
  }
  /**
   * Bytes received on channels and not yet consumed by their readers (SPEC §8.4 bounds this by
   * `window` per channel). A partially received frame (at most maxFrame) is not included.
   */
  get bufferedBytes(): number {
    let n = 0;
    for (const ch of this.channels.values()) n += ch.buffered;
    return n;
  }

  private setState(s: AgentClientState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }

  // ---- handshake (SPEC §4) ----

  /** Performs the handshake (idempotent: later calls return the same promise). */
  connect(options: CallOptions = {}): Promise<AgentHello> {
    if (this.handshake !== null) return this.handshake;
    if (this._state !== "idle") return Promise.reject(this.lostError());
    this.setState("connecting");
    this.handshake = new Promise<AgentHello>((resolve, reject) => {
      this.handshakeSettle = { resolve, reject };
    });
    this.handshake.catch(() => {});
    const t = this.transport;
    t.on("data", this.onTransportData);
    t.on("end", this.onTransportEnd);
    t.on("close", this.onTransportClose);
    t.on("error", this.onTransportError);
    if (t.destroyed || t.writableEnded || t.readableEnded) {
      queueMicrotask(() => this.lost("the transport is already closed"));
      return this.handshake;
    }
    this.nonce = randomBytes(4).readUInt32BE(0);
    const hello = encodeFrame({
      t: "hello",
      v: PROTOCOL_VERSION,
      host: this.hostVersion,
      maxFrame: this.maxFrame,
      window: this.window,
      nonce: this.nonce,
    });
    this.reader.scan((body) => this.scanHello(body));
    const sendHello = () => {
      if (this._state !== "connecting") return;
      this.hellosSent++;
      this.write(hello);
    };
    sendHello();
    this.helloTimers.push(setInterval(sendHello, this.helloResendMs));
    const timeoutMs = options.timeoutMs ?? this.helloTimeoutMs;
    this.helloTimers.push(
      setTimeout(() => {
        this.fail(new AgentError("SM_AGENT_LOST", `the agent did not answer hello within ${timeoutMs} ms`));
      }, timeoutMs),
    );
    const signal = options.signal;
    if (signal !== undefined) {
      const onAbort = () =>
        this.fail(new AgentError("SM_AGENT_ABORTED", "connect was aborted", { cause: signal.reason }));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        this.handshake.then(
          () => signal.removeEventListener("abort", onAbort),
          () => signal.removeEventListener("abort", onAbort),
        );
      }
    }
    return this.handshake;
  }

  private clearHelloTimers(): void {
    for (const t of this.helloTimers) clearTimeout(t);
    this.helloTimers = [];
  }

  private scanHello(body: Buffer): ScanVerdict {
    let frame: Frame;
    try {
      frame = decodeFrame(body, "agent-to-host");
    } catch {
      return "skip-byte";
    }
    if (frame.t !== "hello" || !("agent" in frame) || frame.nonce !== this.nonce) return "skip-frame";
    this.acceptHello(frame);
    return "accept";
  }

  private acceptHello(h: AgentHelloFrame): void {
    this.clearHelloTimers();
    if (h.v !== PROTOCOL_VERSION) {
      this.fail(
        violation("SM_VERSION", `agent speaks protocol v${h.v}, this host speaks v${PROTOCOL_VERSION}`),
      );
      return;
    }
    this.extraHellos = this.hellosSent - 1;
    this.peerWindow = h.window;
    this.peerMaxFrame = h.maxFrame;
    this._ready = h.ready;
    this._listening = h.listening;
    this._hello = {
      protocolVersion: h.v,
      agentVersion: h.agent,
      caps: [...h.caps],
      maxFrame: h.maxFrame,
      window: h.window,
      ready: h.ready,
      listening: h.listening,
      bootMs: h.bootMs,
    };
    this.setState("connected");
    this.handshakeSettle?.resolve(this._hello);
    this.handshakeSettle = null;
  }

  // ---- input ----

  private receive(chunk: Buffer): void {
    try {
      this.reader.push(chunk);
    } catch (e) {
      // a bug in a handler must not escape into the stream's emit: fail the session instead
      this.fail(
        isAgentError(e)
          ? e
          : new AgentError("SM_AGENT_PROTOCOL", `internal error: ${String(e)}`, { cause: e }),
      );
    }
  }

  private onFrame(body: Buffer): void {
    if (this._state !== "connected") return;
    let frame: Frame;
    try {
      frame = decodeFrame(body, "agent-to-host");
    } catch (e) {
      this.fail(e as AgentError);
      return;
    }
    switch (frame.t) {
      case "res":
        this.onResponse(frame.id, frame.result, frame.error);
        return;
      case "evt":
        this.onEvent(frame.ev, frame.data);
        return;
      case "data":
      case "credit":
      case "eof":
      case "close":
        this.onChannelFrame(frame);
        return;
      case "fatal": {
        const reason = (FATAL_CODES as readonly string[]).includes(frame.code)
          ? (frame.code as FatalCode)
          : "SM_BAD_FRAME";
        this.fail(
          new AgentError(
            "SM_AGENT_PROTOCOL",
            `the agent reported a protocol violation (${frame.code}): ${frame.message}`,
            { details: { reason, remote: true } },
          ),
        );
        return;
      }
      case "hello":
        if ("agent" in frame && frame.nonce === this.nonce && this.extraHellos > 0) {
          this.extraHellos--;
          return;
        }
        this.fail(violation("SM_UNKNOWN_FRAME", "unexpected hello answer"));
        return;
      default:
        this.fail(violation("SM_UNKNOWN_FRAME", `unexpected frame ${frame.t}`));
        return;
    }
  }

  private onResponse(
    id: number,
    result: CborMap | undefined,
    error: { code: string; message: string } | undefined,
  ): void {
    const p = this.pending.get(id);
    if (p === undefined) {
      this.fail(violation("SM_UNKNOWN_ID", `res for id ${id}, which is not pending`));
      return;
    }
    if (result !== undefined) {
      try {
        validateResult(p.op, result);
      } catch (e) {
        this.fail(e as AgentError);
        return;
      }
    }
    this.pending.delete(id);
    p.cleanup();
    if (result !== undefined) {
      if (p.abandoned) p.onLateResult?.(result);
      else {
        p.onResult?.(result);
        p.resolve(result);
      }
      return;
    }
    const e = error!;
    const code = e.code === "SM_FILE_TOO_LARGE" ? "SM_FILE_TOO_LARGE" : "SM_AGENT_REMOTE";
    const err = new AgentError(code, `agent ${p.op} failed: ${e.code}: ${e.message}`, {
      details: { remoteCode: e.code },
    });
    p.onError?.(err);
    if (!p.abandoned) p.reject(err);
  }

  private onEvent(ev: string, data: CborMap): void {
    switch (ev) {
      case "ready":
        this._ready = true;
        this.emit("ready", { bootMs: data.bootMs as number });
        return;
      case "listening":
        this._listening = data.port as number;
        this.emit("listening", { port: data.port as number });
        return;
      case "exit": {
        const e: ExitEvent = {
          pid: data.pid as number,
          exitCode: data.exitCode as number,
          signal: data.signal as number | null,
          timedOut: data.timedOut as boolean,
          peakRssKib: data.peakRssKib as number,
        };
        const child = this.children.get(e.pid);
        if (child !== undefined) {
          this.children.delete(e.pid);
          child._exited(e);
        }
        this.emit("exit", e);
        return;
      }
      case "workload-exit":
        this.emit("workload-exit", {
          exitCode: data.exitCode as number,
          signal: data.signal as number | null,
        });
        return;
      case "dial":
        this.emit("dial", { id: data.id as number, addr: data.addr as string, port: data.port as number });
        return;
      case "dns":
        this.emit("dns", { id: data.id as number, q: Buffer.from(data.q as Buffer) });
        return;
      default:
        return; // unknown events are ignored (SPEC §7)
    }
  }

  private onChannelFrame(frame: ChannelFrame): void {
    const ch = this.channels.get(frame.ch);
    if (ch === undefined) {
      if (frame.t === "data" || frame.t === "eof") {
        this.fail(violation("SM_UNKNOWN_CHANNEL", `${frame.t} for unknown channel ${frame.ch}`));
      }
      return; // credit/close for unknown channels are ignored (SPEC §8.3)
    }
    ch.handle(frame);
  }

  // ---- output ----

  private write(buf: Buffer): void {
    if (this.transport.destroyed || this.transport.writableEnded) return;
    this.transport.write(buf);
  }

  private send(frame: Frame): void {
    this.write(encodeFrame(frame));
  }

  private sendData(ch: number, payload: Buffer): void {
    const t = this.transport;
    if (t.destroyed || t.writableEnded) return;
    t.cork();
    t.write(encodeDataHeader(ch, payload.length));
    t.write(payload);
    t.uncork();
  }

  // ---- failure ----

  private lostError(): AgentError {
    if (this.failure !== null) return this.failure;
    return new AgentError("SM_AGENT_LOST", `the agent connection is ${this._state}`);
  }

  private lost(why: string, cause?: Error): void {
    if (this._state === "closed" || this._state === "failed") return;
    if (this.shuttingDown) {
      this.teardown(new AgentError("SM_AGENT_LOST", `the agent shut down (${why})`), "closed");
      return;
    }
    this.fail(new AgentError("SM_AGENT_LOST", `lost the agent: ${why}`, { cause }));
  }

  /** Tears the session down with `err`; sends `fatal` first when we detected a violation. */
  private fail(err: AgentError): void {
    if (this._state === "closed" || this._state === "failed") return;
    if (err.code === "SM_AGENT_PROTOCOL" && err.remote === false && err.reason !== undefined) {
      try {
        this.send({ t: "fatal", code: err.reason, message: err.message.slice(0, 4000) });
        this.fatalSent = true;
      } catch {
        // ignore: the transport is going away anyway
      }
    }
    this.teardown(err, "failed");
  }

  private teardown(err: AgentError, state: "closed" | "failed"): void {
    this.failure = err;
    this.clearHelloTimers();
    this.reader.stop();
    const t = this.transport;
    t.off("data", this.onTransportData);
    t.off("end", this.onTransportEnd);
    t.off("close", this.onTransportClose);
    t.off("error", this.onTransportError);
    t.on("error", () => {}); // late transport errors must not become uncaught
    if (!t.destroyed) {
      if (this.fatalSent) {
        // let the fatal frame drain before the transport goes away (bounded by a short timer)
        t.end();
        const timer = setTimeout(() => t.destroy(), FATAL_LINGER_MS);
        timer.unref?.();
        t.once("finish", () => {
          clearTimeout(timer);
          t.destroy();
        });
      } else {
        t.destroy();
      }
    }
    this.setState(state);
    this.handshakeSettle?.reject(err);
    this.handshakeSettle = null;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      p.cleanup();
      p.onError?.(err);
      if (!p.abandoned) p.reject(err);
    }
    const channels = [...this.channels.values()];
    this.channels.clear();
    for (const ch of channels) ch.remove(err);
    const children = [...this.children.values()];
    this.children.clear();
    for (const c of children) c._failed(err);
    if (state === "failed") {
      this.emit("failed", err);
      if (this.listenerCount("error") > 0) this.emit("error", err);
    }
  }

  /** Closes the session and the transport; pending calls reject with SM_AGENT_LOST. Idempotent. */
  close(): void {
    if (this._state === "closed" || this._state === "failed") return;
    this.teardown(new AgentError("SM_AGENT_LOST", "the agent client was closed"), "closed");
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- requests (SPEC §5) ----

  private async ready_(): Promise<void> {
    if (this._state === "connected") return;
    if (this._state === "connecting" && this.handshake !== null) {
      await this.handshake;
      return;
    }
    if (this._state === "idle") {
      await this.connect();
      return;
    }
    throw this.lostError();
  }

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = id === UINT32_MAX ? 0 : id + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  private allocChannel(): number {
    if (this.nextChannel > UINT32_MAX)
      throw new AgentError("SM_AGENT_BUSY", "channel ids exhausted for this session");
    return this.nextChannel++;
  }

  private openChannel(id: number, canSend: boolean, canRecv: boolean, sink?: InboundSink): Channel {
    const ch = new Channel(this.io, {
      id,
      canSend,
      canRecv,
      recvWindow: this.window,
      sendWindow: this.peerWindow,
      peerMaxFrame: this.peerMaxFrame,
      sink,
    });
    this.channels.set(id, ch);
    return ch;
  }

  /**
   * Sends a request and resolves with its `result` map. `hooks.onAbandon` runs when the caller
   * gives up (abort/timeout) before the answer; `onLateResult` when an abandoned request succeeds.
   * @internal building block of the typed methods; exposed as `request` for new ops.
   */
  private call(
    op: string,
    args: Record<string, unknown>,
    options: CallOptions | undefined,
    hooks: {
      onAbandon?: () => void;
      onResult?: (r: CborMap) => void;
      onLateResult?: (r: CborMap) => void;
      onError?: (err: Error) => void;
      beforeSend?: () => void;
    } = {},
  ): Promise<CborMap> {
    const signal = options?.signal;
    const timeoutMs = options?.timeoutMs;
    if (signal?.aborted) {
      return Promise.reject(
        new AgentError("SM_AGENT_ABORTED", `${op} was aborted`, { cause: signal.reason }),
      );
    }
    if (this._state !== "connected") return Promise.reject(this.lostError());
    if (this.pending.size >= MAX_PENDING_REQUESTS) {
      return Promise.reject(
        new AgentError(
          "SM_AGENT_BUSY",
          `${MAX_PENDING_REQUESTS} requests are already pending; wait for some to finish`,
        ),
      );
    }
    const id = this.allocId();
    return new Promise<CborMap>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const abandon = (err: AgentError) => {
        const p = this.pending.get(id);
        if (p === undefined || p.abandoned) return;
        p.abandoned = true;
        p.cleanup();
        hooks.onAbandon?.();
        reject(err);
      };
      const onAbort = () =>
        abandon(
          isAgentError(signal?.reason)
            ? signal.reason
            : new AgentError("SM_AGENT_ABORTED", `${op} was aborted`, { cause: signal?.reason }),
        );
      const p: Pending = {
        id,
        op,
        resolve,
        reject,
        abandoned: false,
        onResult: hooks.onResult,
        onLateResult: hooks.onLateResult,
        onError: hooks.onError,
        cleanup: () => {
          if (timer !== undefined) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      this.pending.set(id, p);
      if (timeoutMs !== undefined && timeoutMs > 0) {
        timer = setTimeout(
          () => abandon(new AgentError("SM_AGENT_TIMEOUT", `${op} got no answer within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        const bytes = encodeFrame({ t: "req", id, op, args: args as CborMap });
        if (bytes.length - 4 > this.peerMaxFrame) {
          throw invalid(
            `${op} request is ${bytes.length - 4} bytes, above the agent's maxFrame ${this.peerMaxFrame}; send less data per call`,
          );
        }
        hooks.beforeSend?.();
        this.write(bytes);
      } catch (e) {
        this.pending.delete(id);
        p.cleanup();
        p.onError?.(e as Error);
        reject(isAgentError(e) ? e : invalid(`cannot encode ${op} arguments: ${(e as Error).message}`));
      }
    });
  }

  /** Sends any request (for ops newer than this client); resolves with the raw result map. */
  async request(op: string, args: Record<string, unknown> = {}, options?: CallOptions): Promise<CborMap> {
    await this.ready_();
    return this.call(op, args, options);
  }

  /** Round trip with no work in the guest. */
  async ping(options?: CallOptions): Promise<void> {
    await this.ready_();
    await this.call("ping", {}, options);
  }

  /** Runs a command to completion and collects its output (SPEC §6.1). */
  async exec(spec: ExecSpec, options?: CallOptions): Promise<ExecResult> {
    const args = processArgs(spec);
    checkRange("timeoutMs", spec.timeoutMs, 0, Number.MAX_SAFE_INTEGER);
    checkRange("maxOutputBytes", spec.maxOutputBytes, 0, Number.MAX_SAFE_INTEGER);
    const maxOutput = spec.maxOutputBytes ?? Number.POSITIVE_INFINITY;
    await this.ready_();
    const tty = spec.tty === true;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const chOut = this.allocChannel();
    const chErr = tty ? undefined : this.allocChannel();
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
        this.channels.get(id)?.consumed(b.length);
      },
      eof: () => {},
      error: () => {},
    });
    const removeChannels = () => {
      this.channels.get(chOut)?.remove();
      if (chErr !== undefined) this.channels.get(chErr)?.remove();
    };
    // only pay for a combined signal when an output cap is set
    const signal =
      spec.maxOutputBytes === undefined
        ? options?.signal
        : options?.signal === undefined
          ? overLimit.signal
          : AbortSignal.any([options.signal, overLimit.signal]);
    const result = await this.call(
      "exec",
      { ...args, timeoutMs: spec.timeoutMs ?? 0, chOut, chErr },
      { timeoutMs: options?.timeoutMs, signal },
      {
        beforeSend: () => {
          this.openChannel(chOut, false, true, collect(out, chOut));
          if (chErr !== undefined) this.openChannel(chErr, false, true, collect(err, chErr));
        },
        // cancel in the guest: close on chOut kills the process group (SPEC §6.1); the channels
        // stay registered (output in flight is discarded) until the res removes them
        onAbandon: () => {
          discard = true;
          out.length = 0;
          err.length = 0;
          this.channels.get(chOut)?.abort();
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
    await this.ready_();
    const tty = spec.tty === true;
    const chOut = this.allocChannel();
    const chErr = tty ? undefined : this.allocChannel();
    const chIn = this.allocChannel();
    const qOut = new InboundQueue(() => this.channels.get(chOut), this.hwm);
    const qErr = new InboundQueue(
      () => (chErr === undefined ? undefined : this.channels.get(chErr)),
      this.hwm,
    );
    if (tty) qErr.eof();
    const drop = () => {
      this.channels.get(chOut)?.remove();
      if (chErr !== undefined) this.channels.get(chErr)?.remove();
      this.channels.get(chIn)?.remove();
    };
    let child: AgentChild | null = null;
    await this.call("spawn", { ...args, chOut, chErr, chIn }, options, {
      // registered synchronously: the exit event may be in the same chunk as the res
      onResult: (r) => {
        const pid = r.pid as number;
        child = new AgentChild(this, pid, qOut, qErr, () => this.channels.get(chIn), this.hwm);
        this.children.set(pid, child);
      },
      beforeSend: () => {
        this.openChannel(chOut, false, true, qOut);
        if (chErr !== undefined) this.openChannel(chErr, false, true, qErr);
        this.openChannel(chIn, true, false);
      },
      onError: drop,
      onLateResult: (r) => {
        // nobody wants this process any more: kill it and close its channels
        this.call("signal", { pid: r.pid, signum: 9 }, undefined).catch(() => {});
        for (const id of [chOut, chErr, chIn]) if (id !== undefined) this.channels.get(id)?.abort();
      },
    });
    return child!;
  }

  /** Sends a signal to a spawned process. */
  async signal(pid: number, signum: number, options?: CallOptions): Promise<void> {
    checkRange("pid", pid, 1, UINT32_MAX);
    checkRange("signum", signum, 1, 64);
    await this.ready_();
    await this.call("signal", { pid, signum }, options);
  }

  /** Changes the pty size of a spawned tty process. */
  async resize(pid: number, cols: number, rows: number, options?: CallOptions): Promise<void> {
    checkRange("pid", pid, 1, UINT32_MAX);
    checkRange("cols", cols, 1, 65535);
    checkRange("rows", rows, 1, 65535);
    await this.ready_();
    await this.call("resize", { pid, cols, rows }, options);
  }

  /** Closes a spawned process's stdin by pid (the child's closeStdin() does it in-band). */
  async closeStdin(pid: number, options?: CallOptions): Promise<void> {
    checkRange("pid", pid, 1, UINT32_MAX);
    await this.ready_();
    await this.call("close-stdin", { pid }, options);
  }

  /** Writes a file in the guest (at most 4 MiB; SM_FILE_TOO_LARGE before sending otherwise). */
  async writeFile(path: string, data: Uint8Array, options: WriteFileOptions = {}): Promise<void> {
    checkPath(path);
    if (!(data instanceof Uint8Array)) throw invalid("writeFile data must be a Buffer or Uint8Array");
    const limit = Math.min(FILE_MAX, (this._hello?.maxFrame ?? MAX_FRAME) - 8192);
    if (data.length > limit) {
      throw new AgentError(
        "SM_FILE_TOO_LARGE",
        `writeFile ${path}: ${data.length} bytes exceeds the ${limit}-byte limit; split the file or use exec with stdin`,
      );
    }
    checkRange("mode", options.mode, 0, 0o7777);
    await this.ready_();
    await this.call(
      "write-file",
      { path, data, mode: options.mode ?? 0o644, mkdirs: options.mkdirs ?? true },
      options,
    );
  }

  /** Reads a file from the guest (at most 4 MiB). */
  async readFile(path: string, options?: CallOptions): Promise<{ data: Buffer; mode: number }> {
    checkPath(path);
    await this.ready_();
    const r = await this.call("read-file", { path }, options);
    return { data: Buffer.from(r.data as Buffer), mode: r.mode as number };
  }

  /** Signals the image's workload process. */
  async workloadSignal(signum: number, options?: CallOptions): Promise<void> {
    checkRange("signum", signum, 1, 64);
    await this.ready_();
    await this.call("workload-signal", { signum }, options);
  }

  /** Opens a TCP connection to 127.0.0.1:port inside the guest, as a Duplex (SPEC §6.3). */
  async tcpConnect(port: number, options?: CallOptions): Promise<Duplex> {
    checkRange("port", port, 1, 65535);
    await this.ready_();
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
    await this.call("dial-answer", { id, error }, options);
  }

  /** Answers a `dns` event with a complete DNS message (SPEC §6.5). */
  async dnsAnswer(id: number, answer: Buffer, options?: CallOptions): Promise<void> {
    checkRange("id", id, 1, UINT32_MAX);
    if (answer.length < 12 || answer.length > EGRESS_DNS_ANSWER_MAX)
      throw invalid("dns answer must be 12..4096 bytes");
    await this.call("dns-answer", { id, a: answer }, options);
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
    await this.ready_();
    const args: Record<string, unknown> = { tag: spec.tag };
    if (spec.path !== undefined && spec.path !== null) args.path = spec.path;
    return this.openDuplexChannel("fs-attach", args, options);
  }

  /** Detaches a share (SPEC §6.4): unmounts it everywhere in the guest and closes its channel. ENOENT if unknown. */
  async fsDetach(tag: string, options?: CallOptions): Promise<void> {
    checkShareTag(tag);
    await this.ready_();
    await this.call("fs-detach", { tag }, options);
  }

  /** Sends an op that opens one bidirectional channel `ch` on success and wraps it as a Duplex. */
  private async openDuplexChannel(
    op: string,
    args: Record<string, unknown>,
    options: CallOptions | undefined,
  ): Promise<Duplex> {
    const chId = this.allocChannel();
    const q = new InboundQueue(() => this.channels.get(chId), this.hwm);
    await this.call(op, { ...args, ch: chId }, options, {
      beforeSend: () => {
        this.openChannel(chId, true, true, q);
      },
      onError: () => this.channels.get(chId)?.remove(),
      onLateResult: () => this.channels.get(chId)?.abort(),
    });
    const getCh = () => this.channels.get(chId);
    const duplex = new Duplex({
      readableHighWaterMark: this.hwm,
      writableHighWaterMark: this.hwm,
      read() {
        q.readRequested();
      },
      write(chunk: Buffer, _enc, cb) {
        const ch = getCh();
        if (ch === undefined) return cb(new AgentError("SM_AGENT_LOST", "the guest connection is closed"));
        ch.write(chunk).then(() => cb(), cb);
      },
      final(cb) {
        const ch = getCh();
        if (ch === undefined) return cb();
        ch.end().then(() => cb(), cb);
      },
      destroy(err, cb) {
        q.readableDestroyed();
        cb(err);
      },
    });
    q.bind(duplex);
    return duplex;
  }

  /** After a restore: sets the guest clock and reseeds its RNG (SPEC §6.3). */
  async resume(spec: ResumeSpec = {}, options?: CallOptions): Promise<void> {
    const timeNs = spec.timeNs ?? BigInt(Date.now()) * 1_000_000n;
    const entropy = spec.entropy ?? randomBytes(64);
    if (typeof timeNs !== "bigint" || timeNs < 0n)
      throw invalid("resume timeNs must be a non-negative bigint");
    if (entropy.length < 32 || entropy.length > 512) throw invalid("resume entropy must be 32..512 bytes");
    await this.ready_();
    await this.call("resume", { timeNs, entropy }, options);
  }

  /** Guest memory/uptime/load figures. */
  async stats(options?: CallOptions): Promise<AgentStats> {
    await this.ready_();
    const r = await this.call("stats", {}, options);
    return {
      memTotalKib: r.memTotalKib as number,
      memAvailKib: r.memAvailKib as number,
      uptimeMs: r.uptimeMs as number,
      loadAvg1Milli: r.loadAvg1Milli as number,
    };
  }

  /** Asks the agent to power the guest off; the following transport loss closes the client normally. */
  async shutdown(options?: CallOptions): Promise<void> {
    await this.ready_();
    this.shuttingDown = true;
    try {
      await this.call("shutdown", {}, options);
    } catch (e) {
      this.shuttingDown = false;
      throw e;
    }
  }

  /** @internal used by AgentChild */
  _forget(pid: number): void {
    this.children.delete(pid);
  }
}

function checkShareTag(tag: string): void {
  if (!isValidShareTag(tag)) {
    throw invalid(
      `share tag must be 1..${FS_TAG_MAX} characters of [A-Za-z0-9._-], not "." or "..": ${JSON.stringify(tag)}`,
    );
  }
}

function checkPath(path: string): void {
  if (
    typeof path !== "string" ||
    !path.startsWith("/") ||
    path.includes("\0") ||
    Buffer.byteLength(path) > 4096
  ) {
    throw invalid(`guest path must be absolute, without NUL, at most 4096 bytes: ${JSON.stringify(path)}`);
  }
}

function commandArgs(c: CommandSpec, where: string): Record<string, unknown> {
  if (!Array.isArray(c.argv) || c.argv.length === 0 || !c.argv.every((a) => typeof a === "string")) {
    throw invalid(`${where}.argv must be a non-empty array of strings`);
  }
  if (c.env !== undefined && (typeof c.env !== "object" || c.env === null))
    throw invalid(`${where}.env must be an object`);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.env ?? {})) {
    if (typeof v !== "string" || k.length === 0 || k.includes("=")) {
      throw invalid(`${where}.env: invalid entry ${JSON.stringify(k)}`);
    }
    env[k] = v;
  }
  if (c.cwd !== undefined) checkPath(c.cwd);
  return { argv: c.argv, env, cwd: c.cwd, user: c.user };
}

function processArgs(spec: ProcessSpec): Record<string, unknown> {
  if (typeof spec !== "object" || spec === null) throw invalid("exec/spawn options must be an object");
  const base = commandArgs(spec, "options");
  const stage = (spec.stage ?? []).map((s, i) => {
    checkPath(s.path);
    if (!(s.data instanceof Uint8Array)) throw invalid(`stage[${i}].data must be a Buffer`);
    checkRange(`stage[${i}].mode`, s.mode, 0, 0o7777);
    return { path: s.path, data: s.data, mode: s.mode ?? 0o644 };
  });
  const ws = spec.winsize;
  if (ws !== undefined) {
    checkRange("winsize.cols", ws.cols, 1, 65535);
    checkRange("winsize.rows", ws.rows, 1, 65535);
  }
  return {
    ...base,
    stage: stage.length > 0 ? stage : undefined,
    chain: spec.chain == null ? undefined : commandArgs(spec.chain, "chain"),
    tty: spec.tty === true ? true : undefined,
    cols: ws?.cols,
    rows: ws?.rows,
  };
}

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
  get stdout(): import("node:stream").Readable {
    return this.qOut.toReadable();
  }
  /** stderr as a Readable (ends at once with tty). */
  get stderr(): import("node:stream").Readable {
    return this.qErr.toReadable();
  }
  /** stdin as a Writable; `end()` closes the process's stdin. */
  get stdin(): Writable {
    if (this._stdin !== null) return this._stdin;
    const getCh = this.stdinChannel;
    this._stdin = new Writable({
      highWaterMark: this.hwm,
      write(chunk: Buffer, _enc, cb) {
        const ch = getCh();
        if (ch === undefined) return cb(new AgentError("SM_AGENT_LOST", "stdin is closed"));
        ch.write(chunk).then(() => cb(), cb);
      },
      final(cb) {
        const ch = getCh();
        if (ch === undefined) return cb();
        ch.end().then(() => cb(), cb);
      },
      destroy(err, cb) {
        const ch = getCh();
        if (ch !== undefined && ch.state === "open" && ch.sendOpen) ch.abort();
        cb(err);
      },
    });
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
