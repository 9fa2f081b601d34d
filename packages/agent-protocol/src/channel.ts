/**
 * Channels and credit-based flow control (SPEC §8). Role-agnostic: the host client and the
 * reference agent both use it. A channel has two halves; `canSend` / `canRecv` say which ones
 * this side uses at all (process channels are one-way).
 */
import type { Readable, Writable } from "node:stream";
import { encodeDataHeader } from "./cbor";
import { DATA_CHUNK_MAX, DATA_OVERHEAD } from "./constants";
import { AgentError, violation } from "./errors";
import { type ChannelFrame, type Direction, decodeFrame, type Frame } from "./frames";
import { queueReadable } from "./streams";

/** Per-side channel state (SPEC §8.2). */
export type ChannelState = "open" | "closing" | "removed";

/** What a channel needs from its session. */
export interface ChannelIo {
  sendFrame(frame: ChannelFrame): void;
  /** Sends a data frame carrying `payload` (not copied). */
  sendData(ch: number, payload: Buffer): void;
  /** Reports a protocol violation; the session is torn down. */
  violation(err: AgentError): void;
  /** The channel was removed on this side. */
  removed(ch: number): void;
}

/** Receives what arrives on the peer's half. */
export interface InboundSink {
  data(chunk: Buffer): void;
  eof(): void;
  /** The channel was aborted (peer `close`, local abort, or session loss). */
  error(err: Error): void;
}

export interface ChannelOptions {
  id: number;
  /** Whether this side sends data on the channel. */
  canSend: boolean;
  /** Whether this side receives data on the channel. */
  canRecv: boolean;
  /** Our receive window = initial credit we grant (what we announced in hello). */
  recvWindow: number;
  /** The peer's window = our initial send credit. */
  sendWindow: number;
  /** The peer's maxFrame: data chunks stay below it. */
  peerMaxFrame: number;
  sink?: InboundSink | undefined;
  /** Called once when the channel is aborted (peer close, local abort, session loss). */
  onAbort?: ((err: Error) => void) | undefined;
}

/**
 * Decodes an incoming frame body and routes channel frames (data, credit, eof, close) to their
 * channel. A body that does not decode, and data or eof for an unknown channel, go to `fail`;
 * credit and close for an unknown channel are ignored (SPEC §8.3). Returns the frame when it is
 * not a channel frame (the caller handles it), else null.
 */
export function routeFrame(
  body: Buffer,
  direction: Direction,
  channels: ReadonlyMap<number, Channel>,
  fail: (err: AgentError) => void,
): Exclude<Frame, ChannelFrame> | null {
  let frame: Frame;
  try {
    frame = decodeFrame(body, direction);
  } catch (e) {
    fail(e as AgentError);
    return null;
  }
  switch (frame.t) {
    case "data":
    case "credit":
    case "eof":
    case "close":
      break;
    default:
      return frame;
  }
  const ch = channels.get(frame.ch);
  if (ch !== undefined) ch.handle(frame);
  else if (frame.t === "data" || frame.t === "eof") {
    fail(violation("SM_UNKNOWN_CHANNEL", `${frame.t} for unknown channel ${frame.ch}`));
  }
  return null;
}

/** Writes one data frame to `out`: its header, then `payload` (not copied), in one corked write. */
export function writeDataFrame(out: Writable, ch: number, payload: Buffer): void {
  out.cork();
  out.write(encodeDataHeader(ch, payload.length));
  out.write(payload);
  out.uncork();
}

