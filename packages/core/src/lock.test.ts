import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { acquireLock } from "./lock";

const dir = await mkdtemp(join(tmpdir(), "sm-core-lock-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("bake lock", () => {
  it("serialises holders in one process", async () => {
    const order: string[] = [];
    const a = await acquireLock(dir, "k1", { pollMs: 10 });
    const waiting = acquireLock(dir, "k1", { pollMs: 10 }).then((l) => {
      order.push("b");
      return l;
    });
    await new Promise((r) => setTimeout(r, 50));
    order.push("a-release");
    await a.release();
    const b = await waiting;
    expect(order).toEqual(["a-release", "b"]);
    await b.release();
  });

  it("takes over a lock whose pid is dead", async () => {
    // A real process that exits at once: its pid is dead afterwards.
    const child = spawn(process.execPath, ["-e", ""]);
    const pid = child.pid!;
    await new Promise((r) => child.on("exit", r));
    await writeFile(
      join(dir, "k2.lock"),
      JSON.stringify({ pid, hostname: hostname(), startedAt: Date.now(), token: "x" }),
    );
    const l = await acquireLock(dir, "k2", { pollMs: 10, timeoutMs: 2000 });
    await l.release();
  });

  it("waits on a live holder until the timeout", async () => {
    await writeFile(
      join(dir, "k3.lock"),
      JSON.stringify({ pid: process.pid, hostname: hostname(), startedAt: Date.now(), token: "y" }),
    );
    await expect(acquireLock(dir, "k3", { pollMs: 10, timeoutMs: 100 })).rejects.toThrow(/timed out/);
  });
});
