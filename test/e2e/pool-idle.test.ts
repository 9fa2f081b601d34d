/**
 * Idle freezing on real VMs (issue 20): an idle pooled VM has its VMM process stopped (no CPU at all),
 * a thawed VM has a current clock and answers; one frozen longer than the guest kernel's lockup
 * thresholds reports no lockup; a frozen VM whose QEMU was killed -9 while idle is never handed out;
 * a pool bigger than the host's memory fails with SM_POOL_MEMORY.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool } from "../../packages/core/src/index";
import { INTERNAL } from "../../packages/core/src/vm";
import { type FixtureRefs, fixtureRefs, qemuPids, sharedSnapshotsDir } from "./_shared";

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

/** A process's scheduler state ("T" stopped by a signal, "S" sleeping, ...) and its CPU ticks so far. */
function procStat(pid: number): { state: string; ticks: number } {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return { state: f[0] ?? "", ticks: Number(f[11]) + Number(f[12]) };
}

async function waitIdle(pool: Pool, count: number): Promise<void> {
  while (pool.stats().idle < count) await sleep(100);
  await sleep(500); // freezing starts one turn after a VM went idle
}

describe("idle pooled VMs (real QEMU)", () => {
  it("an idle VM is frozen and uses no CPU at all; acquire thaws it with its clock right", async () => {
    const pool = await image.pool({ min: 1, max: 1, restoreOnRelease: false });
    pools.push(pool);
    await waitIdle(pool, 1);
    let vm = await pool.acquire();
    const pid = vm[INTERNAL]()?.live.pid as number;
    await vm.release();
    await sleep(1500);
    const t0 = procStat(pid);
    expect(t0.state).toBe("T");
    await sleep(3000);
    expect(procStat(pid).ticks - t0.ticks).toBe(0); // in 1/100 s over 3 s: not even QEMU's main loop
    vm = await pool.acquire();
    const out = await vm.exec({ argv: ["date", "+%s"] });
    expect(out.exitCode).toBe(0);
    expect(procStat(pid).state).not.toBe("T");
    // The guest clock ran on while frozen (it follows the host's): no resume needed to set it.
    expect(Math.abs(Number(out.stdout.toString().trim()) - Date.now() / 1000)).toBeLessThan(5);
    await vm.release();
    await pool.shutdown();
  });

  it("frozen past the guest kernel's lockup thresholds (20 s): no lockup or stall report, the clock right", async () => {
    const pool = await image.pool({ min: 1, max: 1, restoreOnRelease: false });
    pools.push(pool);
    await waitIdle(pool, 1);
    let vm = await pool.acquire();
    const before = await vm.exec({ argv: ["dmesg"] });
    await vm.release();
    await sleep(26_000);
    vm = await pool.acquire();
    const out = await vm.exec({ argv: ["sh", "-c", "date +%s; dmesg"] });
    const [date, ...dmesg] = out.stdout.toString().split("\n");
    expect(Math.abs(Number(date) - Date.now() / 1000)).toBeLessThan(5);
    const added = dmesg.slice(before.stdout.toString().split("\n").length - 1).join("\n");
    expect(added).not.toMatch(/soft lockup|rcu.*stall|hung_task|watchdog: BUG/i);
    await vm.release();
    await pool.shutdown();
  }, 60_000);

  it("the spare waits frozen (no CPU) and is thawed when a create takes it; the fresh VM answers", async () => {
    const pool = await image.pool({ min: 0, max: 1 }); // restoreOnRelease: a fresh VM every acquire
    pools.push(pool);
    await (await pool.acquire()).release();
    const vm = await pool.acquire(); // from here on a spare is restored and greeted beside it
    const own = qemuPids(join(vm.agentSocketPath, ".."))[0];
    const others = () => qemuPids(`vm-${process.pid}-`).filter((p) => p !== own);
    for (let i = 0; i < 600 && others().length !== 1; i++) await sleep(50);
    const [spare] = others();
    expect(spare).toBeGreaterThan(0);
    await sleep(1500); // the spare is frozen once it has waited 200 ms unused
    const t0 = procStat(spare as number);
    expect(t0.state).toBe("T");
    await sleep(2000);
    expect(procStat(spare as number).ticks - t0.ticks).toBe(0);
    await vm.release();
    const next = await pool.acquire();
    expect(qemuPids(join(next.agentSocketPath, ".."))).toContain(spare);
    const out = await next.exec({ argv: ["date", "+%s"] });
    expect(Math.abs(Number(out.stdout.toString().trim()) - Date.now() / 1000)).toBeLessThan(5);
    expect(procStat(spare as number).state).not.toBe("T");
    await next.release();
    await pool.shutdown();
  });

  it("a frozen VM whose QEMU was killed -9 while idle is replaced, never handed out", async () => {
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