interface PendingWrite {
  buf: Buffer;
  off: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class Channel {
  readonly id: number;
  state: ChannelState = "open";
  /** Our sending half is open (we may still send data). */
  sendOpen: boolean;
  /** The peer's sending half is open (it may still send data to us). */
  recvOpen: boolean;
  private readonly canSend: boolean;
  private readonly canRecv: boolean;
  private eofReceived = false;
  private eofQueued = false;
  // sending
  private sendCredit: number;
  private readonly sendWindow: number;
  private readonly chunkMax: number;
  private readonly writes: PendingWrite[] = [];
  private queuedWriteBytes = 0;
  private eofWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  // receiving
  private readonly recvWindow: number;
  /** Credit the peer still holds (granted, not yet used). */
  private recvAvail: number;
  /** Bytes consumed since the last credit we sent. */
  private consumedPending = 0;
  /** Bytes received and not yet consumed. */
  buffered = 0;
  sink: InboundSink | undefined;
  private onAbortHook: ((err: Error) => void) | undefined;
  private readonly io: ChannelIo;

  constructor(io: ChannelIo, o: ChannelOptions) {
    this.io = io;
    this.id = o.id;
    this.canSend = o.canSend;
    this.canRecv = o.canRecv;
    this.sendOpen = o.canSend;
    this.recvOpen = o.canRecv;
    this.sendWindow = o.sendWindow;
    this.sendCredit = o.sendWindow;
    this.recvWindow = o.recvWindow;
    this.recvAvail = o.recvWindow;
    this.chunkMax = Math.min(DATA_CHUNK_MAX, o.peerMaxFrame - DATA_OVERHEAD);
    this.sink = o.sink;
    this.onAbortHook = o.onAbort;
  }

  // ---- receiving (SPEC §8.3, §8.4) ----

  /** @internal dispatch of a channel frame from the peer. */
  handle(frame: ChannelFrame): void {
    switch (frame.t) {
      case "data":
        this.onData(frame.d);
        return;
      case "credit":
        this.onCredit(frame.n);
        return;
      case "eof":
        this.onEof();
        return;
      case "close":
        this.onClose();
        return;
    }
  }

  private onData(d: Buffer): void {
    if (this.state === "closing") return;
    if (!this.recvOpen) {
      this.io.violation(
        this.eofReceived
          ? violation("SM_DATA_AFTER_EOF", `data on channel ${this.id} after eof`)
          : violation("SM_UNKNOWN_CHANNEL", `data on channel ${this.id} in the wrong direction`),
      );
      return;
    }
    if (d.length > this.recvAvail) {
      this.io.violation(
        violation(
          "SM_CREDIT_EXCEEDED",
          `channel ${this.id}: ${d.length} bytes sent with ${this.recvAvail} credit`,
        ),
      );
      return;
    }
    this.recvAvail -= d.length;
    this.buffered += d.length;
    this.sink?.data(d);
  }

  /** The consumer took `n` bytes out of the buffer: return credit at the threshold (SPEC §8.4). */
  consumed(n: number): void {
    this.buffered -= n;
    this.consumedPending += n;
    if (this.consumedPending >= this.recvWindow / 2 && this.state === "open" && this.recvOpen) {
      const grant = this.consumedPending;
      this.consumedPending = 0;
      this.recvAvail += grant;
      this.io.sendFrame({ t: "credit", ch: this.id, n: grant });
    }
  }

  private onCredit(n: number): void {
    if (this.state === "closing") return;
    if (!this.canSend) {
      this.io.violation(violation("SM_UNKNOWN_CHANNEL", `credit for channel ${this.id} we never send on`));
      return;
    }
    if (!this.sendOpen) return; // crossed our eof
    if (this.sendCredit + n > this.sendWindow) {
      this.io.violation(
        violation(
          "SM_CREDIT_OVERFLOW",
          `channel ${this.id}: credit ${this.sendCredit} + ${n} exceeds the window`,
        ),
      );
      return;
    }
    this.sendCredit += n;
    this.flush();
  }

  private onEof(): void {
    if (this.state === "closing") {
      if (!this.sendOpen) this.remove();
      return;
    }
    if (!this.recvOpen) {
      this.io.violation(
        this.eofReceived
          ? violation("SM_DATA_AFTER_EOF", `second eof on channel ${this.id}`)
          : violation("SM_UNKNOWN_CHANNEL", `eof on channel ${this.id} in the wrong direction`),
      );
      return;
    }
    this.recvOpen = false;
    this.eofReceived = true;
    this.sink?.eof();
    if (!this.sendOpen && this.writes.length === 0) this.remove();
  }

  private onClose(): void {
    if (this.state === "open") {
      this.io.sendFrame({ t: "close", ch: this.id });
      this.abortLocal(new AgentError("SM_AGENT_LOST", `channel ${this.id} was reset by the peer`));
    }
    this.remove();
  }

  // ---- sending ----

  /** Sends `buf` as data within credit; resolves when all of it is handed to the transport. */
  write(buf: Buffer): Promise<void> {
    if (this.state !== "open" || !this.sendOpen || this.eofQueued) {
      return Promise.reject(new AgentError("SM_AGENT_LOST", `channel ${this.id} is closed for writing`));
    }
    if (buf.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.writes.push({ buf, off: 0, resolve, reject });
      this.queuedWriteBytes += buf.length;
      this.flush();
    });
  }

