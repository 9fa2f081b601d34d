// Idle pausing and memory admission of pools (pure logic: test doubles, no VM, nothing timed).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { IdleVm, idlePauseEnabled } from "./idle";
import { Image } from "./image";
import { poolMemoryCheck, reserveMib } from "./memory";
import { SPARE_PAUSE_DELAY_MS } from "./pool";
import type { LiveVmPort } from "./ports";
import { setRuntime } from "./runtime-port";
import { type FakeLive, fakeRuntime } from "./testing/fakes";
import { INTERNAL } from "./vm";

const root = await mkdtemp(join(tmpdir(), "sm-core-idle-"));
afterAll(() => rm(root, { recursive: true, force: true }));

let rt: ReturnType<typeof fakeRuntime>;
let n = 0;
let snapshotsDir: string;
/** Everything the fake VMs did, in order: "freeze 1001", "thaw 1001", "resume 1001", "exec 1001 true". */
let log: string[];

type Freezable = FakeLive & {
  freeze(): void;
  thaw(): void;
  alive(): boolean;
  frozen: boolean;
  zombie: boolean;
};

/**
 * Give a fake VM freeze/thaw/alive like the QEMU adapter's, logging each call. Like a real VMM, a
 * request sent while it is frozen waits in the stream until the thaw, and fails as a lost agent when
 * the VM is stopped instead.
 */
function freezable(l: FakeLive): Freezable {
  const p = l as Freezable;
  p.frozen = false;
  p.zombie = false;
  let waiters: { run: () => void; fail: (e: Error) => void }[] = [];
  const running = (what: string) =>
    p.frozen
      ? new Promise<void>((run, fail) => {
          log.push(`${what} queued ${l.pid}`);
          waiters.push({ run, fail });
        })
      : Promise.resolve();
  const settle = (ok: boolean) => {
    const w = waiters;
    waiters = [];
    for (const x of w)
      ok ? x.run() : x.fail(Object.assign(new Error("agent lost"), { code: "SM_AGENT_LOST" }));
  };
  p.freeze = () => {
    if (p.stopped) throw new Error("VMM gone");
    log.push(`freeze ${l.pid}`);
    p.frozen = true;
  };
  p.thaw = () => {
    if (!p.frozen) return;
    log.push(`thaw ${l.pid}`);
    p.frozen = false;
    settle(true);
  };
  p.alive = () => !p.zombie;
  const stop = l.stop.bind(l);
  l.stop = async () => {
    settle(false);
    return stop();
  };
  const resume = l.agent.resume.bind(l.agent);
  l.agent.resume = async (t, e) => {
    await running("resume");
    log.push(`resume ${l.pid}`);
    return resume(t, e);
  };
  const exec = l.agent.exec.bind(l.agent);
  l.agent.exec = async (a) => {
    await running("exec");
    log.push(`exec ${l.pid} ${a.argv.join(" ")}`);
    return exec(a);
  };
  const readFile = l.agent.readFile.bind(l.agent);
  l.agent.readFile = async (path: string) => {
    await running("readFile");
    return readFile(path);
  };
  const writeFile = l.agent.writeFile.bind(l.agent);
  l.agent.writeFile = async (path: string, data: Buffer) => {
    await running("writeFile");
    return writeFile(path, data);
  };
  return p;
}

beforeEach(async () => {
  rt = fakeRuntime(root);
  setRuntime(rt);
  snapshotsDir = join(root, `snaps-${n++}`);
  log = [];
  const backend = await rt.backend();
  const restore = backend.restore.bind(backend);
  backend.restore = async (spec) => freezable((await restore(spec)) as FakeLive);
});
afterEach(() => {
  setRuntime(undefined);
  delete process.env.SM_POOL_IDLE_PAUSE;
});

const turn = () => new Promise((r) => setTimeout(r, 5));

/** An image whose bake VM is not handed to the pool (every pooled VM is a restore). */
async function image(): Promise<Image> {
  const img = await Image.build({ ref: "busybox", snapshotsDir });
  await img.takeHandoff()?.stop();
  return img;
}

async function waitIdle(pool: { stats(): { idle: number } }, count: number): Promise<void> {
  while (pool.stats().idle < count) await turn();
  await turn(); // the freeze comes one turn after the VM went idle
}

