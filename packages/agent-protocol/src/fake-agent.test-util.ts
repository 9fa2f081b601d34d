// A scripted raw peer for protocol-violation tests (not the reference agent).
import type { Socket } from "node:net";
import { decodeFrame, encodeFrame, type Frame } from "./frames";
import { FrameReader } from "./reader";

export interface FakeAgent {
  frames: Frame[];
  send(frame: Frame | Buffer): void;
  next(pred?: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
}

/** Answers the host hello like an agent would, then records every frame and lets the test script replies. */
export function fakeAgent(sock: Socket, opts: { window?: number; answerHello?: boolean } = {}): FakeAgent {
  const frames: Frame[] = [];
  const waiters: Array<{ pred: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];
  const send = (f: Frame | Buffer) => {
    if (!sock.destroyed) sock.write(Buffer.isBuffer(f) ? f : encodeFrame(f));
  };
  const reader = new FrameReader({
    onFrame: (body) => {
      let f: Frame;
      try {
        f = decodeFrame(body, "host-to-agent");
      } catch {
        return;
      }
      frames.push(f);
      if (f.t === "hello" && "host" in f && opts.answerHello !== false) {
        send({
          t: "hello",
          v: 1,
          agent: "fake",
          caps: [],
          maxFrame: 5242880,
          window: opts.window ?? 262144,
          ready: true,
          listening: null,
          bootMs: 1,
          nonce: f.nonce,
        });
      }
      for (let i = 0; i < waiters.length; i++) {
        if (waiters[i]!.pred(f)) {
          waiters.splice(i, 1)[0]!.resolve(f);
          break;
        }
      }
    },
    onError: () => {},
  });
  sock.on("data", (c: Buffer) => reader.push(c));
  sock.on("error", () => {});
  return {
    frames,
    send,
    next(pred = () => true, timeoutMs = 5000) {
      const have = frames.find(pred);
      if (have !== undefined) {
        frames.splice(frames.indexOf(have), 1);
        return Promise.resolve(have);
      }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("fake agent: timed out waiting for a frame")), timeoutMs);
        waiters.push({
          pred,
          resolve: (f) => {
            clearTimeout(t);
            frames.splice(frames.indexOf(f), 1);
            resolve(f);
          },
        });
      });
    },
  };
}
