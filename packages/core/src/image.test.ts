import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { Image } from "./image";
import { setRuntime } from "./runtime-port";
import { type FakeLive, fakeRuntime } from "./testing/fakes";
import type { WarmupVm } from "./types";

const root = await mkdtemp(join(tmpdir(), "sm-core-img-"));
afterAll(() => rm(root, { recursive: true, force: true }));

let rt: ReturnType<typeof fakeRuntime>;
let n = 0;
let snapshotsDir: string;
beforeEach(() => {
  rt = fakeRuntime(root);
  setRuntime(rt);
  snapshotsDir = join(root, `snaps-${n++}`);
});
afterEach(() => setRuntime(undefined));

const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => "resolved",
    (e) => (e as { code?: string }).code,
  );

describe("Image.build (fake runtime: no VM)", () => {
  it("bakes once, then hits the cache without booting", async () => {
    const a = await Image.build({ ref: "busybox", snapshotsDir });
    expect(rt.state.boots).toBe(1);
    const meta = JSON.parse(await readFile(join(a.snapshotPath, "metadata.json"), "utf8"));
    expect(meta).toMatchObject({ format: "supermachine-snapshot", version: 1, memoryMib: 256, vcpus: 1 });
    expect(a.memoryMib).toBe(256);
    const b = await Image.build({ ref: "busybox", snapshotsDir });
    expect(rt.state.boots).toBe(1);
    expect(rt.state.rootfsBuilds).toBe(1);
    expect(b.snapshotPath).toBe(a.snapshotPath);
    // A changed input bakes again under a different default name.
    const c = await Image.build({ ref: "busybox", snapshotsDir, env: { X: "1" } });
    expect(rt.state.boots).toBe(2);
    expect(c.snapshotPath).not.toBe(a.snapshotPath);
  });

  it("a pull that fills the disk rejects with SM_NO_SPACE naming the image store; other pull errors pass through", async () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    rt.resolveImage = async () => {
      throw enospc;
    };
    const err = await Image.build({ ref: "busybox", snapshotsDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "SM_NO_SPACE", details: { step: "pull", errno: "ENOSPC" } });
    expect((err as Error).message).toMatch(/supermachine\/oci/);
    expect((err as Error).cause).toBe(enospc);
    const notFound = Object.assign(new Error("manifest unknown"), { code: "SM_IMAGE_NOT_FOUND" });
    rt.resolveImage = async () => {
      throw notFound;
    };
    await expect(Image.build({ ref: "busybox", snapshotsDir })).rejects.toBe(notFound);
  });

  it("concurrent builds of the same image in one process bake once", async () => {
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => Image.build({ ref: "busybox", snapshotsDir })));
    expect(rt.state.boots).toBe(1);
    expect(new Set([a!.snapshotPath, b!.snapshotPath, c!.snapshotPath]).size).toBe(1);
  });

  it("extraFiles contents feed the fingerprint", async () => {
    const f = join(root, `extra-${n}.txt`);
    await writeFile(f, "one");
    await Image.build({ ref: "busybox", snapshotsDir, extraFiles: [{ hostPath: f, guestPath: "/etc/x" }] });
    await Image.build({ ref: "busybox", snapshotsDir, extraFiles: [{ hostPath: f, guestPath: "/etc/x" }] });
    expect(rt.state.boots).toBe(1);
    await writeFile(f, "two!");
    await Image.build({ ref: "busybox", snapshotsDir, extraFiles: [{ hostPath: f, guestPath: "/etc/x" }] });
    expect(rt.state.boots).toBe(2);
  });

  it("a directory under the name that supermachine did not write is refused before any boot and left untouched", async () => {
    const { mkdir, readdir } = await import("node:fs/promises");
    // e.g. the original implementation's layout under the shared default directory
    const foreign = join(snapshotsDir, "app");
    await mkdir(join(foreign, "vm"), { recursive: true });
    await writeFile(join(foreign, "metadata.json"), JSON.stringify({ image: "busybox", version: 3 }));
    await writeFile(join(foreign, "vm", "snapshot.bin"), "theirs");
    const err = await Image.build({ ref: "busybox", snapshotsDir, name: "app" }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "SM_SNAPSHOT_FOREIGN", details: { dir: foreign } });
    expect((err as Error).message).toContain(foreign);
    expect((err as Error).message).toMatch(/`name`.*`snapshotsDir`/);
    expect(rt.state.boots).toBe(0);
    expect(await readFile(join(foreign, "vm", "snapshot.bin"), "utf8")).toBe("theirs");
    expect((await readdir(snapshotsDir)).filter((d) => !d.startsWith(".locks"))).toEqual(["app"]);
    // A plain file, too; another name builds fine next to them.
    await writeFile(join(snapshotsDir, "file"), "x");
    expect(await codeOf(Image.build({ ref: "busybox", snapshotsDir, name: "file" }))).toBe(
      "SM_SNAPSHOT_FOREIGN",
    );
    const ok = await Image.build({ ref: "busybox", snapshotsDir, name: "app2" });
    expect(ok.snapshotPath).toBe(join(snapshotsDir, "app2"));
  });

  it("vm.snapshot() into a directory supermachine did not write is refused and leaves it untouched", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool();
    const vm = await pool.acquire();
    const dest = join(root, `theirs-${n}`);
    await (await import("node:fs/promises")).mkdir(dest);
    await writeFile(join(dest, "data"), "keep");
    expect(await codeOf(vm.snapshot(dest))).toBe("SM_SNAPSHOT_FOREIGN");
    expect(await readFile(join(dest, "data"), "utf8")).toBe("keep");
    await vm.release();
    await pool.shutdown();
  });

  it("a corrupt snapshot under the name is re-baked", async () => {
    const a = await Image.build({ ref: "busybox", snapshotsDir, name: "bb" });
    await writeFile(join(a.snapshotPath, "rootfs.sqfs"), "truncated?");
    await expect(Image.fromSnapshot(a.snapshotPath)).rejects.toMatchObject({ code: "SM_SNAPSHOT_INVALID" });
    await Image.build({ ref: "busybox", snapshotsDir, name: "bb" });
    expect(rt.state.boots).toBe(2);
    await expect(Image.fromSnapshot(a.snapshotPath)).resolves.toBeInstanceOf(Image);
  });

  it("warmup: exec works during the callback and fails after it; escape hatches throw", async () => {
    let kept: WarmupVm | undefined;
    await Image.build({
      ref: "busybox",
      snapshotsDir,
      warmup: async (vm) => {
        kept = vm;
        const r = await vm.exec({ argv: ["echo", "warm"] });
        expect(r.stdout.toString()).toBe("warm\n");
        expect(() => (vm as unknown as { vsockPath: string }).vsockPath).toThrow(/WarmupVm/);
      },
    });
    expect(await codeOf(kept!.exec({ argv: ["true"] }))).toBe("SM_WARMUP_OVER");
  });

  it("a failing bake leaves no snapshot and no temp dir", async () => {
    await expect(
      Image.build({
        ref: "busybox",
        snapshotsDir,
        warmup: async () => {
          throw new Error("warmup broke");
        },
      }),
    ).rejects.toMatchObject({ code: "SM_BAKE_FAILED" });
    const { readdir } = await import("node:fs/promises");
    expect((await readdir(snapshotsDir)).filter((x) => !x.startsWith(".locks"))).toEqual([]);
    expect(rt.state.lives[0]!.stopped).toBe(true);
  });
});

