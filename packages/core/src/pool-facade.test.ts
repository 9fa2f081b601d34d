import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { ExecChild, Image, Pool, TcpForwarder, Vm } from "./index";
import { holdCount } from "./keepalive";
import { setRuntime } from "./runtime-port";
import { fakeRuntime } from "./testing/fakes";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const root = await mkdtemp(join(tmpdir(), "sm-core-facade-"));
afterAll(() => rm(root, { recursive: true, force: true }));

let rt: ReturnType<typeof fakeRuntime>;
let n = 0;
let snapshotsDir: string;
beforeEach(() => {
  rt = fakeRuntime(root, { restoreDelayMs: 100 });
  setRuntime(rt);
  snapshotsDir = join(root, `snaps-${n++}`);
});
afterEach(() => setRuntime(undefined));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (cond()) return;
    gc();
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("the original's classes (fake runtime: no VM)", () => {
  it("objects the API returns are instances of the exported classes", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    expect(img).toBeInstanceOf(Image);
    const pool = await img.pool(null);
    expect(pool).toBeInstanceOf(Pool);
    const vm = await pool.acquire();
    expect(vm).toBeInstanceOf(Vm);
    const child = await vm.spawn({ argv: ["cat"] });
    expect(child).toBeInstanceOf(ExecChild);
    await child.writeStdin(Buffer.from("hi\n"));
    expect((await child.readStdout(null)).toString()).toBe("hi\n");
    await child.closeStdin();
    expect(await child.wait()).toMatchObject({ exitCode: 0, timedOut: false });
    const fwd = await vm.exposeTcp(0, 80);
    expect(fwd).toBeInstanceOf(TcpForwarder);
    expect(fwd.localAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    await fwd.stop();
    await vm.release();
    await pool.shutdown();
  });
});

describe("PoolStats", () => {
  it("inUse counts VMs checked out by callers only; a VM restored after release is `restoring`", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 1, max: 1 });
    const vm = await pool.acquire();
    expect(pool.stats()).toMatchObject({ alive: 1, inUse: 1, idle: 0, restoring: 0 });
    await vm.release();
    // restoreOnRelease: the used VM is discarded and a clean one restored (100 ms here)
    expect(pool.stats()).toMatchObject({ alive: 0, inUse: 0, idle: 0, restoring: 1 });
    await until(() => pool.stats().idle === 1, "the replacement");
    expect(pool.stats()).toMatchObject({ alive: 1, inUse: 0, idle: 1, restoring: 0 });
    await pool.shutdown();
  });
});

describe("programs exit when their work is done", () => {
  it("only operations in flight hold the event loop; an idle pool holds nothing", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    expect(holdCount()).toBe(0);
    const pool = await img.pool({ min: 1, max: 1 });
    const acquiring = pool.acquire();
    expect(holdCount()).toBe(1);
    const vm = await acquiring;
    expect(holdCount()).toBe(0);
    const running = vm.exec({ argv: ["echo", "x"] });
    expect(holdCount()).toBe(1);
    await running;
    expect(holdCount()).toBe(0);
    // a spawned process holds until it has exited
    const child = await vm.spawn({ argv: ["yes", "1"] });
    expect(holdCount()).toBe(1);
    await child.wait();
    expect(holdCount()).toBe(0);
    // ... or until its VM goes away
    await vm.spawn({ argv: ["cat"] });
    expect(holdCount()).toBe(1);
    await vm.release();
    await until(() => holdCount() === 0, "the hold of the child of a released VM");
    await pool.shutdown();
    // a dirty-reuse pool keeps the VM (and whatever still runs in it): the release ends the hold
    const dirty = await img.pool({ min: 1, max: 1, restoreOnRelease: false });
    const reused = await dirty.acquire();
    await reused.spawn({ argv: ["cat"] });
    expect(holdCount()).toBe(1);
    await reused.release();
    expect(holdCount()).toBe(0);
    await dirty.shutdown();
  });

  it("a Vm dropped without release goes back to its pool", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 1, max: 1 });
    await (async () => {
      await pool.acquire(); // never released, never referenced again
    })();
    expect(pool.stats().inUse).toBe(1);
    await until(() => pool.stats().inUse === 0, "the dropped Vm to be returned");
    const vm = await pool.acquire(); // max 1: only possible because the dropped one came back
    expect((await vm.exec({ argv: ["echo", "ok"] })).stdout.toString()).toBe("ok\n");
    await vm.release();
    await pool.shutdown();
  });

  it("a process held by the caller keeps its Vm checked out", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 1, max: 1 });
    const child = await (await pool.acquire()).spawn({ argv: ["cat"] });
    for (let i = 0; i < 5; i++) {
      gc();
      await sleep(20);
    }
    expect(pool.stats().inUse).toBe(1);
    await child.writeStdin(Buffer.from("alive\n"));
    expect((await child.readStdout()).toString()).toBe("alive\n");
    await child.closeStdin();
    await child.wait();
    await pool.shutdown();
  });

  it("an unreachable pool is shut down; a Vm in use keeps its pool alive", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const vm = await (await img.pool({ min: 1, max: 1 })).acquire();
    const inUse = rt.state.lives.at(-1);
    for (let i = 0; i < 5; i++) {
      gc();
      await sleep(20);
    }
    // the pool is reachable only through the Vm: still running
    expect(inUse?.stopped).toBe(false);
    expect((await vm.exec({ argv: ["echo", "still"] })).stdout.toString()).toBe("still\n");
    await vm.release();

    const before = rt.state.lives.length;
    await (async () => {
      const p = await img.pool({ min: 1, max: 1 });
      await until(() => p.stats().idle === 1, "the pool's VM");
    })();
    const idle = rt.state.lives.slice(before);
    expect(idle.length).toBeGreaterThan(0);
    await until(() => idle.every((l) => l.stopped), "the unreachable pool's VMs to stop");
  });
});
