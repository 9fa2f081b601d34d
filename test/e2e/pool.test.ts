/**
 * Pool semantics on real VMs: restoreOnRelease, concurrency with consistent stats, acquire timeout,
 * a VM crashing in use, snapshot mid-flight, kill -9 of the host process.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool } from "../../packages/core/src/index";
import { bundle, type FixtureRefs, fixtureRefs, liveOf, qemuPids, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let shared: string;
let image: Image;
const pools: Pool[] = [];

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
  image = await Image.build({ ref: refs.busybox, snapshotsDir: shared });
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.shutdown()));
});

async function makePool(opts: Parameters<Image["pool"]>[0]): Promise<Pool> {
  const p = await image.pool(opts);
  pools.push(p);
  return p;
}

describe("pool on real VMs", () => {
  it("restoreOnRelease: true gives a clean guest; false keeps state", async () => {
    const clean = await makePool({ min: 1, max: 1 });
    let vm = await clean.acquire();
    await vm.writeFile("/tmp/marker", "x");
    await vm.release();
    vm = await clean.acquire();
    expect((await vm.exec({ argv: ["test", "-e", "/tmp/marker"] })).exitCode).toBe(1);
    await vm.release();
    await clean.shutdown();

    const dirty = await makePool({ min: 1, max: 1, restoreOnRelease: false });
    vm = await dirty.acquire();
    await vm.writeFile("/tmp/marker", "x");
    await vm.release();
    vm = await dirty.acquire();
    expect((await vm.exec({ argv: ["cat", "/tmp/marker"] })).stdout.toString()).toBe("x");
    await vm.release();
    await dirty.shutdown();
  });

  it("min 2 max 4 under 8 concurrent tasks: all complete, stats consistent, waiting observed; timeout code", async () => {
    const pool = await makePool({ min: 2, max: 4, acquireTimeoutMs: 120_000 });
    const violations: string[] = [];
    let maxWaiting = 0;
    const sample = () => {
      const s = pool.stats();
      maxWaiting = Math.max(maxWaiting, s.waiting);
      if (s.alive !== s.inUse + s.idle) violations.push(`alive ${JSON.stringify(s)}`);
      if (s.alive > s.max || s.inUse > s.max) violations.push(`over max ${JSON.stringify(s)}`);
      if (Object.values(s).some((v) => v < 0)) violations.push(`negative ${JSON.stringify(s)}`);
    };
    const timer = setInterval(sample, 5);
    const results = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const vm = await pool.acquire();
        sample();
        try {
          const r = await vm.exec({ argv: ["sh", "-c", `sleep 0.3; echo ${i}`] });
          return r.stdout.toString().trim();
        } finally {
          await vm.release();
          sample();
        }
      }),
    );
    clearInterval(timer);
    expect(results.sort()).toEqual(["0", "1", "2", "3", "4", "5", "6", "7"]);
    expect(violations).toEqual([]);
    expect(maxWaiting).toBeGreaterThan(0);
    await pool.shutdown();

    const tiny = await makePool({ min: 1, max: 1, acquireTimeoutMs: 300 });
    for (let i = 0; i < 600 && tiny.stats().idle < 1; i++) await new Promise((r) => setTimeout(r, 50));
    const held = await tiny.acquire();
    await expect(tiny.acquire()).rejects.toMatchObject({ code: "SM_ACQUIRE_TIMEOUT" });
    await held.release();
    await tiny.shutdown();
  });

  it("a VM whose QEMU dies in use rejects with SM_GUEST_CRASHED and is replaced", async () => {
    const pool = await makePool({ min: 1, max: 1, restoreOnRelease: false });
    const vm = await pool.acquire();
    const runtimeDir = join(vm.agentSocketPath, "..");
    const [pid] = qemuPids(runtimeDir);
    expect(pid).toBeGreaterThan(0);
    const pending = vm.exec({ argv: ["sleep", "30"] });
    process.kill(pid!, "SIGKILL");
    await expect(pending).rejects.toMatchObject({ code: "SM_GUEST_CRASHED" });
    await expect(vm.exec({ argv: ["true"] })).rejects.toMatchObject({ code: "SM_GUEST_CRASHED" });
    await vm.release();
    const next = await pool.acquire();
    expect((await next.exec({ argv: ["echo", "alive"] })).stdout.toString()).toBe("alive\n");
    await next.release();
    await pool.shutdown();
  });

  it("the spare restored in the background: killed while waiting, it is replaced; shutdown stops it", async () => {
    const mine = () => qemuPids(`vm-${process.pid}-`);
    const waitFor = async (ok: () => boolean) => {
      for (let i = 0; i < 600 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
      return ok();
    };
    const pool = await makePool({ min: 0, max: 1 });
    await (await pool.acquire()).release();
    const vm = await pool.acquire(); // a restore: from here on a spare is restored and greeted beside it
    const [own] = qemuPids(join(vm.agentSocketPath, ".."));
    expect(await waitFor(() => mine().filter((p) => p !== own).length === 1)).toBe(true);
    const [spare] = mine().filter((p) => p !== own);
    process.kill(spare!, "SIGKILL");
    await vm.release();
    const next = await pool.acquire();
    expect(qemuPids(join(next.agentSocketPath, ".."))).not.toContain(spare);
    const r = await next.exec({ argv: ["sh", "-c", "echo alive; date +%s"] });
    const [word, secs] = r.stdout.toString().trim().split("\n");
    expect(word).toBe("alive");
    expect(Math.abs(Number(secs) - Date.now() / 1000)).toBeLessThan(5); // resumed at hand-out
    await next.release();
    await pool.shutdown();
    expect(await waitFor(() => mine().length === 0)).toBe(true);
  });

  it("vm.snapshot mid-flight: files and running processes are in the new image", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sm-core-e2e-mid-"));
    try {
      const pool = await makePool({ min: 1, max: 1 });
      const vm = await pool.acquire();
      await vm.writeFile("/root/note", "mid-flight");
      const bg = await vm.spawn({ argv: ["sh", "-c", "while true; do sleep 1; done"] });
      const snap = await vm.snapshot(join(dir, "mid"));
      expect((await vm.exec({ argv: ["cat", "/root/note"] })).stdout.toString()).toBe("mid-flight"); // still usable
      await bg.signal(9);
      await vm.release();
      await pool.shutdown();

      const loaded = await Image.fromSnapshot(snap.snapshotPath);
      const p2 = await loaded.pool({ min: 1, max: 1 });
      pools.push(p2);
      const vm2 = await p2.acquire();
      expect((await vm2.readFile("/root/note")).toString()).toBe("mid-flight");
      const ps = await vm2.exec({ argv: ["ps"] });
      expect(ps.stdout.toString()).toContain("while true");
      await vm2.release();
      await p2.shutdown();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("exec semantics: timeout, tty, chain, staged files with modes, env/cwd, missing binary", async () => {
    const pool = await makePool({ min: 1, max: 1, restoreOnRelease: false });
    const vm = await pool.acquire();
    const t = await vm.exec({ argv: ["sleep", "30"], timeoutMs: 500 });
    expect(t).toMatchObject({ exitCode: -1, timedOut: true });
    const tty = await vm.exec({
      argv: ["sh", "-c", "tty; stty size; echo err >&2"],
      tty: true,
      winsize: { cols: 100, rows: 30 },
    });
    expect(tty.stdout.toString()).toMatch(/^\/dev\/pts\/\d+\r?\n30 100\r?\nerr\r?\n$/);
    const chained = await vm.exec({
      argv: ["sh", "/opt/run.sh"],
      stageFilesMode: [{ guestPath: "/opt/run.sh", bytes: "exit 0", mode: 0o700 }],
      stageFiles: { "/opt/data.txt": "staged" },
      chain: {
        argv: ["sh", "-c", 'stat -c %a /opt/run.sh; cat /opt/data.txt; pwd; echo "$GREETING"'],
        cwd: "/tmp",
        env: { GREETING: "hi" },
      },
    });
    expect({
      out: chained.stdout.toString(),
      err: chained.stderr.toString(),
      code: chained.exitCode,
    }).toEqual({ out: "700\nstaged/tmp\nhi\n", err: "", code: 0 });
    const notRun = await vm.exec({ argv: ["false"], chain: { argv: ["echo", "never"] } });
    expect(notRun).toMatchObject({ exitCode: 1 });
    expect(notRun.stdout.toString()).toBe("");
    const missing = await vm.exec({ argv: ["no-such-binary"] });
    expect(missing.exitCode).toBe(127);
    expect(missing.stderr.toString()).toMatch(/no-such-binary/);
    await vm.release();
  });

  it("exec output is bounded on the host: over maxOutputBytes (default 64 MiB) the command is killed with SM_OUTPUT_LIMIT; the VM goes on", async () => {
    const pool = await makePool({ min: 1, max: 1, restoreOnRelease: false });
    const vm = await pool.acquire();
    // a guest that writes without end (stderr counts too)
    const endless = vm.exec({
      argv: ["sh", "-c", "yes 2>/dev/null >&2 & exec cat /dev/zero"],
      maxOutputBytes: 4 << 20,
    });
    await expect(endless).rejects.toMatchObject({ code: "SM_OUTPUT_LIMIT" });
    // the process group is gone: no cat or yes left running
    const ps = await vm.exec({ argv: ["sh", "-c", "ps -o comm= | grep -cE '^(cat|yes)$' || true"] });
    expect(ps.stdout.toString().trim()).toBe("0");
    // the default cap: 64 MiB passes, a byte more does not
    const fits = await vm.exec({ argv: ["head", "-c", String(64 << 20), "/dev/zero"] });
    expect(fits.stdout.length).toBe(64 << 20);
    await expect(
      vm.exec({ argv: ["head", "-c", String((64 << 20) + 1), "/dev/zero"] }),
    ).rejects.toMatchObject({
      code: "SM_OUTPUT_LIMIT",
    });
    await expect(vm.exec({ argv: ["true"], maxOutputBytes: 0 })).rejects.toMatchObject({
      code: "SM_INVALID_OPTIONS",
      details: { field: "maxOutputBytes" },
    });
    expect((await vm.exec({ argv: ["echo", "still here"] })).stdout.toString()).toBe("still here\n");
    await vm.release();
  });

  it("a guest flooding its serial console cannot fill the host's /dev/shm: the log stays bounded, its tail survives", async () => {
    const pool = await makePool({ min: 1, max: 1 });
    const vm = await pool.acquire();
    const live = liveOf(vm);
    const log = join(live.runtimeDir, "console.log");
    let max = 0;
    const watch = setInterval(() => {
      if (existsSync(log)) max = Math.max(max, statSync(log).size);
    }, 20);
    try {
      // ~3 MB through the emulated UART (~300 KB/s under TCG), then a marker line
      const r = await vm.exec({
        argv: [
          "sh",
          "-c",
          "head -c 3000000 /dev/zero | tr '\\0' x > /dev/ttyS0; printf '\\nFLOOD-END\\n' > /dev/ttyS0",
        ],
      });
      expect(r.exitCode).toBe(0);
    } finally {
      clearInterval(watch);
    }
    // the UART drains the tty's buffer after the writer exited
    const until = Date.now() + 10_000;
    while (live.consoleTail?.(1) !== "FLOOD-END" && Date.now() < until)
      await new Promise((r) => setTimeout(r, 100));
    expect(max).toBeGreaterThan(512 * 1024);
    expect(max).toBeLessThan(2 * 1024 * 1024); // trimmed past 1 MiB, checked twice a second
    expect(statSync(log).size).toBeLessThan(1024 * 1024);
    expect(live.consoleTail?.(1)).toBe("FLOOD-END");
    expect((await vm.exec({ argv: ["echo", "fine"] })).stdout.toString()).toBe("fine\n");
    await vm.release();
  });

  it("a guest that stops answering: exec gives up at timeoutMs + 15 s with SM_GUEST_UNRESPONSIVE, the Vm is replaced even with dirty reuse", async () => {
    const pool = await makePool({ min: 1, max: 1, restoreOnRelease: false });
    const vm = await pool.acquire();
    const pid = liveOf(vm).pid!;
    process.kill(pid, "SIGSTOP"); // the whole VMM frozen: nothing in the guest can answer
    try {
      const t0 = Date.now();
      await expect(vm.exec({ argv: ["true"], timeoutMs: 1000 })).rejects.toMatchObject({
        code: "SM_GUEST_UNRESPONSIVE",
      });
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(16_000);
      expect(waited).toBeLessThan(30_000);
      // out of service at once from now on
      const t1 = Date.now();
      await expect(vm.exec({ argv: ["true"] })).rejects.toMatchObject({ code: "SM_GUEST_UNRESPONSIVE" });
      await expect(vm.readFile("/etc/hostname")).rejects.toMatchObject({ code: "SM_GUEST_UNRESPONSIVE" });
      await expect(vm.spawn({ argv: ["true"] })).rejects.toMatchObject({ code: "SM_GUEST_UNRESPONSIVE" });
      expect(Date.now() - t1).toBeLessThan(1000);
      await vm.release();
    } finally {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        /* already gone */
      }
    }
    const next = await pool.acquire();
    const nextPid = liveOf(next).pid;
    expect(nextPid).not.toBe(pid);
    expect((await next.exec({ argv: ["echo", "fresh"] })).stdout.toString()).toBe("fresh\n");
    await next.release();
    const until = Date.now() + 5000;
    while (Date.now() < until && qemuPids().includes(pid)) await new Promise((r) => setTimeout(r, 100));
    expect(qemuPids()).not.toContain(pid);
  });

  it("two VMs restored from one snapshot: correct clock, different random bytes", async () => {
    const pool = await makePool({ min: 0, max: 2 });
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    const probe = ["sh", "-c", "date +%s; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"];
    const [ra, rb] = await Promise.all([a!.exec({ argv: probe }), b!.exec({ argv: probe })]);
    const [ta, xa] = ra.stdout.toString().trim().split("\n");
    const [tb, xb] = rb.stdout.toString().trim().split("\n");
    const now = Date.now() / 1000;
    expect(Math.abs(Number(ta) - now)).toBeLessThan(5);
    expect(Math.abs(Number(tb) - now)).toBeLessThan(5);
    expect(xa).toMatch(/^[0-9a-f]{64}$/);
    expect(xa).not.toBe(xb);
    await Promise.all([a!.release(), b!.release()]);
  });

  for (const sig of ["SIGKILL", "SIGINT"] as const) {
    it(`${sig} to the Node process with a pool of 3 leaves no QEMU and no runtime dir within 5 s`, async () => {
      const script = await bundle(join(__dirname, "child-pool.ts"), "child-pool");
      const child = spawn(process.execPath, [script, refs.busybox, shared, "3"], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      const exited = new Promise<NodeJS.Signals | null>((r) =>
        child.on("exit", (_code, signal) => r(signal)),
      );
      try {
        let err = "";
        child.stderr.on("data", (d) => {
          err += d;
        });
        const info = await new Promise<{ qemu: number[] }>((resolve, reject) => {
          let out = "";
          child.stdout.on("data", (d) => {
            out += d;
            const line = out.split("\n").find((l) => l.includes('"ready"'));
            if (line) resolve(JSON.parse(line));
          });
          child.on("exit", (code) => reject(new Error(`child exited ${code}: ${err}`)));
        });
        // 3 VMs in use (+ the pool's spare, if any): every one must go, with its runtime dir
        expect(info.qemu.length).toBeGreaterThanOrEqual(3);
        const dirs = info.qemu.map((pid) => {
          const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
          const qmp = argv[argv.indexOf("-qmp") + 1] ?? "";
          return dirname(qmp.replace(/^unix:/, "").split(",")[0]!);
        });
        for (const d of dirs) expect(existsSync(d), d).toBe(true);
        child.kill(sig);
        const deadline = Date.now() + 5000;
        const alive = (p: number) => {
          try {
            process.kill(p, 0);
            return true;
          } catch {
            return false;
          }
        };
        let left = info.qemu;
        let dirsLeft = dirs;
        while (Date.now() < deadline && (left.length > 0 || dirsLeft.length > 0)) {
          await new Promise((r) => setTimeout(r, 100));
          left = left.filter(alive);
          dirsLeft = dirsLeft.filter((d) => existsSync(d));
        }
        expect(left).toEqual([]);
        expect(dirsLeft).toEqual([]);
        // SIGINT: core cleans up, then the process still dies of the signal (no swallowed Ctrl-C)
        expect(await exited).toBe(sig);
      } finally {
        child.kill("SIGKILL"); // also when an assertion failed before the kill
        await rm(script, { force: true });
      }
    });
  }
});