describe("pool and Vm (fake runtime)", () => {
  it("hands the bake VM to the first acquire, resumes every VM before hand-out", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 0, max: 2 });
    const vm = await pool.acquire();
    expect(rt.state.restores).toBe(0); // warm handoff
    const bakeLive = rt.state.lives[0]!;
    expect(bakeLive.agent.resumes.length).toBe(1);
    const vm2 = await pool.acquire();
    expect(rt.state.restores).toBe(1);
    const restored = rt.state.lives[1]!;
    expect(restored.agent.resumes.length).toBe(1);
    const e = restored.agent.resumes[0]!.entropy;
    expect(e.length).toBeGreaterThanOrEqual(32);
    expect(Number(restored.agent.resumes[0]!.timeNs / 1_000_000n)).toBeGreaterThan(Date.now() - 5000);
    expect(bakeLive.agent.resumes[0]!.entropy.equals(e)).toBe(false);
    await vm.release();
    await vm2.release();
    await pool.shutdown();
    await pool.shutdown(); // idempotent
    expect(rt.state.lives.every((l) => l.stopped)).toBe(true);
  });

  it("mounts: attached on every hand-out, detached around vm.snapshot; a vanished hostPath → SM_MOUNT_INVALID", async () => {
    const dir = await mkdtemp(join(root, "share-"));
    const img = await Image.build({
      ref: "busybox",
      snapshotsDir,
      mounts: [{ hostPath: dir, guestTag: "src", guestPath: "/src" }],
    });
    const pool = await img.pool({ min: 0, max: 2 });
    const vm = await pool.acquire(); // warm handoff
    const vm2 = await pool.acquire(); // restore
    for (const live of rt.state.lives) expect([...live.agent.shares]).toEqual([["src", "/src"]]);
    const snapDir = join(root, `snap-mounts-${n}`);
    await vm2.snapshot(snapDir);
    // Detached for the capture, attached again afterwards.
    expect([...rt.state.lives[1]!.agent.shares]).toEqual([["src", "/src"]]);
    expect(rt.state.lives[1]!.agent.shareLog).toEqual(["attach src", "detach src", "attach src"]);
    await vm.release();
    await vm2.release();
    await rm(dir, { recursive: true });
    await expect(pool.acquire()).rejects.toMatchObject({
      code: expect.stringMatching(/SM_MOUNT_INVALID|SM_CREATE_FAILED/),
    });
    await pool.shutdown();
  });

  it("restoreOnRelease true gives a clean VM, false reuses it", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const clean = await img.pool({ min: 1, max: 1 });
    let vm = await clean.acquire();
    await vm.writeFile("/tmp/x", "hello");
    expect((await vm.readFile("/tmp/x")).toString()).toBe("hello");
    await vm.release();
    vm = await clean.acquire();
    await expect(vm.readFile("/tmp/x")).rejects.toMatchObject({ code: "SM_AGENT_ERROR" });
    await vm.release();
    await clean.shutdown();

    const dirty = await img.pool({ min: 1, max: 1, restoreOnRelease: false });
    vm = await dirty.acquire();
    await vm.writeFile("/tmp/x", "kept");
    await vm.release();
    vm = await dirty.acquire();
    expect((await vm.readFile("/tmp/x")).toString()).toBe("kept");
    await vm.release();
    await dirty.shutdown();
  });

  it("released Vm → SM_VM_RELEASED; >4 MiB → SM_FILE_TOO_LARGE; release idempotent", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool();
    const vm = await pool.acquire();
    expect(await codeOf(vm.writeFile("/big", Buffer.alloc(4 * 1024 * 1024 + 1)))).toBe("SM_FILE_TOO_LARGE");
    const out = await vm.exec({ argv: ["echo", "hi"], chain: { argv: ["echo", "again"] } });
    expect(out).toMatchObject({ exitCode: 0 });
    expect(out.stdout.toString()).toBe("again\n");
    expect((await vm.exec({ argv: ["nope"] })).exitCode).toBe(127);
    await vm.release();
    await vm.release();
    await vm.dispose();
    expect(await codeOf(vm.exec({ argv: ["true"] }))).toBe("SM_VM_RELEASED");
    expect(await codeOf(vm.readFile("/x"))).toBe("SM_VM_RELEASED");
    expect(() => vm.vsockPath).toThrow(expect.objectContaining({ code: "SM_VM_RELEASED" }));
    await pool.shutdown();
  });

  it("await using releases the VM", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ restoreOnRelease: false });
    {
      const vm = await pool.acquire();
      await vm[Symbol.asyncDispose]();
      expect(pool.stats().inUse).toBe(0);
    }
    await pool.shutdown();
  });

  it("a VM that crashes in use rejects with SM_GUEST_CRASHED and is replaced", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 1, max: 1 });
    const vm = await pool.acquire();
    const live = rt.state.lives.at(-1) as FakeLive;
    const pending = vm.exec({ argv: ["hang"] });
    live.crash();
    expect(await codeOf(pending)).toBe("SM_GUEST_CRASHED");
    expect(await codeOf(vm.exec({ argv: ["true"] }))).toBe("SM_GUEST_CRASHED");
    await vm.release();
    const next = await pool.acquire();
    expect((await next.exec({ argv: ["echo", "ok"] })).stdout.toString()).toBe("ok\n");
    await next.release();
    await pool.shutdown();
  });

  it("stats stay consistent and acquire times out with SM_ACQUIRE_TIMEOUT", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 0, max: 1, acquireTimeoutMs: 50 });
    const vm = await pool.acquire();
    expect(pool.stats()).toMatchObject({ alive: 1, inUse: 1, idle: 0, min: 0, max: 1 });
    const waiter = pool.acquire();
    expect(pool.stats().waiting).toBe(1);
    expect(await codeOf(waiter)).toBe("SM_ACQUIRE_TIMEOUT");
    const ac = new AbortController();
    const aborted = pool.acquire({ signal: ac.signal });
    ac.abort();
    expect(await codeOf(aborted)).not.toBe("resolved");
    await vm.release();
    await pool.shutdown();
    expect(await codeOf(pool.acquire())).toBe("SM_POOL_CLOSED");
  });

  it("spawn: pull-style reads and Node streams", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool();
    const vm = await pool.acquire();
    const cat = await vm.spawn({ argv: ["cat"] });
    await cat.writeStdin("ping\n");
    expect((await cat.readStdout()).toString()).toBe("ping\n");
    await cat.closeStdin();
    expect(await cat.readStdout()).toEqual(Buffer.alloc(0));
    expect(await cat.wait()).toMatchObject({ exitCode: 0, timedOut: false });

    const yes = await vm.spawn({ argv: ["yes", "3"] });
    const chunks: string[] = [];
    for await (const c of yes.stdout) chunks.push(String(c));
    expect(chunks.join("")).toBe("y0\ny1\ny2\n");
    expect((await yes.wait()).exitCode).toBe(0);
    await vm.release();
    await pool.shutdown();
  });

  it("vsockPath is a Unix socket in the runtime dir that reaches guestPort; gone on release; agentSocketPath is the transport", async () => {
    const { existsSync } = await import("node:fs");
    const { connect } = await import("node:net");
    const { dirname } = await import("node:path");
    const img = await Image.build({ ref: "busybox", snapshotsDir, guestPort: 8080 });
    const pool = await img.pool();
    const vm = await pool.acquire();
    const server = await new Promise<import("node:net").Server>((resolve) => {
      const s = createServer((sock) => sock.on("data", (d) => sock.end(`echo:${d}`)));
      s.listen(0, "127.0.0.1", () => resolve(s));
    });
    const live = rt.state.lives[0]!;
    live.agent.ports.set(8080, (server.address() as { port: number }).port);
    const path = vm.vsockPath;
    expect(dirname(path)).toBe(live.runtimeDir);
    expect(vm.vsockPath).toBe(path);
    expect(vm.agentSocketPath).toBe(live.agentSocketPath);
    expect(path).not.toBe(vm.agentSocketPath);
    const talk = () =>
      new Promise<string>((resolve, reject) => {
        const s = connect(path);
        let data = "";
        s.on("connect", () => s.write("hi"));
        s.on("data", (d) => {
          data += d;
        });
        s.on("end", () => resolve(data));
        s.on("error", reject);
      });
    expect(await talk()).toBe("echo:hi");
    expect(await talk()).toBe("echo:hi");
    await vm.release();
    await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(path)).toBe(false);
    expect(() => vm.vsockPath).toThrow(expect.objectContaining({ code: "SM_VM_RELEASED" }));
    server.close();
    await pool.shutdown();
  });

  it("pool memoryMib/vcpus overrides restore (no boot) and become guest limits; above the baked ceiling → SM_POOL_OVERRIDE", async () => {
    const plain = await Image.build({ ref: "busybox", snapshotsDir });
    const over = await plain.pool({ memoryMib: 512 }).catch((e: unknown) => e);
    expect(over).toMatchObject({
      code: "SM_POOL_OVERRIDE",
      details: { field: "memoryMib", maxMemoryMib: 256 },
    });
    expect((over as Error).message).toMatch(/ceiling of 256 MiB.*maxMemoryMib/);
    expect(await codeOf(plain.pool({ vcpus: 2 }))).toBe("SM_POOL_OVERRIDE");

    const img = await Image.build({ ref: "busybox", snapshotsDir, maxMemoryMib: 512, maxVcpus: 2 });
    expect(img.memoryMib).toBe(256);
    expect(rt.state.boots).toBe(2);
    const bake = rt.state.lives.at(-1)!;
    // the bake VM runs under the baked limits inside its 512 MiB / 2 vCPU machine
    expect(bake.agent.files.get("/sys/fs/cgroup/sm-work/memory.max")?.toString()).toBe(String(256 * 2 ** 20));
    expect(bake.agent.files.get("/sys/devices/system/cpu/cpu1/online")?.toString()).toBe("0");
    const pool = await img.pool({ memoryMib: 384, vcpus: 2 });
    const vm = await pool.acquire(); // the bake's VM (handoff) gets the pool's limits at resume
    await vm.release();
    const vm2 = await pool.acquire(); // a restored one, too
    const live = rt.state.lives.at(-1)!;
    expect(live).not.toBe(bake);
    expect(live.agent.files.get("/sys/fs/cgroup/sm-work/memory.max")?.toString()).toBe(String(384 * 2 ** 20));
    expect(live.agent.files.get("/sys/devices/system/cpu/cpu1/online")?.toString()).toBe("1");
    expect(rt.state.boots).toBe(2);
    await vm2.release();
    await pool.shutdown();
  });

  it("exposeTcp forwards to the given guest port", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool();
    const vm = await pool.acquire();
    const servers = await Promise.all(
      ["eighty", "eighty-eighty"].map(
        (reply) =>
          new Promise<import("node:net").Server>((resolve) => {
            const s = createServer((sock) => sock.end(reply));
            s.listen(0, "127.0.0.1", () => resolve(s));
          }),
      ),
    );
    const live = rt.state.lives[0]!;
    live.agent.ports.set(80, (servers[0]!.address() as { port: number }).port);
    live.agent.ports.set(8080, (servers[1]!.address() as { port: number }).port);
    const f1 = await vm.exposeTcp(0, 80);
    const f2 = await vm.exposeTcp(0, 8080);
    expect(f1.localAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    const read = (addr: string) =>
      new Promise<string>((resolve, reject) => {
        const [host, port] = addr.split(":");
        const { connect } = require("node:net") as typeof import("node:net");
        const s = connect({ host: host!, port: Number(port) });
        let data = "";
        s.on("data", (d) => {
          data += d;
        });
        s.on("end", () => resolve(data));
        s.on("error", reject);
      });
    expect(await read(f1.localAddr)).toBe("eighty");
    expect(await read(f2.localAddr)).toBe("eighty-eighty");
    await f1.stop();
    await f1.stop();
    await vm.release();
    await pool.shutdown();
    for (const s of servers) s.close();
  });

  it("vm.snapshot writes a loadable snapshot and the VM stays usable", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ restoreOnRelease: false });
    const vm = await pool.acquire();
    const snap = await vm.snapshot(join(root, `mid-${n}`));
    expect(snap.snapshotPath).toBe(join(root, `mid-${n}`));
    const again = await Image.fromSnapshot(snap.snapshotPath);
    expect(again.memoryMib).toBe(256);
    expect((await vm.exec({ argv: ["true"] })).exitCode).toBe(0);
    await vm.release();
    await pool.shutdown();
  });
});