  /** Bytes queued locally waiting for credit. */
  get pendingWriteBytes(): number {
    return this.queuedWriteBytes;
  }

  /** Half-closes our sending side once queued writes are sent. */
  end(): Promise<void> {
    if (this.state !== "open" || !this.sendOpen) return Promise.resolve();
    this.eofQueued = true;
    return new Promise((resolve, reject) => {
      this.eofWaiters.push({ resolve, reject });
      this.flush();
    });
  }

  private flush(): void {
    while (this.writes.length > 0 && this.sendCredit > 0 && this.state === "open") {
      const w = this.writes[0]!;
      const n = Math.min(w.buf.length - w.off, this.sendCredit, this.chunkMax);
      this.sendCredit -= n;
      const chunk = n === w.buf.length && w.off === 0 ? w.buf : w.buf.subarray(w.off, w.off + n);
      w.off += n;
      this.queuedWriteBytes -= n;
      this.io.sendData(this.id, chunk);
      if (w.off === w.buf.length) {
        this.writes.shift();
        w.resolve();
      }
    }
    if (this.eofQueued && this.writes.length === 0 && this.sendOpen && this.state === "open") {
      this.sendOpen = false;
      this.io.sendFrame({ t: "eof", ch: this.id });
      const waiters = this.eofWaiters;
      this.eofWaiters = [];
      for (const w of waiters) w.resolve();
      if (!this.recvOpen) this.remove();
    }
  }

  // ---- aborting / removal ----

  /** Aborts both directions: sends `close` and waits for the peer's (SPEC §8.2). */
  abort(reason?: Error): void {
    if (this.state !== "open") return;
    this.state = "closing";
    this.io.sendFrame({ t: "close", ch: this.id });
    this.abortLocal(reason ?? new AgentError("SM_AGENT_LOST", `channel ${this.id} was closed`));
  }

  private abortLocal(err: Error): void {
    const hook = this.onAbortHook;
    this.onAbortHook = undefined;
    hook?.(err);
    const writes = this.writes.splice(0);
    this.queuedWriteBytes = 0;
    for (const w of writes) w.reject(err);
    const waiters = this.eofWaiters;
    this.eofWaiters = [];
    for (const w of waiters) w.reject(err);
    if (this.recvOpen) {
      this.recvOpen = false;
      this.sink?.error(err);
    }
    this.sendOpen = false;
  }

  /** Removes the channel without frames (exec `res`, SPEC §6.1) or after session loss. */
  remove(err?: Error): void {
    if (this.state === "removed") return;
    if (err !== undefined) this.abortLocal(err);
    else if (this.recvOpen && this.canRecv) {
      // implicit removal while the peer's half was open: the sink ends normally
      this.recvOpen = false;
      this.sink?.eof();
    }
    this.state = "removed";
    this.io.removed(this.id);
  }
}

/**
 * A receive buffer with a pull API and an optional Node Readable view. Bytes count as consumed
 * (and credit flows back) only when the user takes them: via `read()`, or when they leave the
 * Readable's internal buffer. So memory per channel stays bounded by the window.
 */
export class InboundQueue implements InboundSink {
  private chunks: Buffer[] = [];
  private head = 0;
  private ended = false;
  private failure: Error | null = null;
  private waiters: Array<() => void> = [];
  private readable: Readable | null = null;
  private pushedTotal = 0;
  private accountedTotal = 0;
  private readablePaused = true;
  private discard = false;
  private readableDone = false;
  /** Bytes in the queue (not including the Readable's buffer). */
  queued = 0;

