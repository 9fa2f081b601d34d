import { tmpdir } from "node:os";
import { describe, expect, it } from "vitest";
import { RingBuffer, spawnVmm } from "./process";

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

describe("spawnVmm", () => {
  /** Handles of child processes and their pipes that keep Node's event loop alive. */
  const holding = () =>
    process.getActiveResourcesInfo().filter((r) => r === "ProcessWrap" || r === "PipeWrap").length;

  it("keeps the event loop alive by default; unref'd, its process and pipes do not", async () => {
    const base = holding();
    const kept = spawnVmm("/bin/sleep", ["30"], tmpdir());
    expect(holding()).toBe(base + 3); // the process, its stdout and stderr pipes
    const loose = spawnVmm("/bin/sleep", ["30"], tmpdir(), true);
    expect(holding()).toBe(base + 3);
    const closed = new Promise((r) => kept.child.once("close", r));
    for (const v of [kept, loose]) v.child.kill("SIGKILL");
    // an unref'd process is still supervised: its exit is seen and it is reaped
    expect((await loose.exit).signal).toBe("SIGKILL");
    await closed;
    for (let i = 0; i < 50 && holding() > base; i++) await new Promise((r) => setTimeout(r, 20));
    expect(holding()).toBe(base);
  });
});