describe("idle pausing (fake VMs)", () => {
  it("an idle pooled VM is frozen; acquire thaws it after the caller's turn, with no resume: the exec waits in the socket", async () => {
    const img = await image();
    const pool = await img.pool({ min: 1, max: 1 });
    await waitIdle(pool, 1);
    const live = rt.state.lives.at(-1) as Freezable;
    expect(live.frozen).toBe(true);
    expect(log).toEqual([`resume ${live.pid}`, `freeze ${live.pid}`]);
    const vm = await pool.acquire();
    // the handle comes first: the VMM is still frozen, the thaw is sent after this turn
    expect(live.frozen).toBe(true);
    const out = await vm.exec({ argv: ["true"] });
    expect(out.exitCode).toBe(0);
    expect(log.slice(2)).toEqual([`exec queued ${live.pid}`, `thaw ${live.pid}`, `exec ${live.pid} true`]);
    // the same VM, its clock running on: no second resume (clock, RNG) at the wake
    expect(live.agent.resumes.length).toBe(1);
    await vm.release();
    await pool.shutdown();
  });

  it("dirty reuse: a released VM is frozen again and thawed at the next acquire", async () => {
    const img = await image();
    const pool = await img.pool({ min: 1, max: 1, restoreOnRelease: false });
    await waitIdle(pool, 1);
    const live = rt.state.lives.at(-1) as Freezable;
    let vm = await pool.acquire();
    await vm.writeFile("/tmp/x", "kept");
    await vm.release();
    await turn();
    expect(live.frozen).toBe(true);
    vm = await pool.acquire();
    expect((await vm.readFile("/tmp/x")).toString()).toBe("kept");
    expect(log.filter((l) => l.startsWith("freeze")).length).toBe(2);
    expect(log.filter((l) => l.startsWith("thaw")).length).toBe(2);
    await vm.release();
    await pool.shutdown();
  });

  it("a VM created for a waiting acquire is handed over running, never frozen", async () => {
    const img = await image();
    const pool = await img.pool({ min: 0, max: 1 });
    const vm = await pool.acquire();
    await turn();
    expect(log.some((l) => l.startsWith("freeze"))).toBe(false);
    await vm.exec({ argv: ["true"] });
    await vm.release();
    await pool.shutdown();
  });

  it("a frozen VM whose VMM died while idle is never handed out: zombie (exit not yet seen) or exited", async () => {
    const img = await image();
    const pool = await img.pool({ min: 2, max: 2 });
    await waitIdle(pool, 2);
    const [a, b] = rt.state.lives.slice(-2) as Freezable[];
    // killed a moment ago: the process is a zombie, its exit not observed yet
    if (a) a.zombie = true;
    const vm1 = await pool.acquire();
    expect(vm1[INTERNAL]()?.live).toBe(b);
    // the other one crashes (exit observed): a new VM is restored for the next acquire
    b?.crash();
    await vm1.release();
    const vm2 = await pool.acquire();
    const live2 = vm2[INTERNAL]()?.live as Freezable;
    expect(live2).not.toBe(a);
    expect(live2).not.toBe(b);
    expect((await vm2.exec({ argv: ["echo", "ok"] })).stdout.toString()).toBe("ok\n");
    await vm2.release();
    await pool.shutdown();
  });

  it("SM_POOL_IDLE_PAUSE=0 keeps idle VMs running (the before/after switch)", async () => {
    process.env.SM_POOL_IDLE_PAUSE = "0";
    expect(idlePauseEnabled()).toBe(false);
    const img = await image();
    const pool = await img.pool({ min: 1, max: 1 });
    await waitIdle(pool, 1);
    expect(log.some((l) => l.startsWith("freeze"))).toBe(false);
    const vm = await pool.acquire();
    await vm.exec({ argv: ["true"] });
    expect(log.some((l) => l.startsWith("thaw"))).toBe(false);
    await vm.release();
    await pool.shutdown();
  });

  it("acquired and released in the same turn: thawed, then frozen again (never left running)", async () => {
    const img = await image();
    const pool = await img.pool({ min: 1, max: 1, restoreOnRelease: false });
    await waitIdle(pool, 1);
    const live = rt.state.lives.at(-1) as Freezable;
    let vm = await pool.acquire();
    await vm.release();
    await turn();
    expect(live.frozen).toBe(true);
    expect(log.slice(-2)).toEqual([`thaw ${live.pid}`, `freeze ${live.pid}`]);
    vm = await pool.acquire();
    expect((await vm.exec({ argv: ["true"] })).exitCode).toBe(0);
    expect(live.frozen).toBe(false);
    await vm.release();
    await pool.shutdown();
  });
});

