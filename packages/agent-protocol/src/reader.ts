/**
 * Incremental frame reader (SPEC §1, §4.4). Checks the length prefix before it allocates, so it
 * never holds more than `4 + maxFrame` bytes of a partial frame. Complete frames inside one input
 * chunk are handed out as views of that chunk (no copy).
 */
import { FRAME_HEADER_BYTES, MAX_FRAME } from "./constants";
import { type AgentError, violation } from "./errors";

/** `"t"` `"hello"` — the bytes after the map header of every hello frame (SPEC §4.4). */
const HELLO_MARKER = Buffer.from([0x61, 0x74, 0x65, 0x68, 0x65, 0x6c, 0x6c, 0x6f]);
/** Bytes that could still start a frame whose marker is not yet complete: 4 length + 1 header + 7. */
const SCAN_KEEP = FRAME_HEADER_BYTES + 1 + HELLO_MARKER.length - 1;

/** What a scan predicate decides about a candidate hello frame. */
export type ScanVerdict = "accept" | "skip-frame" | "skip-byte";

export interface FrameReaderOptions {
  /** Largest accepted frame body, bytes. */
  maxFrame?: number;
  /** Called for each complete frame body (without the length prefix). */
  onFrame: (body: Buffer) => void;
  /** Called once with SM_FRAME_EMPTY / SM_FRAME_TOO_LARGE; the reader stops. */
  onError: (err: AgentError) => void;
}

export class FrameReader {
  maxFrame: number;
  private readonly onFrame: (body: Buffer) => void;
  private readonly onError: (err: AgentError) => void;
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerLen = 0;
  private body: Buffer | null = null;
  private bodyLen = 0;
  private stopped = false;
  private scanPredicate: ((body: Buffer) => ScanVerdict) | null = null;
  private scanBuf: Buffer | null = null;

  constructor(options: FrameReaderOptions) {
    this.maxFrame = options.maxFrame ?? MAX_FRAME;
    this.onFrame = options.onFrame;
    this.onError = options.onError;
  }

  /**
   * Switches to resynchronisation (SPEC §4.4): input is scanned for hello frames, each candidate is
   * given to `predicate`; on "accept" the reader returns to strict framing right after that frame.
   * Any partial strict-mode state is dropped.
   */
  scan(predicate: (body: Buffer) => ScanVerdict): void {
    this.scanPredicate = predicate;
    this.scanBuf = null;
    this.body = null;
    this.headerLen = 0;
    this.stopped = false;
  }

  get scanning(): boolean {
    return this.scanPredicate !== null;
  }

  /** Stops delivering frames (after a violation or at session end). */
  stop(): void {
    this.stopped = true;
    this.body = null;
    this.scanBuf = null;
    this.scanPredicate = null;
  }

  /** Bytes currently held for partial frames. */
  get bufferedBytes(): number {
    return this.headerLen + (this.body === null ? 0 : this.bodyLen) + (this.scanBuf?.length ?? 0);
  }

  push(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.scanPredicate !== null) {
      this.pushScan(chunk);
      return;
    }
    let pos = 0;
    const len = chunk.length;
    while (pos < len && !this.stopped && this.scanPredicate === null) {
      if (this.body === null) {
        let n: number;
        if (this.headerLen === 0 && len - pos >= FRAME_HEADER_BYTES) {
          n = chunk.readUInt32BE(pos);
          pos += FRAME_HEADER_BYTES;
        } else {
          const take = Math.min(FRAME_HEADER_BYTES - this.headerLen, len - pos);
          chunk.copy(this.header, this.headerLen, pos, pos + take);
          this.headerLen += take;
          pos += take;
          if (this.headerLen < FRAME_HEADER_BYTES) return;
          this.headerLen = 0;
          n = this.header.readUInt32BE(0);
        }
        if (n === 0) {
          this.fail(violation("SM_FRAME_EMPTY", "frame length 0"));
          return;
        }
        if (n > this.maxFrame) {
          this.fail(violation("SM_FRAME_TOO_LARGE", `frame length ${n} exceeds maxFrame ${this.maxFrame}`));
          return;
        }
        if (len - pos >= n) {
          const body = chunk.subarray(pos, pos + n);
          pos += n;
          this.onFrame(body);
          continue;
        }
        this.body = Buffer.allocUnsafe(n);
        this.bodyLen = chunk.copy(this.body, 0, pos);
        return;
      }
      const body = this.body;
      const take = Math.min(body.length - this.bodyLen, len - pos);
      chunk.copy(body, this.bodyLen, pos, pos + take);
      this.bodyLen += take;
      pos += take;
      if (this.bodyLen === body.length) {
        this.body = null;
        this.bodyLen = 0;
        this.onFrame(body);
      }
    }
    if (pos < len && !this.stopped && this.scanPredicate !== null) this.pushScan(chunk.subarray(pos));
  }

  private fail(err: AgentError): void {
    this.stop();
    this.onError(err);
  }

  private pushScan(chunk: Buffer): void {
    let buf =
      this.scanBuf === null || this.scanBuf.length === 0 ? chunk : Buffer.concat([this.scanBuf, chunk]);
    for (;;) {
      const m = buf.indexOf(HELLO_MARKER, FRAME_HEADER_BYTES + 1);
      if (m < 0) {
        this.scanBuf = Buffer.from(buf.subarray(Math.max(0, buf.length - SCAN_KEEP)));
        return;
      }
      const p = m - FRAME_HEADER_BYTES - 1;
      const mapHeader = buf[m - 1]!;
      const n = buf.readUInt32BE(p);
      if (mapHeader < 0xa1 || mapHeader > 0xb7 || n < 1 || n > this.maxFrame) {
        buf = buf.subarray(p + 1);
        continue;
      }
      if (buf.length < p + FRAME_HEADER_BYTES + n) {
        this.scanBuf = Buffer.from(buf.subarray(p));
        return;
      }
      const body = buf.subarray(p + FRAME_HEADER_BYTES, p + FRAME_HEADER_BYTES + n);
      const verdict = this.scanPredicate!(body);
      if (this.stopped) return;
      if (verdict === "accept") {
        this.scanPredicate = null;
        this.scanBuf = null;
        const rest = buf.subarray(p + FRAME_HEADER_BYTES + n);
        if (rest.length > 0) this.push(rest);
        return;
      }
      buf = buf.subarray(verdict === "skip-frame" ? p + FRAME_HEADER_BYTES + n : p + 1);
    }
  }
}
