/**
 * State machine, operation lock and exit classification of QemuVm — with a TEST FAKE VMM: a `sleep` process
 * stands in for QEMU and a FakeQmpServer answers QMP. No VM is booted here (integration tests do that).
 */
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { FakeQmpServer, type FakeReply } from "./__fixtures__/fake-qmp-server";
import type { MachineProfile } from "./argv";
import { validateVmConfig } from "./config";
import { OperationLock } from "./lock";
import { spawnVmm } from "./process";
import { createRuntimeDir } from "./runtime";
import { QemuVm } from "./vm";

const root = mkdtempSync(join(tmpdir(), "sm-vm-unit-"));
const initrd = join(root, "initrd");
writeFileSync(initrd, "x");
afterAll(() => rmSync(root, { recursive: true, force: true }));

const profile: MachineProfile = {
  backend: "fake",
  arch: "x86_64",
  qemuBinary: "sleep",
  machine: "fake",
  consoleDevice: "ttyS0",
  cpuFor: () => "max",
  accelArg: () => "tcg",
  installHint: "n/a",
};

const servers: FakeQmpServer[] = [];
const vms: QemuVm[] = [];
afterEach(async () => {
  for (const vm of vms.splice(0)) {
    try {
      process.kill(vm.pid, "SIGKILL");
    } catch {}
    await vm.exited;
  }
  for (const s of servers.splice(0)) await s.close();
});

async function fakeVm(handler?: (cmd: string, args: unknown) => FakeReply | Promise<FakeReply>) {
  const config = validateVmConfig({ initrd, runtimeRoot: join(root, "rt") });
  const runtimeDir = createRuntimeDir(config.runtimeRoot, config.id);
  const server = new FakeQmpServer(join(runtimeDir, "qmp.sock"), handler);
  await server.listen();
  servers.push(server);
  const spawned = spawnVmm("sleep", ["60"], runtimeDir);
  const vm = new QemuVm({
    id: config.id,
    profile,
    config,
    accel: "tcg",
    runtimeDir,
    spawned,
    qmpSocketPath: join(runtimeDir, "qmp.sock"),
    agentSocketPath: join(runtimeDir, "agent.sock"),
    consoleLogPath: join(runtimeDir, "console.log"),
    memPath: join(runtimeDir, "memory"),
    memShared: true,
    machineRecord: { kernelPath: "/k", initrdPath: initrd, cmdline: "", devices: [] },
  });
  vms.push(vm);
  await vm.connect();
  vm.markRunning();
  return { vm, server, runtimeDir };
}

