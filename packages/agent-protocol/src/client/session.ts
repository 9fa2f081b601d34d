/**
 * The session state machine of AgentClient: handshake (SPEC §4), routing of incoming frames to the
 * request table, the channels and the events, output to the transport, and teardown (SPEC §9).
 */
import { randomBytes } from "node:crypto";
import type { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import type { CborMap } from "../cbor";
import { Channel, type ChannelIo, type InboundSink, routeFrame, writeDataFrame } from "../channel";
import { DEFAULT_WINDOW, FATAL_LINGER_MS, MAX_FRAME, PROTOCOL_VERSION, UINT32_MAX } from "../constants";
import { AgentError, type FatalCode, isAgentError, violation } from "../errors";
import { type AgentHelloFrame, decodeFrame, encodeFrame, FATAL_CODES, type Frame } from "../frames";
import { FrameReader, type ScanVerdict } from "../reader";
import type { AgentChild } from "./child";
import { RpcTable } from "./rpc";
import type { AgentClientEvents, AgentClientState, AgentHello, CallOptions, ExitEvent } from "./types";

/** Session parameters, defaults already filled in. */
export interface SessionOptions {
  maxFrame: number;
  window: number;
  helloTimeoutMs: number;
  helloResendMs: number;
  hostVersion: string;
}

export class Session {
  private readonly transport: Duplex;
  private readonly maxFrame: number;
  private readonly window: number;
  private readonly helloTimeoutMs: number;
  private readonly helloResendMs: number;
  private readonly hostVersion: string;
  private readonly events: EventEmitter<AgentClientEvents>;
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
  private nextChannel = 1;
  /** Open channels by id. */
  readonly channels = new Map<number, Channel>();
  /** Spawned processes that have not exited, by pid. */
  readonly children = new Map<number, AgentChild>();
  readonly rpc: RpcTable;
  /** A `shutdown` was sent: the following transport loss is a normal close. */
  shuttingDown = false;
  private fatalSent = false;
  private _ready = false;
  private _listening: number | null = null;
  private failure: AgentError | null = null;
  private readonly io: ChannelIo;
  private readonly onTransportData = (chunk: Buffer) => this.receive(chunk);
  private readonly onTransportEnd = () => this.lost("the transport ended");
  private readonly onTransportClose = () => this.lost("the transport closed");
  private readonly onTransportError = (err: Error) => this.lost(`the transport failed: ${err.message}`, err);

  /** `events` is the AgentClient: the session emits its events there. */
  constructor(transport: Duplex, options: SessionOptions, events: EventEmitter<AgentClientEvents>) {
    this.transport = transport;
    this.maxFrame = options.maxFrame;
    this.window = options.window;
    this.helloTimeoutMs = options.helloTimeoutMs;
    this.helloResendMs = options.helloResendMs;
    this.hostVersion = options.hostVersion;
    this.events = events;
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
    this.rpc = new RpcTable({
      unavailable: () => (this._state === "connected" ? null : this.lostError()),
      peerMaxFrame: () => this.peerMaxFrame,
      write: (bytes) => this.write(bytes),
    });
  }

  get state(): AgentClientState {
    return this._state;
  }
  get hello(): AgentHello | null {
    return this._hello;
  }
  get ready(): boolean {
    return this._ready;
  }
  get listening(): number | null {
    return this._listening;
  }
  /** Bytes received on channels and not yet consumed by their readers. */
  get bufferedBytes(): number {
    let n = 0;
    for (const ch of this.channels.values()) n += ch.buffered;
    return n;
  }

  private setState(s: AgentClientState): void {
    if (this._state === s) return;
    this._state = s;
    this.events.emit("state", s);
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
    const frame = routeFrame(body, "agent-to-host", this.channels, (err) => this.fail(err));
    if (frame === null) return;
    switch (frame.t) {
      case "res": {
        const err = this.rpc.answer(frame.id, frame.result, frame.error);
        if (err !== null) this.fail(err);
        return;
      }
      case "evt":
        this.onEvent(frame.ev, frame.data);
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

  private onEvent(ev: string, data: CborMap): void {
    switch (ev) {
      case "ready":
        this._ready = true;
        this.events.emit("ready", { bootMs: data.bootMs as number });
        return;
      case "listening":
        this._listening = data.port as number;
        this.events.emit("listening", { port: data.port as number });
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
        this.events.emit("exit", e);
        return;
      }
      case "workload-exit":
        this.events.emit("workload-exit", {
          exitCode: data.exitCode as number,
          signal: data.signal as number | null,
        });
        return;
      case "dial":
        this.events.emit("dial", {
          id: data.id as number,
          addr: data.addr as string,
          port: data.port as number,
        });
        return;
      case "dns":
        this.events.emit("dns", { id: data.id as number, q: Buffer.from(data.q as Buffer) });
        return;
      default:
        return; // unknown events are ignored (SPEC §7)
    }
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
    writeDataFrame(t, ch, payload);
  }

  // ---- failure ----

  lostError(): AgentError {
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
    this.rpc.failAll(err);
    const channels = [...this.channels.values()];
    this.channels.clear();
    for (const ch of channels) ch.remove(err);
    const children = [...this.children.values()];
    this.children.clear();
    for (const c of children) c._failed(err);
    if (state === "failed") {
      this.events.emit("failed", err);
      if (this.events.listenerCount("error") > 0) this.events.emit("error", err);
    }
  }

  /** Closes the session and the transport; pending calls reject with SM_AGENT_LOST. Idempotent. */
  close(): void {
    if (this._state === "closed" || this._state === "failed") return;
    this.teardown(new AgentError("SM_AGENT_LOST", "the agent client was closed"), "closed");
  }

  // ---- requests and channels (SPEC §5, §8) ----

  /** Resolves once connected: waits for a running handshake, starts one when idle. */
  async ensureConnected(): Promise<void> {
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

  allocChannel(): number {
    if (this.nextChannel > UINT32_MAX)
      throw new AgentError("SM_AGENT_BUSY", "channel ids exhausted for this session");
    return this.nextChannel++;
  }

  openChannel(id: number, canSend: boolean, canRecv: boolean, sink?: InboundSink): Channel {
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
}
