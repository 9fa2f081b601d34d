/**
 * The conformance suite every backend runs (packages/hypervisor-{kvm,hvf}/test/integration/*.test.ts).
 *
 * One cold boot per backend; everything else reuses it: boot → agent ready → exec → snapshot → restore ×2
 * (one through prepareRestore) → exec on both → snapshot of a restored VM → guest panic → VMM crash mid-exec →
 * corrupt/missing snapshots → SIGKILL of a parent Node process → stop; and nothing (QEMU, runtime dir) is left.
 *
 * Guest: the real C agent (guest-agent/out/<arch>/sm-agent) with the initramfs from @supermachine/rootfs and the
 * AgentClient from @supermachine/agent-protocol when the agent is built; otherwise (or with
 * SM_CONFORMANCE_GUEST=fixture) the TEST FIXTURE /init (test/fixtures/fixture-init.c). See fixtures/real-agent-guest.ts.
 */
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GuestArch, Vm, VmmBackend } from "../src/index";
import { findExecutable, listCachedBundles } from "../src/index";
import { defaultGuestKit, type GuestKit, type GuestSession } from "./fixtures/real-agent-guest";

export interface ConformanceOptions {
  /** Backend short name, also passed to the child-process fixture ("kvm" | "hvf"). */
  name: "kvm" | "hvf";
  arch: GuestArch;
  qemuBinary: string;
  createBackend(): VmmBackend;
  /** Default: defaultGuestKit(arch). */
  guest?: GuestKit;
}

const REPO = fileURLToPath(new URL("../../..", import.meta.url));

