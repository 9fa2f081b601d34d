/**
 * The share server's transport: splits the byte stream into whole FUSE requests (each starts with
 * its little-endian u32 length, struct fuse_in_header), hands them to the server, writes the replies
 * back, and applies back-pressure: the input is paused while `maxInFlight` handlers run or while the
 * output does not drain. Knows nothing about what a request means.
 */
import type { Duplex } from "node:stream";
import { EMPTY } from "./host-fs";
import { IN_HEADER_SIZE, MAX_REQUEST_SIZE } from "./proto";

/**
 * Handles one whole request. Returns the reply (bytes to write; the promise never rejects) or null
 * when the request was handled inline and has no reply (FORGET...): then it is not counted in flight.
 */
export type RequestHandler = (msg: Buffer) => Promise<Buffer> | null;

export interface TransportOptions {
  maxInFlight: number;
  /** Share tag, for error messages. */
  tag: string;
  onError: (e: Error) => void;
}

export class FuseTransport {
  /** Requests parsed since construction. */
  requests = 0;
  /** Handlers running now. */
  inFlight = 0;
  /** Highest number of handlers running at once. */
  peakInFlight = 0;
  /** Times the input stream was paused for back-pressure. */
  pauses = 0;
  private stream: Duplex | null = null;

  constructor(private readonly opts: TransportOptions) {}

  /** Destroys the stream being served, if any (run() then resolves). */
  destroy(): void {
    const s = this.stream;
    if (s && !s.destroyed) s.destroy();
  }

  /**
   * Serves `stream` until it ends, closes or errors, and every handler started has replied. A
   * malformed message length destroys the stream (the guest misbehaved).
   */
  async run(stream: Duplex, handle: RequestHandler): Promise<void> {
    const { maxInFlight, tag, onError } = this.opts;
    this.stream = stream;
    await new Promise<void>((resolve) => {
      let pending: Buffer = EMPTY;
      let ended = false;
      let writeBlocked = false;
      let pausedByUs = false;
      let finished = false;

      const finish = () => {
        if (finished || !ended || this.inFlight > 0) return;
        finished = true;
        stream.off("data", onData);
        if (!stream.destroyed && stream.writable) stream.end();
        resolve();
      };
      const send = (buf: Buffer) => {
        if (stream.destroyed || !stream.writable || stream.writableEnded) return;
        if (!stream.write(buf) && !writeBlocked) {
          writeBlocked = true;
          stream.once("drain", () => {
            writeBlocked = false;
            pump();
          });
        }
      };
      const done = () => {
        if (finished) return;
        if (ended) finish();
        else pump();
      };
      const pump = () => {
        while (!ended) {
          if (this.inFlight >= maxInFlight || writeBlocked) {
            if (!pausedByUs) {
              pausedByUs = true;
              this.pauses++;
              stream.pause();
            }
            return;
          }
          if (pending.length < 4) break;
          const len = pending.readUInt32LE(0);
          if (len < IN_HEADER_SIZE || len > MAX_REQUEST_SIZE) {
            onError(new Error(`share ${tag}: invalid FUSE request length ${len}; closing`));
            ended = true;
            pending = EMPTY;
            stream.destroy();
            finish();
            return;
          }
          if (pending.length < len) break;
          const msg = pending.subarray(0, len);
          pending = pending.length === len ? EMPTY : pending.subarray(len);
          this.requests++;
          const reply = handle(msg);
          if (reply === null) continue;
          this.inFlight++;
          if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
          void reply.then((buf) => {
            this.inFlight--;
            send(buf);
            done();
          });
        }
        if (pausedByUs && !ended) {
          pausedByUs = false;
          stream.resume();
        }
      };
      const onData = (chunk: Buffer) => {
        if (ended) return;
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        pump();
      };
      const onEnd = () => {
        ended = true;
        finish();
      };
      stream.on("data", onData);
      stream.once("end", onEnd);
      stream.once("close", onEnd);
      stream.on("error", (e) => {
        onError(e instanceof Error ? e : new Error(String(e)));
        onEnd();
      });
    });
    this.stream = null;
  }
}