describe("OperationLock", () => {
  it("runs operations one at a time, in call order, and a failure does not block the next", async () => {
    const lock = new OperationLock();
    const log: string[] = [];
    let active = 0;
    let maxActive = 0;
    const op = (name: string, fail = false) =>
      lock.run(name, async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        log.push(`start ${name}`);
        await new Promise((r) => setTimeout(r, 20));
        log.push(`end ${name}`);
        active--;
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([op("a"), op("b", true), op("c")]);
    expect(maxActive).toBe(1);
    expect(log).toEqual(["start a", "end a", "start b", "end b", "start c", "end c"]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
  });
});

describe("QemuVm state machine (fake VMM)", () => {
  it("pause/resume move between running and paused; wrong-state calls fail with SM_VM_STATE", async () => {
    const { vm, server } = await fakeVm();
    const states: string[] = [];
    vm.on("state", (s) => states.push(s));
    await vm.pause();
    expect(vm.state).toBe("paused");
    await expect(vm.pause()).rejects.toMatchObject({ code: "SM_VM_STATE" });
    await vm.resume();
    await expect(vm.resume()).rejects.toMatchObject({ code: "SM_VM_STATE" });
    expect(states).toEqual(["paused", "running"]);
    expect(server.commands.map((c) => c.execute)).toEqual(["qmp_capabilities", "stop", "cont"]);
  });

  it.runIf(process.platform === "linux")(
    "freeze stops the VMM process until thaw; a QMP operation and stop() continue it first",
    async () => {
      const { vm, server } = await fakeVm();
      /** The process's scheduler state: "T" while stopped by a signal. */
      const state = () => readFileSync(`/proc/${vm.pid}/stat`, "utf8").split(") ")[1]?.[0];
      /** The signal takes effect when the target is next scheduled: wait for it (2 s at most). */
      const stopped = async () => {
        for (let i = 0; i < 200 && state() !== "T"; i++) await new Promise((r) => setTimeout(r, 10));
        return state() === "T";
      };
      vm.freeze();
      expect(vm.frozen).toBe(true);
      expect(await stopped()).toBe(true);
      vm.freeze(); // idempotent
      vm.thaw();
      expect(vm.frozen).toBe(false);
      expect(state()).not.toBe("T");
      vm.thaw(); // idempotent
      vm.freeze();
      await vm.pause(); // QMP: continued first, or the command would wait for a thaw that never comes
      expect(vm.frozen).toBe(false);
      expect(state()).not.toBe("T");
      expect(() => vm.freeze()).toThrow(expect.objectContaining({ code: "SM_VM_STATE" }) as Error);
      await vm.resume();
      vm.freeze();
      const exit = await vm.stop({ qmpQuitTimeoutMs: 100, sigtermTimeoutMs: 2000 });
      expect(exit.cause).toBe("stop");
      expect(vm.frozen).toBe(false);
      expect(server.commands.map((c) => c.execute)).toEqual(["qmp_capabilities", "stop", "cont", "quit"]);
      expect(() => vm.freeze()).toThrow(expect.objectContaining({ code: "SM_VM_STATE" }) as Error);
    },
  );

  it("serialises overlapping lifecycle calls (resume waits for a slow pause)", async () => {
    const { vm, server } = await fakeVm(async (cmd) => {
      if (cmd === "stop") await new Promise((r) => setTimeout(r, 150));
      return { return: {} };
    });
    const [p, r] = await Promise.allSettled([vm.pause(), vm.resume()]);
    expect(p.status).toBe("fulfilled");
    expect(r.status).toBe("fulfilled");
    expect(vm.state).toBe("running");
    expect(server.commands.map((c) => c.execute).slice(1)).toEqual(["stop", "cont"]);
  });

  it("stop escalates past an ignored QMP quit to SIGTERM, reaps the process and removes the runtime dir", async () => {
    const { vm, server, runtimeDir } = await fakeVm((cmd) => (cmd === "quit" ? "ignore" : { return: {} }));
    const t0 = performance.now();
    const exit = await vm.stop({ qmpQuitTimeoutMs: 100, sigtermTimeoutMs: 2000 });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(server.commands.map((c) => c.execute)).toContain("quit");
    expect(exit.cause).toBe("stop");
    expect(exit.signal).toBe("SIGTERM");
    expect(exit.error).toBeUndefined();
    expect(vm.state).toBe("stopped");
    expect(existsSync(runtimeDir)).toBe(false);
    expect(await vm.stop()).toBe(exit); // idempotent
    await expect(vm.pause()).rejects.toMatchObject({ code: "SM_VM_STATE" });
  });

  it("a stop with a guest shutdown hook calls it first", async () => {
    const { vm } = await fakeVm();
    let called = false;
    const exit = await vm.stop({
      guestShutdown: async () => {
        called = true;
        process.kill(vm.pid, "SIGTERM"); // the "guest powers off" → VMM exits
      },
    });
    expect(called).toBe(true);
    expect(exit.cause).toBe("stop");
  });

  it("an externally killed VMM resolves exited with vmm-crashed / SM_VMM_CRASHED and state failed", async () => {
    const { vm, runtimeDir } = await fakeVm();
    process.kill(vm.pid, "SIGKILL");
    const exit = await vm.exited;
    expect(exit.cause).toBe("vmm-crashed");
    expect(exit.signal).toBe("SIGKILL");
    expect(exit.error?.code).toBe("SM_VMM_CRASHED");
    expect(vm.state).toBe("failed");
    expect(existsSync(runtimeDir)).toBe(false);
    await expect(vm.memoryStats()).rejects.toMatchObject({ code: "SM_VM_STATE" });
  });

  it("a guest reset (panic=-1) is reported as guest-panic / SM_GUEST_CRASHED with the console tail", async () => {
    const { vm, server, runtimeDir } = await fakeVm();
    writeFileSync(
      join(runtimeDir, "console.log"),
      "[    1.0] booting\n[    2.0] Kernel panic - not syncing: Attempted to kill init!\n",
    );
    server.event("SHUTDOWN", { guest: true, reason: "guest-reset" });
    await new Promise((r) => setTimeout(r, 100));
    process.kill(vm.pid, "SIGTERM"); // QEMU exits after SHUTDOWN with -no-reboot
    const exit = await vm.exited;
    expect(exit.cause).toBe("guest-panic");
    expect(exit.error?.code).toBe("SM_GUEST_CRASHED");
    expect(exit.error?.message).toContain("Attempted to kill init");
    expect(exit.consoleTail).toContain("Kernel panic");
  });

  it("keeps the console log bounded: past 1 MiB the file is emptied, its last 64 KiB stay in consoleTail", async () => {
    const { vm, runtimeDir } = await fakeVm();
    const log = join(runtimeDir, "console.log");
    // what a guest flooding /dev/ttyS0 leaves: 2 MiB of noise, then the lines that matter
    writeFileSync(log, `${"x".repeat(79)}\n`.repeat((2 << 20) / 80));
    appendFileSync(log, "[ 9.0] last words before the trim\n");
    const deadline = Date.now() + 5000;
    while (statSync(log).size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(statSync(log).size).toBe(0);
    expect(vm.consoleTail(1)).toBe("[ 9.0] last words before the trim");
    // QEMU appends after the trim: the tail joins what was kept and what came since
    appendFileSync(log, "[ 9.5] after the trim\n");
    expect(vm.consoleTail(2)).toBe("[ 9.0] last words before the trim\n[ 9.5] after the trim");
    expect(vm.consoleTrimmedBytes).toBeGreaterThan(0);
    // what a hostile guest writes is quoted harmlessly: no terminal escapes, no endless lines
    appendFileSync(log, `\u001b]0;pwned\u0007\u001b[2J${"y".repeat(5000)}\n`);
    const quoted = vm.consoleTail(1);
    expect(quoted).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    expect(quoted.length).toBeLessThan(600);
    expect(quoted).toMatch(/… \(\d+ chars\)$/);
    truncateSync(log, "[ 9.5] after the trim\n".length);
    // a small log is left alone
    await new Promise((r) => setTimeout(r, 700));
    expect(statSync(log).size).toBe("[ 9.5] after the trim\n".length);
  });

  it("reports memory stats of the VMM process from smaps_rollup", async () => {
    const { vm } = await fakeVm();
    const s = await vm.memoryStats();
    expect(s.rssBytes).toBeGreaterThan(0);
    if (process.platform === "linux") expect(s.pssBytes).toBeGreaterThan(0);
  });
});
