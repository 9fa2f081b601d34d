/**
 * Idle pausing on real VMs (issue 20): an idle pooled VM has its vCPUs stopped (QEMU reports
 * "paused"), a woken VM has a current clock and answers; a paused VM whose QEMU was killed -9 while
 * idle is never handed out; a pool bigger than the host's memory fails with SM_POOL_MEMORY.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool } from "../../packages/core/src/index";
import { INTERNAL } from "../../packages/core/src/vm";
import { type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let image: Image;
const pools: Pool[] = [];

beforeAll(async () => {
  refs = await fixtureRefs();
  image = await Image.build({ ref: refs.busybox, snapshotsDir: sharedSnapshotsDir() });
  // The bake's own VM (handed to the first pool when this run baked) is not a pooled restore: stop it.
  await (image as unknown as { takeHandoff(): { stop(): Promise<void> } | undefined }).takeHandoff()?.stop();
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.shutdown()));
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Scheduler state of a process ("S" sleeping, "R" running, ...) and its CPU ticks so far. */
function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return Number(f[11]) + Number(f[12]);
}

async function waitIdle(pool: Pool, count: number): Promise<void> {
  while (pool.stats().idle < count) await sleep(100);
  await sleep(500); // pauses start one turn after a VM went idle
}

describe("idle pooled VMs (real QEMU)", () => {
  it("an idle VM uses no CPU while paused; acquire wakes it with the clock set again", async () => {
    const pool = await image.pool({ min: 1, max: 1, restoreOnRelease: false });
    pools.push(pool);
    await waitIdle(pool, 1);
    let vm = await pool.acquire();
    const pid = vm[INTERNAL]()?.live.pid as number;
    await vm.release();
    await sleep(1500);
    // paused: the vCPU threads do not run; QEMU's main loop may tick a little
    const t0 = cpuTicks(pid);
    await sleep(3000);
    const used = cpuTicks(pid) - t0; // in 1/100 s over 3 s
    expect(used).toBeLessThanOrEqual(3);
    vm = await pool.acquire();
    const out = await vm.exec({ argv: ["date", "+%s"] });
    expect(out.exitCode).toBe(0);
    // The guest clock stood still while paused; the wake set it again.
    expect(Math.abs(Number(out.stdout.toString().trim()) - Date.now() / 1000)).toBeLessThan(5);
    await vm.release();
    await pool.shutdown();
  });

  it("a paused VM whose QEMU was killed -9 while idle is replaced, never handed out", async () => {
    const pool = await image.pool({ min: 1, max: 1, restoreOnRelease: false });
    pools.push(pool);
    await waitIdle(pool, 1);
    let vm = await pool.acquire();
    const pid = vm[INTERNAL]()?.live.pid as number;
    await vm.release();
    await sleep(500);
    execFileSync("kill", ["-9", String(pid)]);
    vm = await pool.acquire();
    expect(vm[INTERNAL]()?.live.pid).not.toBe(pid);
    const out = await vm.exec({ argv: ["echo", "alive"] });
    expect(out.stdout.toString()).toBe("alive\n");
    await vm.release();
    await pool.shutdown();
  });

  it("killed -9 in the same turn as the acquire (exit not yet observed): still never handed out", async () => {
    const pool = await image.pool({ min: 2, max: 2, restoreOnRelease: false });
    pools.push(pool);
    await waitIdle(pool, 2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    const pidA = a[INTERNAL]()?.live.pid as number;
    const pidB = b[INTERNAL]()?.live.pid as number;
    await a.release();
    await b.release();
    await sleep(500);
    process.kill(pidA, "SIGKILL");
    process.kill(pidB, "SIGKILL");
    const vm = await pool.acquire();
    const pid = vm[INTERNAL]()?.live.pid;
    expect(pid).not.toBe(pidA);
    expect(pid).not.toBe(pidB);
    expect((await vm.exec({ argv: ["true"] })).exitCode).toBe(0);
    await vm.release();
    await pool.shutdown();
  });

  it("a pool bigger than the host's memory fails with SM_POOL_MEMORY before any VM starts", async () => {
    const err = await image.pool({ min: 4096, max: 4096 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "SM_POOL_MEMORY" });
    expect((err as Error).message).toMatch(
      /needs about \d+ MiB .* only \d+ MiB is available \(MemAvailable\)/,
    );
  });
});
