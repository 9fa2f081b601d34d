import { describe, expect, it } from "vitest";
import { RingBuffer } from "./process";

describe("RingBuffer (QEMU stderr)", () => {
  it("keeps the last bytes and tells what came after a mark", () => {
    const r = new RingBuffer(10);
    r.push(Buffer.from("abcdef"));
    const mark = r.written;
    expect(r.since(mark)).toBe("");
    r.push(Buffer.from("ghij"));
    expect(r.toString()).toBe("abcdefghij");
    expect(r.since(mark)).toBe("ghij");
    r.push(Buffer.from("klmnop")); // wraps: the oldest bytes go
    expect(r.toString()).toBe("ghijklmnop");
    expect(r.written).toBe(16);
    expect(r.since(mark)).toBe("ghijklmnop");
    // a mark older than what the ring still holds yields only what is held
    expect(r.since(0)).toBe("ghijklmnop");
    expect(r.since(r.written)).toBe("");
  });
});