describe("IdleVm", () => {
  it("a pause before the thaw of a wake was sent keeps it frozen; thawNow thaws at once; a gone VMM is not frozen", async () => {
    const r = fakeRuntime(root);
    const live = freezable((await (await r.backend()).restore({} as never)) as FakeLive);
    const idle = new IdleVm(live as LiveVmPort);
    idle.pause();
    expect(live.frozen).toBe(true);
    idle.wake();
    idle.checkedOut = false;
    idle.pause(); // idle again in the same turn: the thaw is dropped, the VM never ran
    await turn();
    expect(live.frozen).toBe(true);
    expect(idle.paused).toBe(true);
    idle.wake();
    expect(live.frozen).toBe(true); // the thaw comes after this turn
    idle.thawNow();
    expect(live.frozen).toBe(false);
    await turn();
    expect(log).toEqual([`freeze ${live.pid}`, `thaw ${live.pid}`]); // thawed once
    idle.checkedOut = false;
    await live.stop();
    idle.pause(); // freeze throws: the VM's exit marks it dead
    expect(idle.paused).toBe(false);
  });
});

describe("memory admission", () => {
  const est = { privateMib: 48, sharedMib: 60, accel: "tcg" };
  const mem = { availableMib: 4000, totalMib: 8000 };

  it("fits: no error; the reserve is max(256 MiB, 5 % of MemTotal)", () => {
    expect(reserveMib(8000)).toBe(400);
    expect(reserveMib(1000)).toBe(256);
    expect(() => poolMemoryCheck(est, { min: 2, max: 10 }, mem)).not.toThrow();
  });

  it("too many: SM_POOL_MEMORY naming the memory needed and available", () => {
    let err: unknown;
    try {
      poolMemoryCheck(est, { min: 100, max: 100 }, mem);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({
      code: "SM_POOL_MEMORY",
      details: { neededMib: 100 * 48 + 60 + 400, availableMib: 4000, perVmMib: 48, count: 100 },
    });
    expect((err as Error).message).toMatch(/min: 100 needs about 5260 MiB .* only 4000 MiB is available/);
    expect(() => poolMemoryCheck(est, { min: 0, max: 100 }, mem)).toThrow(/max: 100/);
  });

  it("image.pool() refuses a min the host cannot hold, before any VM starts", async () => {
    const img = await image();
    const restores = rt.state.restores;
    await expect(img.pool({ min: 4096, max: 4096 })).rejects.toMatchObject({ code: "SM_POOL_MEMORY" });
    expect(rt.state.restores).toBe(restores);
  });
});

describe("processAlive (the liveness check of a frozen VM at acquire)", () => {
  it("true for a running process; false for a zombie and for a process that is gone", async () => {
    const { spawn } = await import("node:child_process");
    const { processAlive } = await import("./runtime");
    expect(processAlive(process.pid)).toBe(true);
    const child = spawn("sleep", ["30"]);
    const pid = child.pid as number;
    expect(processAlive(pid)).toBe(true);
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    // dead at once, before Node reaped it (zombie or SIGKILL pending)
    expect(processAlive(pid)).toBe(false);
    await exited;
    expect(processAlive(pid)).toBe(false);
  });
});

describe("statSaysAlive (the stat line of a VMM's main thread)", () => {
  /** This process's own stat line with its state, flags and pending signals replaced. */
  async function statLine(comm: string, state: string, flags: number, signal: number): Promise<Buffer> {
    const { readFileSync } = await import("node:fs");
    const own = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, "latin1");
    const fields = own
      .slice(own.lastIndexOf(")") + 2)
      .trimEnd()
      .split(" ");
    fields[0] = state;
    fields[6] = String(flags);
    fields[28] = String(signal);
    return Buffer.from(`${process.pid} (${comm}) ${fields.join(" ")}\n`, "latin1");
  }
  const says = async (comm: string, state: string, flags: number, signal: number) => {
    const { statSaysAlive } = await import("./runtime");
    const b = await statLine(comm, state, flags, signal);
    return statSaysAlive(b, b.length);
  };

  it.runIf(process.platform === "linux")(
    "reads state, PF_EXITING and a pending SIGKILL, whatever the command name holds",
    async () => {
      expect(await says("qemu-system-x86", "S", 0x400040, 0)).toBe(true);
      expect(await says("qemu-system-x86", "R", 0x400040, 1 << 13)).toBe(true); // SIGPIPE pending: goes on
      expect(await says("qemu-system-x86", "Z", 0x400040, 0)).toBe(false);
      expect(await says("qemu-system-x86", "X", 0x400040, 0)).toBe(false);
      expect(await says("qemu-system-x86", "S", 0x400044, 0)).toBe(false); // PF_EXITING
      expect(await says("qemu-system-x86", "S", 0x80400044, 0)).toBe(false); // high flag bits too
      expect(await says("qemu-system-x86", "S", 0x400040, 1 << 8)).toBe(false); // SIGKILL pending
      expect(await says("a) Z 1 (b", "S", 0x400040, 0)).toBe(true); // ") Z" inside the name
      expect(await says("a) S 1 (b", "Z", 0x400040, 0)).toBe(false);
      const { statSaysAlive } = await import("./runtime");
      expect(statSaysAlive(Buffer.from("123 (trunc"), 10)).toBe(false);
    },
  );
});

