/**
 * Node stream views of channels (SPEC §8): the one place where a Channel or an InboundQueue becomes
 * a Readable, a Writable or a Duplex. Backpressure is credit in both directions: a write resolves
 * once the bytes went out within the peer's credit, and bytes count as consumed (credit flows back)
 * only when they leave the Readable's buffer.
 */
import { Duplex, Readable, Writable } from "node:stream";
import type { Channel, InboundQueue } from "./channel";
import { AgentError } from "./errors";

/** The channel behind a stream; undefined once the session removed it. */
type ChannelRef = () => Channel | undefined;
type Callback = (err?: Error | null) => void;

function writeChunk(channel: ChannelRef, closedMessage: string, chunk: Buffer, cb: Callback): void {
  const ch = channel();
  if (ch === undefined) cb(new AgentError("SM_AGENT_LOST", closedMessage));
  else ch.write(chunk).then(() => cb(), cb);
}

function endChannel(channel: ChannelRef, cb: Callback): void {
  const ch = channel();
  if (ch === undefined) cb();
  else ch.end().then(() => cb(), cb);
}

/** A Readable over `q`, bound as its consumer. Destroying it aborts the channel. */
export function queueReadable(q: InboundQueue, highWaterMark: number): Readable {
  return q.bind(
    new Readable({
      highWaterMark,
      read() {
        q.readRequested();
      },
      destroy(err, cb) {
        q.readableDestroyed();
        cb(err);
      },
    }),
  );
}

/**
 * A Writable over the sending half of a one-way channel (process stdin): `end()` sends eof,
 * `destroy()` aborts the channel while our half is still open.
 */
export function channelWritable(channel: ChannelRef, highWaterMark: number, closedMessage: string): Writable {
  return new Writable({
    highWaterMark,
    write(chunk: Buffer, _enc, cb) {
      writeChunk(channel, closedMessage, chunk, cb);
    },
    final(cb) {
      endChannel(channel, cb);
    },
    destroy(err, cb) {
      const ch = channel();
      if (ch !== undefined && ch.state === "open" && ch.sendOpen) ch.abort();
      cb(err);
    },
  });
}

/**
 * A Duplex over a bidirectional channel (TCP forward, share): readable = what the peer sends
 * (through `q`), writable = what we send; `end()` half-closes, `destroy()` aborts the channel.
 */
export function channelDuplex(q: InboundQueue, channel: ChannelRef, highWaterMark: number): Duplex {
  return q.bind(
    new Duplex({
      readableHighWaterMark: highWaterMark,
      writableHighWaterMark: highWaterMark,
      read() {
        q.readRequested();
      },
      write(chunk: Buffer, _enc, cb) {
        writeChunk(channel, "the guest connection is closed", chunk, cb);
      },
      final(cb) {
        endChannel(channel, cb);
      },
      destroy(err, cb) {
        q.readableDestroyed();
        cb(err);
      },
    }),
  );
}
