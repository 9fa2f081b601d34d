import { describe, expect, it } from "vitest";
import { hold, holdCount, whileHeld } from "./keepalive";

/** Timers that keep this process's event loop alive right now. */
const refTimers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

describe("keepalive", () => {
  it("holds the event loop only while an operation is in flight, however often it is taken", async () => {
    const idle = refTimers();
    for (let i = 0; i < 3; i++) {
      const a = hold();
      const b = hold();
      expect(holdCount()).toBe(2);
      expect(refTimers()).toBe(idle + 1);
      a();
      a(); // idempotent
      expect(refTimers()).toBe(idle + 1);
      b();
      expect(holdCount()).toBe(0);
      expect(refTimers()).toBe(idle);
    }
    let during = 0;
    await whileHeld(async () => {
      during = refTimers();
    });
    expect(during).toBe(idle + 1);
    expect(refTimers()).toBe(idle);
  });
});