describe("the spare (fake backend with prepareRestore)", () => {
  /** A pool whose next VM (the spare) is pre-started; its fake VMs freeze and thaw like QEMU's. */
  async function poolWithSpare() {
    rt = fakeRuntime(root, { prepared: "ok" });
    setRuntime(rt);
    const backend = await rt.backend();
    const prepare = backend.prepareRestore!.bind(backend);
    backend.prepareRestore = async (spec) => {
      const p = await prepare(spec);
      return { ...p, restore: async () => freezable((await p.restore()) as FakeLive) };
    };
    const restore = backend.restore.bind(backend);
    backend.restore = async (spec) => freezable((await restore(spec)) as FakeLive);
    const pool = await (await image()).pool({ min: 0, max: 1 });
    await (await pool.acquire()).release(); // a direct restore; it starts the first spare
    while (rt.state.lives.filter((l) => !l.stopped && l.agent.resumes.length === 0).length === 0)
      await turn();
    const spare = rt.state.lives.filter((l) => !l.stopped && l.agent.resumes.length === 0)[0] as Freezable;
    return { pool, spare };
  }

  it("a spare taken soon after it is ready is never frozen: a busy pool pays no freeze/thaw per fresh VM", async () => {
    const { pool, spare } = await poolWithSpare();
    const vm = await pool.acquire();
    await vm.exec({ argv: ["true"] });
    expect(log.filter((l) => l.split(" ").includes(String(spare.pid)))).toEqual([
      `exec ${spare.pid} /proc/1/exe --version`, // the spare's warm-up, running
      `resume ${spare.pid}`,
      `exec ${spare.pid} true`,
    ]);
    await vm.release();
    await pool.shutdown();
  });

  it("an unused spare is frozen after the delay (no CPU) and thawed when a create takes it", async () => {
    const { pool, spare } = await poolWithSpare();
    await new Promise((r) => setTimeout(r, SPARE_PAUSE_DELAY_MS + 50));
    expect(spare.frozen).toBe(true);
    const vm = await pool.acquire();
    await vm.exec({ argv: ["true"] });
    expect(log.filter((l) => l.split(" ").includes(String(spare.pid)))).toEqual([
      `exec ${spare.pid} /proc/1/exe --version`,
      `freeze ${spare.pid}`,
      `thaw ${spare.pid}`,
      `resume ${spare.pid}`,
      `exec ${spare.pid} true`,
    ]);
    await vm.release();
    await pool.shutdown();
  });
});