  constructor(
    private readonly channel: () => Channel | undefined,
    private readonly readableHighWaterMark = 65_536,
  ) {}

  data(chunk: Buffer): void {
    if (this.discard) {
      this.channel()?.consumed(chunk.length);
      return;
    }
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.wake();
  }
  eof(): void {
    this.ended = true;
    this.wake();
  }
  error(err: Error): void {
    if (this.ended) return;
    this.failure = err;
    this.ended = true;
    this.wake();
  }

  private wake() {
    if (this.readable !== null) {
      if (this.failure !== null) {
        if (!this.readableDone) {
          this.readableDone = true;
          this.readable.destroy(this.failure);
        }
        return;
      }
      if (!this.readablePaused || (this.ended && this.queued === 0)) this.pump();
      return;
    }
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  /** Bytes received but not yet taken by the consumer (queue + Readable buffer). */
  get unconsumed(): number {
    return this.queued + (this.readable === null ? 0 : this.readable.readableLength);
  }

  /** Takes up to `max` bytes synchronously; null when nothing is queued. */
  take(max: number): Buffer | null {
    if (this.queued === 0) return null;
    const parts: Buffer[] = [];
    let got = 0;
    while (got < max && this.head < this.chunks.length) {
      const c = this.chunks[this.head]!;
      if (c.length <= max - got) {
        parts.push(c);
        got += c.length;
        this.head++;
      } else {
        const n = max - got;
        parts.push(c.subarray(0, n));
        this.chunks[this.head] = c.subarray(n);
        got += n;
      }
    }
    if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    } else if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    }
    this.queued -= got;
    this.channel()?.consumed(got);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, got);
  }

  /** Resolves with up to `max` bytes; an empty Buffer at EOF; rejects if the channel failed. */
  async read(max: number): Promise<Buffer> {
    if (this.readable !== null)
      throw new AgentError("SM_AGENT_INVALID_ARGS", "this stream is consumed as a Readable");
    for (;;) {
      const b = this.take(max);
      if (b !== null) return b;
      if (this.failure !== null) throw this.failure;
      if (this.ended) return Buffer.alloc(0);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
      });
    }
  }

  /** Drops everything queued and everything that arrives later (credit keeps flowing). */
  drain(): void {
    if (this.readable !== null) return;
    this.discard = true;
    if (this.queued > 0) this.take(this.queued);
  }

  /** A Node Readable over this queue (created once). Backpressure = credit. */
  toReadable(): Readable {
    return this.readable ?? queueReadable(this, this.readableHighWaterMark);
  }

  /**
   * Makes `r` (a Readable or the read side of a Duplex) the consumer of this queue. The stream's
   * `read()` must call `readRequested()` and its `destroy()` must call `readableDestroyed()`.
   */
  bind<R extends Readable>(r: R): R {
    if (this.readable !== null) throw new AgentError("SM_AGENT_INVALID_ARGS", "stream already bound");
    if (this.chunks.length > this.head && this.queued === 0) this.chunks = [];
    this.readable = r;
    return r;
  }

  readRequested(): void {
    this.readablePaused = false;
    this.pump();
  }

  readableDestroyed(): void {
    this.readableDone = true;
    const ch = this.channel();
    if (ch !== undefined && ch.state === "open") ch.abort();
  }

  private account(): void {
    const r = this.readable!;
    const consumed = this.pushedTotal - r.readableLength - this.accountedTotal;
    if (consumed > 0) {
      this.accountedTotal += consumed;
      this.channel()?.consumed(consumed);
    }
  }

  private pump(): void {
    const r = this.readable!;
    if (this.readableDone) return;
    this.account();
    while (this.head < this.chunks.length) {
      const c = this.chunks[this.head]!;
      this.chunks[this.head++] = EMPTY;
      this.queued -= c.length;
      this.pushedTotal += c.length;
      const more = r.push(c);
      this.account();
      if (!more) {
        this.readablePaused = true;
        break;
      }
    }
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    }
    if (this.queued === 0 && this.ended) {
      this.readableDone = true;
      if (this.failure !== null) r.destroy(this.failure);
      else r.push(null);
    }
  }
}

const EMPTY = Buffer.alloc(0);