describe("pool shutdown with a VM still in use", () => {
  it("calls on the orphaned Vm reject with SM_VM_RELEASED, not SM_GUEST_CRASHED", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool();
    const vm = await pool.acquire();
    await pool.shutdown();
    await expect(vm.exec({ argv: ["true"] })).rejects.toMatchObject({ code: "SM_VM_RELEASED" });
    await vm.release();
  });
});

describe("pool idle eviction and events", () => {
  it("idle VMs above min are stopped after idleTimeoutMs; events carry ids", async () => {
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 0, max: 2, idleTimeoutMs: 50, restoreOnRelease: false });
    const created: number[] = [];
    const destroyed: string[] = [];
    pool.on("create-success", (e) => created.push(e.resourceId));
    pool.on("destroy", (e) => destroyed.push(e.reason));
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    await Promise.all([a.release(), b.release()]);
    expect(pool.stats()).toMatchObject({ alive: 2, idle: 2 });
    await new Promise((r) => setTimeout(r, 300));
    expect(pool.stats()).toMatchObject({ alive: 0, idle: 0 });
    expect(created).toHaveLength(2);
    expect(destroyed).toEqual(["idle", "idle"]);
    await pool.shutdown();
  });
});

describe("pool spare (fake backend with prepareRestore)", () => {
  const untouched = () => rt.state.lives.filter((l) => !l.stopped && l.agent.resumes.length === 0);
  /**
   * A pool on a fake backend that pre-starts restores, after two acquire/release rounds: the bake's VM
   * (warm handoff), then a direct restore, which starts the first spare.
   */
  async function afterFirstRestore(
    runtime: Parameters<typeof fakeRuntime>[1],
    poolOpts: Parameters<Image["pool"]>[0] = {},
  ) {
    rt = fakeRuntime(root, runtime);
    setRuntime(rt);
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const pool = await img.pool({ min: 0, max: 1, ...poolOpts });
    await (await pool.acquire()).release();
    await (await pool.acquire()).release();
    await new Promise((r) => setTimeout(r, 20));
    return pool;
  }

  it("the next VM is restored and greeted in the background; an acquire only resumes it", async () => {
    const pool = await afterFirstRestore({ prepared: "ok" });
    expect(rt.state.restores).toBe(1);
    const [spare] = untouched();
    expect(spare).toBeDefined(); // restored and greeted, never resumed before it is handed out
    // nothing of the image ran in it: only the agent's own no-op process that warms process start
    expect(spare!.agent.execs.map((e) => e.argv)).toEqual([["/proc/1/exe", "--version"]]);
    const vm = await pool.acquire();
    expect(rt.state.restores).toBe(1); // no restore on this acquire's path
    expect(spare!.agent.resumes.length).toBe(1);
    expect((await vm.exec({ argv: ["echo", "hi"] })).stdout.toString()).toBe("hi\n");
    expect(rt.state.prepared).toBe(2); // the next spare is on its way
    await vm.release();
    await pool.shutdown();
    await new Promise((r) => setTimeout(r, 20));
    expect(rt.state.lives.every((l) => l.stopped)).toBe(true);
  });

  it("a pool with a memoryMib override applies it in the spare already (one staging exec), not again at hand-out", async () => {
    const pool = await afterFirstRestore({ prepared: "ok" }, { memoryMib: 128 });
    const [spare] = untouched();
    expect(spare).toBeDefined();
    expect(spare!.agent.execs).toHaveLength(1);
    expect(spare!.agent.execs[0]!.argv).toEqual(["/proc/1/exe", "--version"]);
    expect(spare!.agent.files.get("/sys/fs/cgroup/sm-work/memory.max")?.toString()).toBe(
      String(128 * 2 ** 20),
    );
    const vm = await pool.acquire();
    expect(spare!.agent.resumes.length).toBe(1);
    expect(spare!.agent.execs).toHaveLength(1);
    await vm.release();
    await pool.shutdown();
  });

  it("a dirty-reuse pool keeps a spare only while it can still grow", async () => {
    rt = fakeRuntime(root, { prepared: "ok" });
    setRuntime(rt);
    const img = await Image.build({ ref: "busybox", snapshotsDir });
    const full = await img.pool({ min: 1, max: 1, restoreOnRelease: false });
    const vm = await full.acquire(); // the bake's VM
    rt.state.lives[0]!.crash();
    await vm.release();
    const next = await full.acquire(); // a restore that fills the pool again
    expect(rt.state.restores).toBe(1);
    expect(rt.state.prepared).toBe(0);
    await next.release();
    await full.shutdown();

    const growing = await img.pool({ min: 0, max: 3, restoreOnRelease: false });
    const a = await growing.acquire();
    expect(rt.state.prepared).toBe(1); // room for two more VMs: the next create is prepared
    await a.release();
    await growing.shutdown();
  });

  it("a spare whose agent lacks the agent-exe cap (an older agent) gets no warm-up process", async () => {
    const pool = await afterFirstRestore({ prepared: "ok", agentCaps: ["exec"] });
    const [spare] = untouched();
    expect(spare).toBeDefined();
    expect(spare!.agent.execs).toEqual([]);
    await pool.shutdown();
  });

  it("a spare whose VMM died while waiting is stopped and the acquire restores directly", async () => {
    const pool = await afterFirstRestore({ prepared: "ok" });
    const [spare] = untouched();
    spare!.crash();
    const vm = await pool.acquire();
    expect(rt.state.restores).toBe(2);
    expect(spare!.stopped).toBe(true);
    expect(spare!.agent.resumes.length).toBe(0);
    expect((await vm.exec({ argv: ["echo", "ok"] })).exitCode).toBe(0);
    await vm.release();
    await pool.shutdown();
  });

  it("a spare stuck in its restore is discarded after restoreTimeoutMs and the acquire still gets a VM", async () => {
    const pool = await afterFirstRestore({ prepared: "hang" }, { restoreTimeoutMs: 300 });
    await new Promise((r) => setTimeout(r, 80));
    const vm = await pool.acquire();
    expect(rt.state.preparedDiscards).toBeGreaterThanOrEqual(1);
    expect(rt.state.restores).toBe(2);
    expect((await vm.exec({ argv: ["true"] })).exitCode).toBe(0);
    await vm.release();
    await pool.shutdown();
    expect(rt.state.preparedDiscards).toBe(rt.state.prepared); // nothing pre-started is left behind
  });

  it("with idleTimeoutMs an unused spare is stopped like an idle VM; the next acquire restores directly", async () => {
    const pool = await afterFirstRestore({ prepared: "ok" }, { idleTimeoutMs: 100 });
    const [spare] = untouched();
    expect(spare).toBeDefined();
    await new Promise((r) => setTimeout(r, 300));
    expect(spare!.stopped).toBe(true);
    expect(untouched()).toEqual([]);
    const vm = await pool.acquire();
    expect(rt.state.restores).toBe(2);
    expect((await vm.exec({ argv: ["true"] })).exitCode).toBe(0);
    await vm.release();
    await pool.shutdown();
  });

  it("shutdown abandons a spare still being prepared instead of waiting for it", async () => {
    const pool = await afterFirstRestore({ prepared: "hang" }, { restoreTimeoutMs: 600_000 });
    expect(rt.state.prepared).toBe(1);
    await pool.shutdown(); // would wait restoreTimeoutMs (10 minutes) if it awaited the spare
    expect(rt.state.preparedDiscards).toBe(1);
  }, 10_000);
});