/** Why this backend cannot run here (missing QEMU / kernel / cross compiler), or undefined. */
export function conformanceSkipReason(o: ConformanceOptions): string | undefined {
  if (!findExecutable(o.qemuBinary)) return `${o.qemuBinary} is not installed`;
  if (listCachedBundles(o.arch).length === 0 && !process.env.SUPERMACHINE_KERNEL_DIR)
    return `no ${o.arch} kernel bundle (npx supermachine setup; in the repository npm run setup)`;
  const cc = o.arch === "x86_64" ? "musl-gcc" : "aarch64-linux-gnu-gcc";
  if (!findExecutable(cc)) return `${cc} is not installed (needed for the test fixture guest)`;
  return undefined;
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, fn: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function runConformance(o: ConformanceOptions): void {
  const skip = conformanceSkipReason(o);
  const guest = o.guest ?? defaultGuestKit(o.arch);
  const connect = (vm: Vm) => guest.connect(vm);
  describe.skipIf(!!skip)(
    `${o.name} backend conformance (${o.arch}, TCG, guest: ${guest.name})${skip ? ` — skipped: ${skip}` : ""}`,
    () => {
      let backend: VmmBackend;
      let work: string;
      let runtimeRoot: string;
      let booted: Vm;
      let bootClient: GuestSession;
      const vms: Vm[] = [];
      let snap: string;
      let memHash: string;
      let restoredA: Vm;
      let restoredB: Vm;
      let clientA: GuestSession;
      let clientB: GuestSession;

      beforeAll(async () => {
        work = mkdtempSync(join(tmpdir(), `sm-conf-${o.name}-`));
        runtimeRoot = join(work, "rt"); // own root: the "nothing left" checks only look at this suite's VMs
        backend = o.createBackend();
        const files = await guest.prepare(o.arch, work);
        booted = await backend.boot({ ...files, accel: "tcg", memoryMib: 256, runtimeRoot });
        vms.push(booted);
      });

      afterAll(async () => {
        try {
          await Promise.all(vms.map((v) => v.stop()));
        } finally {
          if (work) rmSync(work, { recursive: true, force: true });
        }
      });

      it("boots to a ready guest agent and execs", async () => {
        expect(booted.state).toBe("running");
        expect(booted.accel).toBe("tcg");
        expect(backend.version).toBe(1);
        bootClient = await connect(booted);
        expect(await bootClient.echo("hello from the guest")).toBe("hello from the guest");
        const stats = await booted.memoryStats();
        expect(stats.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
      });

      it("re-obtains the agent stream (the old one is closed)", async () => {
        const old = bootClient;
        bootClient = await connect(booted);
        await expect(old.ping(2000)).rejects.toThrow();
        expect(await bootClient.echo("again")).toBe("again");
      });

      it("pauses and resumes", async () => {
        await booted.pause();
        expect(booted.state).toBe("paused");
        await expect(booted.pause()).rejects.toMatchObject({ code: "SM_VM_STATE" });
        await booted.resume();
        expect(await bootClient.echo("resumed")).toBe("resumed");
      });

      it.runIf(process.platform === "linux")(
        "freezes (no CPU at all, a request waits in the socket) and thaws (the request is answered)",
        async () => {
          const cpuTicks = () => {
            const f = readFileSync(`/proc/${booted.pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
            return Number(f[11]) + Number(f[12]);
          };
          booted.freeze();
          expect(booted.frozen).toBe(true);
          await new Promise((r) => setTimeout(r, 200)); // each thread stops when it is next scheduled
          const t0 = cpuTicks();
          let settled = false;
          const answer = bootClient.echo("after the thaw").finally(() => {
            settled = true;
          });
          await new Promise((r) => setTimeout(r, 1000));
          expect(cpuTicks() - t0).toBe(0);
          expect(settled).toBe(false);
          booted.thaw();
          expect(booted.frozen).toBe(false);
          expect(await answer).toBe("after the thaw");
        },
      );

      it("snapshots a running VM atomically; the VM keeps running", async () => {
        await bootClient.setMarker("marker-1");
        snap = join(work, "snap");
        const r = await booted.snapshot(snap);
        expect(r.manifest).toMatchObject({
          format: 1,
          arch: o.arch,
          memoryMib: 256,
          vcpus: 1,
          accel: "tcg",
          ramInState: false,
        });
        expect(readdirSync(snap).sort()).toEqual(["memory", "state", "vm.json"]);
        expect(readdirSync(work).filter((n) => n.includes(".tmp-"))).toEqual([]);
        expect(booted.state).toBe("running");
        expect(await bootClient.getMarker()).toBe("marker-1");
        await expect(booted.snapshot(snap)).rejects.toMatchObject({ code: "SM_VMM_CONFIG" });
        memHash = sha256(join(snap, "memory"));
      });

      it("restores twice (restore + prepareRestore); both carry the captured state and diverge independently", async () => {
        restoredA = await backend.restore(snap, { runtimeRoot });
        vms.push(restoredA);
        const prepared = await backend.prepareRestore(snap, { runtimeRoot });
        expect(pidAlive(prepared.pid)).toBe(true);
        restoredB = await prepared.start();
        vms.push(restoredB);
        await expect(prepared.start()).rejects.toMatchObject({ code: "SM_VM_STATE" });
        clientA = await connect(restoredA);
        clientB = await connect(restoredB);
        expect(await clientA.getMarker()).toBe("marker-1");
        expect(await clientB.getMarker()).toBe("marker-1");
        await clientA.setMarker("only-a");
        await clientB.setMarker("only-b");
        await bootClient.setMarker("only-boot");
        expect(await clientA.getMarker()).toBe("only-a");
        expect(await clientB.getMarker()).toBe("only-b");
        expect(await clientB.echo("exec on the second clone")).toBe("exec on the second clone");
        expect(restoredA.restoredFrom).toBe(snap);
        const stats = await restoredB.memoryStats();
        expect(stats.pssBytes ?? stats.rssBytes).toBeGreaterThan(0);
      });

      it("never writes the snapshot's memory file from a restored VM", () => {
        expect(sha256(join(snap, "memory"))).toBe(memHash);
      });

      it("snapshots a restored VM (full-RAM migration, compacted to the CoW format) and restores that twice", async () => {
        const snap2 = join(work, "snap-of-restored");
        const r = await restoredA.snapshot(snap2);
        expect(restoredA.compactionError).toBeUndefined();
        expect(r.manifest.ramInState).toBe(false);
        expect(restoredA.state).toBe("running");
        expect(await clientA.getMarker()).toBe("only-a");
        const again = await backend.restore(snap2, { runtimeRoot });
        vms.push(again);
        const c = await connect(again);
        expect(await c.getMarker()).toBe("only-a");
        await c.setMarker("only-again");
        const third = await backend.restore(snap2, { runtimeRoot });
        vms.push(third);
        const c3 = await connect(third);
        expect(await c3.getMarker()).toBe("only-a");
        expect(await c3.echo("third")).toBe("third");
        expect(await clientA.getMarker()).toBe("only-a");
        await Promise.all([again.stop(), third.stop()]);
        expect(sha256(join(snap, "memory"))).toBe(memHash);
      });

      it("reports a guest kernel panic as SM_GUEST_CRASHED with the console lines", async () => {
        const vm = await backend.restore(snap, { runtimeRoot });
        vms.push(vm);
        const c = await connect(vm);
        c.panic();
        const exit = await vm.exited;
        expect(exit.cause).toBe("guest-panic");
        expect(exit.error?.code).toBe("SM_GUEST_CRASHED");
        expect(exit.error?.message).toMatch(/sysrq|Kernel panic/i);
        expect(vm.state).toBe("failed");
      });

      it("detects a VMM crash mid-exec: exited resolves with the cause and the pending agent call rejects", async () => {
        const pending = clientB.longCall().then(
          () => new Error("the slow call unexpectedly succeeded"),
          (e: Error) => e,
        );
        await new Promise((r) => setTimeout(r, 200));
        process.kill(restoredB.pid, "SIGKILL");
        const exit = await restoredB.exited;
        expect(exit.cause).toBe("vmm-crashed");
        expect(exit.signal).toBe("SIGKILL");
        expect(exit.error?.code).toBe("SM_VMM_CRASHED");
        expect((await pending).message).toMatch(/closed|lost|end/i);
        expect(existsSync(restoredB.runtimeDir)).toBe(false);
        await expect(restoredB.agentStream()).rejects.toMatchObject({ code: "SM_VM_STATE" });
      });

      it("rejects missing and corrupt snapshots with SM_SNAPSHOT_INVALID naming the file, leaving no VMM behind", async () => {
        await expect(backend.restore(join(work, "no-such-snapshot"), { runtimeRoot })).rejects.toMatchObject({
          code: "SM_SNAPSHOT_INVALID",
        });
        const noMem = join(work, "no-mem");
        mkdirSync(noMem);
        for (const f of ["vm.json", "state"]) copyFileSync(join(snap, f), join(noMem, f));
        await expect(backend.restore(noMem, { runtimeRoot })).rejects.toMatchObject({
          code: "SM_SNAPSHOT_INVALID",
          details: { file: join(noMem, "memory") },
        });
        // Same size, valid magic, garbage device state: only QEMU can tell → it rejects the stream.
        const corrupt = join(work, "corrupt");
        cpSync(snap, corrupt, { recursive: true });
        const state = readFileSync(join(corrupt, "state"));
        for (let i = 64; i < state.length; i++) state[i] = (i * 131) & 0xff;
        writeFileSync(join(corrupt, "state"), state);
        const before = readdirSync(runtimeRoot).length;
        await expect(backend.restore(corrupt, { runtimeRoot })).rejects.toMatchObject({
          code: "SM_SNAPSHOT_INVALID",
          details: expect.objectContaining({ file: join(corrupt, "state") }),
        });
        expect(readdirSync(runtimeRoot).length).toBe(before);
      });

      it("leaves no QEMU and no runtime dir when the parent Node process is SIGKILLed", async () => {
        const bundle = join(work, "child-vm.mjs");
        const esbuild = await import("esbuild");
        esbuild.buildSync({
          entryPoints: [fileURLToPath(new URL("./fixtures/child-vm.ts", import.meta.url))],
          bundle: true,
          platform: "node",
          format: "esm",
          target: "node20",
          outfile: bundle,
          alias: {
            "@supermachine/hypervisor": join(REPO, "packages/hypervisor/src/index.ts"),
            "@supermachine/hypervisor-kvm": join(REPO, "packages/hypervisor-kvm/src/index.ts"),
            "@supermachine/hypervisor-hvf": join(REPO, "packages/hypervisor-hvf/src/index.ts"),
          },
          logLevel: "silent",
        });
        const childRoot = join(work, "child-rt");
        const child = spawn(process.execPath, [bundle, o.name, snap, childRoot], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        child.stderr.on("data", (d) => {
          err += d;
        });
        const info = await new Promise<{ pid: number; runtimeDir: string }>((resolve, reject) => {
          child.stdout.on("data", (d) => {
            out += d;
            const nl = out.indexOf("\n");
            if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
          });
          child.once("exit", (code) => reject(new Error(`child exited (${code}) before reporting: ${err}`)));
        });
        expect(pidAlive(info.pid)).toBe(true);
        expect(existsSync(info.runtimeDir)).toBe(true);
        child.kill("SIGKILL");
        await until("QEMU to die with its parent", () => !pidAlive(info.pid), 10_000);
        await until(
          "the runtime dir to be removed by the reaper",
          () => !existsSync(info.runtimeDir),
          10_000,
        );
        expect(execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" })).not.toContain(info.runtimeDir);
      });

      it("QEMU accepts the full device set: rootfs, two volumes (rw + ro), restricted and nat NICs", async () => {
        const vol = (n: string) => {
          const p = join(work, n);
          writeFileSync(p, Buffer.alloc(1024 * 1024));
          return p;
        };
        const files = await guest.prepare(o.arch, join(work, "devset"));
        for (const network of ["restricted", "nat"] as const) {
          const vm = await backend.boot({
            ...files,
            rootfs: files.rootfs ?? vol("fake-root.img"),
            volumes: [{ path: vol(`a-${network}.img`) }, { path: vol(`b-${network}.img`), readOnly: true }],
            network,
            accel: "tcg",
            runtimeRoot,
          });
          vms.push(vm);
          expect(vm.state).toBe("running");
          expect(vm.config.network).toBe(network);
          expect((await vm.stop()).cause).toBe("stop");
        }
      });

      it("stops: exited resolves with cause stop and the runtime dirs are gone", async () => {
        const exit = await booted.stop({
          guestShutdown: () => bootClient.poweroff(),
        });
        expect(exit.cause).toBe("stop");
        expect(booted.state).toBe("stopped");
        await restoredA.stop();
        for (const v of vms) {
          expect(pidAlive(v.pid)).toBe(false);
          expect(existsSync(v.runtimeDir)).toBe(false);
        }
        expect(readdirSync(runtimeRoot)).toEqual([]);
      });
    },
  );
}
