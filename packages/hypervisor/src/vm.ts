/** The live QEMU VM (implements the `Vm` contract). Created by the driver, never directly by users. */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
} from "node:fs";
import { connect, type Socket } from "node:net";
import { dirname, join, resolve } from "node:path";
import type { Duplex } from "node:stream";
import type { GuestArch } from "@supermachine/base";
import type { MachineProfile } from "./argv";
import {
  CONSOLE_CHECK_MS,
  CONSOLE_KEEP_BYTES,
  CONSOLE_MAX_BYTES,
  CONSOLE_TAIL_LINES,
  MIGRATION_MAX_BANDWIDTH_BYTES_PER_S,
  MIGRATION_POLL_MS,
  MIGRATION_TIMEOUT_MS,
  SNAPSHOT_FORMAT_VERSION,
  STOP_GUEST_SHUTDOWN_TIMEOUT_MS,
  STOP_QMP_QUIT_TIMEOUT_MS,
  STOP_SIGKILL_TIMEOUT_MS,
  STOP_SIGTERM_TIMEOUT_MS,
} from "./constants";
import type {
  MemoryStats,
  ResolvedAccel,
  ResolvedVmConfig,
  SnapshotDevice,
  SnapshotManifest,
  SnapshotResult,
  StopOptions,
  Vm,
  VmEvents,
  VmExit,
  VmExitCause,
  VmState,
} from "./contract";
import { HypervisorError } from "./errors";
import { OperationLock } from "./lock";
import { readMemoryStats, type SpawnedVmm } from "./process";
import { QmpClient, type QmpEvent } from "./qmp";
import { removeRuntimeDir } from "./runtime";
import {
  copyMemoryFile,
  createSparseFile,
  MANIFEST_FILE,
  MEMORY_FILE,
  STATE_FILE,
  writeJsonSync,
} from "./snapshot-files";

/** Shell-quote for QEMU's `exec:` migration URIs (run by /bin/sh -c). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolve true if `p` settles within `ms`, else false. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((r) => {
    t = setTimeout(() => r(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(t);
  }
}

/** Read the last `lines` lines of a (possibly large) text file. */
/** The last `max` bytes of a file (empty if it does not exist). */
function readTailBytes(path: string, max: number): Buffer {
  if (!existsSync(path)) return Buffer.alloc(0);
  const size = statSync(path).size;
  const want = Math.min(size, max);
  const buf = Buffer.alloc(want);
  const fd = openSync(path, "r");
  try {
    const n = readSync(fd, buf, 0, want, size - want);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** Longest console line quoted in messages; the guest writes what it likes to its console. */
const CONSOLE_LINE_MAX = 500;

/**
 * The last `lines` lines of console text, fit to be quoted in an error message: CRs dropped, other
 * control characters (terminal escapes from a hostile guest) shown as U+FFFD, long lines cut.
 */
function lastLines(text: string, lines: number): string {
  const all = text.replace(/\r/g, "").split("\n");
  if (all.length && all[all.length - 1] === "") all.pop();
  return all
    .slice(-lines)
    .map((l) => {
      const clean = l.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "\ufffd");
      return clean.length > CONSOLE_LINE_MAX
        ? `${clean.slice(0, CONSOLE_LINE_MAX)}… (${clean.length} chars)`
        : clean;
    })
    .join("\n");
}

export interface QemuVmInit {
  id: string;
  profile: MachineProfile;
  config: ResolvedVmConfig;
  accel: ResolvedAccel;
  runtimeDir: string;
  spawned: SpawnedVmm;
  qmpSocketPath: string;
  agentSocketPath: string;
  consoleLogPath: string;
  memPath: string;
  /** RAM is a share=on file (booted VM) → snapshots use x-ignore-shared + memory copy. */
  memShared: boolean;
  /** What a snapshot records to recreate this machine. */
  machineRecord: {
    kernelPath: string;
    kernelRelease?: string;
    initrdPath: string;
    cmdline: string;
    devices: SnapshotDevice[];
    qemuVersion?: string;
  };
  restoredFrom?: string;
  /**
   * Rewrite a full-RAM migration stream into (shared RAM file `memPath` + device-state-only `outState`) using a
   * helper VMM. Provided by the driver.
   */
  compact?: (fullState: string, memPath: string, outState: string) => Promise<void>;
  /** Pending `-incoming defer` load (prepared restore). */
  incoming?: { statePath: string; ramInState: boolean };
  /** The VMM's process, pipes and sockets do not keep Node's event loop alive (backend option). */
  unref?: boolean;
}

export class QemuVm extends EventEmitter implements Vm {
  readonly id: string;
  readonly pid: number;
  readonly arch: GuestArch;
  readonly accel: ResolvedAccel;
  readonly config: ResolvedVmConfig;
  readonly runtimeDir: string;
  readonly consoleLogPath: string;
  readonly agentSocketPath: string;
  readonly restoredFrom?: string;
  readonly exited: Promise<VmExit>;

  private _state: VmState = "starting";
  private qmp?: QmpClient;
  private readonly lock = new OperationLock();
  private readonly init: QemuVmInit;
  private stopRequested = false;
  private stopPromise?: Promise<VmExit>;
  private lastShutdownReason?: string;
  private guestPanicked = false;
  private agentSock?: Socket;
  private processGone = false;
  private isFrozen = false;
  /** Why the last snapshot of this (restored) VM could not be compacted, if it could not (diagnostics). */
  compactionError?: Error;
  /** Console bytes kept from before the log file was last trimmed. */
  private consoleCarry: Buffer = Buffer.alloc(0);
  /** How much console output trimming dropped (diagnostics; writes racing a trim are not counted). */
  consoleTrimmedBytes = 0;
  private readonly consoleTimer: NodeJS.Timeout;

  constructor(init: QemuVmInit) {
    super();
    this.init = init;
    this.id = init.id;
    this.pid = init.spawned.pid;
    this.arch = init.profile.arch;
    this.accel = init.accel;
    this.config = init.config;
    this.runtimeDir = init.runtimeDir;
    this.consoleLogPath = init.consoleLogPath;
    this.agentSocketPath = init.agentSocketPath;
    if (init.restoredFrom) this.restoredFrom = init.restoredFrom;
    this.consoleTimer = setInterval(() => this.trimConsole(), CONSOLE_CHECK_MS);
    this.consoleTimer.unref();
    this.exited = init.spawned.exit.then((r) => this.onProcessExit(r.code, r.signal));
    // An unhandled "error"-less emitter is fine: we only emit "state" and "exit".
  }

  get state(): VmState {
    return this._state;
  }

  private setState(next: VmState): void {
    const prev = this._state;
    if (prev === next) return;
    this._state = next;
    this.emit("state", next, prev);
  }

  override on<K extends keyof VmEvents>(event: K, listener: (...args: VmEvents[K]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void);
  }
  override off<K extends keyof VmEvents>(event: K, listener: (...args: VmEvents[K]) => void): this {
    return super.off(event, listener as (...args: unknown[]) => void);
  }

  /** Connect QMP (racing the process exit). Called by the driver right after spawn. */
  async connect(): Promise<void> {
    const ac = new AbortController();
    const exitedEarly = this.init.spawned.exit.then(() => {
      ac.abort(new Error("exited"));
      throw this.startError("QEMU exited during startup");
    });
    exitedEarly.catch(() => {});
    const qmp = await Promise.race([
      QmpClient.connect(this.init.qmpSocketPath, { signal: ac.signal }),
      exitedEarly,
    ]).catch((err) => {
      if (err instanceof HypervisorError && err.code === "SM_VMM_START") throw err;
      throw this.startError(`QMP did not come up: ${(err as Error).message}`, err);
    });
    this.qmp = qmp;
    if (this.init.unref) qmp.unref();
    qmp.on("event", (e) => this.onQmpEvent(e));
  }

  /** Mark a freshly booted VM as running (driver). */
  markRunning(): void {
    this.setState("running");
  }

  private startError(what: string, cause?: unknown): HypervisorError {
    const stderr = this.init.spawned.stderr.toString().trim();
    return new HypervisorError(
      "SM_VMM_START",
      `${what}.${stderr ? ` QEMU said: ${stderr.split("\n").slice(-10).join(" | ")}` : ""} Command: ${this.init.spawned.argv.join(" ")}`,
      { cause, details: { stderr, argv: this.init.spawned.argv } },
    );
  }

  private onQmpEvent(e: QmpEvent): void {
    if (e.event === "SHUTDOWN") this.lastShutdownReason = String(e.data?.reason ?? "unknown");
    else if (e.event === "GUEST_PANICKED") this.guestPanicked = true;
  }

  private onProcessExit(code: number | null, signal: NodeJS.Signals | null): VmExit {
    this.processGone = true;
    this.isFrozen = false;
    clearInterval(this.consoleTimer);
    this.qmp?.close();
    this.agentSock?.destroy();
    const consoleTail = this.consoleTail();
    let cause: VmExitCause;
    let error: HypervisorError | undefined;
    const tailMsg = consoleTail ? `\nLast console lines:\n${consoleTail}` : " (console is empty)";
    if (this.stopRequested) cause = "stop";
    else if (
      this.guestPanicked ||
      this.lastShutdownReason === "guest-reset" ||
      this.lastShutdownReason === "guest-panic"
    ) {
      cause = "guest-panic";
      error = new HypervisorError(
        "SM_GUEST_CRASHED",
        `guest of VM ${this.id} crashed (kernel panic or reset).${tailMsg}`,
        {
          details: { consoleTail, reason: this.lastShutdownReason ?? "guest-panicked" },
        },
      );
    } else if (this.lastShutdownReason?.startsWith("guest")) {
      cause = "guest-shutdown";
      error = new HypervisorError(
        "SM_GUEST_CRASHED",
        `guest of VM ${this.id} powered off unexpectedly (${this.lastShutdownReason}).${tailMsg}`,
        { details: { consoleTail, reason: this.lastShutdownReason } },
      );
    } else {
      cause = "vmm-crashed";
      const stderr = this.init.spawned.stderr.toString().trim();
      error = new HypervisorError(
        "SM_VMM_CRASHED",
        `the VMM process of VM ${this.id} (pid ${this.pid}) died unexpectedly (${signal ? `signal ${signal}` : `exit code ${code}`}).${stderr ? ` QEMU stderr: ${stderr.split("\n").slice(-10).join(" | ")}` : ""}${tailMsg}`,
        { details: { consoleTail, stderr, exitCode: code, signal } },
      );
    }
    try {
      removeRuntimeDir(this.runtimeDir);
    } catch {}
    this.setState(cause === "stop" ? "stopped" : "failed");
    const exit: VmExit = { cause, exitCode: code, signal, consoleTail };
    if (error) exit.error = error;
    this.emit("exit", exit);
    return exit;
  }

  private assertState(allowed: VmState[], op: string): void {
    if (!allowed.includes(this._state)) {
      throw new HypervisorError(
        "SM_VM_STATE",
        `cannot ${op} VM ${this.id}: it is ${this._state} (allowed: ${allowed.join(", ")})`,
        {
          details: { state: this._state, op },
        },
      );
    }
  }

  private requireQmp(): QmpClient {
    // a frozen QEMU would read the command only after thaw(): continue it first
    this.thaw();
    if (!this.qmp || this.qmp.isClosed)
      throw new HypervisorError("SM_VM_STATE", `VM ${this.id} has no QMP connection (state ${this._state})`);
    return this.qmp;
  }

  /** Finish a prepared restore: load the state and resume (or stay paused with `resume: false`). */
  async completeIncoming(opts: { resume?: boolean } = {}): Promise<void> {
    return this.lock.run("restore", async () => {
      this.assertState(["starting"], "start the restore of");
      const inc = this.init.incoming;
      if (!inc)
        throw new HypervisorError("SM_VM_STATE", `VM ${this.id} is not waiting for an incoming state`);
      this.init.incoming = undefined;
      const qmp = this.requireQmp();
      const died = this.init.spawned.exit.then(() => {
        throw new HypervisorError(
          "SM_SNAPSHOT_INVALID",
          `QEMU rejected the snapshot state ${inc.statePath}: ${this.init.spawned.stderr.toString().trim().split("\n").slice(-5).join(" | ") || "process exited"}. Delete the snapshot and capture it again.`,
          { details: { file: inc.statePath, stderr: this.init.spawned.stderr.toString() } },
        );
      });
      died.catch(() => {});
      const load = async () => {
        await qmp.execute("migrate-set-capabilities", {
          capabilities: [{ capability: "x-ignore-shared", state: !inc.ramInState }],
        });
        await qmp.execute("migrate-incoming", { uri: `exec:cat ${shellQuote(inc.statePath)}` });
        const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
        for (;;) {
          const st = await qmp.execute<{ status: string }>("query-status");
          if (st.status !== "inmigrate") {
            if (st.status !== "paused" && st.status !== "running") {
              throw new HypervisorError(
                "SM_SNAPSHOT_INVALID",
                `restore of ${inc.statePath} ended in QEMU state ${st.status}`,
                {
                  details: { file: inc.statePath },
                },
              );
            }
            break;
          }
          if (Date.now() > deadline)
            throw new HypervisorError(
              "SM_TIMEOUT",
              `loading ${inc.statePath} took over ${MIGRATION_TIMEOUT_MS} ms`,
            );
          await sleep(MIGRATION_POLL_MS);
        }
        if (opts.resume !== false) await qmp.execute("cont");
      };
      try {
        await Promise.race([load(), died]);
      } catch (err) {
        // QEMU exits when it rejects the stream; QMP may report the closed socket first. Prefer the clear error.
        if (await within(this.init.spawned.exit, 2_000)) await died;
        throw err;
      }
      this.setState(opts.resume === false ? "paused" : "running");
    });
  }

  /** Migrate the (paused) VM's state to `path`; `ignoreShared` leaves shared RAM out of the stream. */
  private async migrateTo(path: string, ignoreShared: boolean): Promise<void> {
    const qmp = this.requireQmp();
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "x-ignore-shared", state: ignoreShared }],
    });
    // The VM is paused: no reason for QEMU's default 128 MiB/s migration throttle when writing to a file.
    await qmp.execute("migrate-set-parameters", { "max-bandwidth": MIGRATION_MAX_BANDWIDTH_BYTES_PER_S });
    const mark = this.init.spawned.stderr.written;
    await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(path)}` });
    await this.waitOutgoingMigration(qmp, mark);
  }

  /** Used by the driver's snapshot compaction helper: save device state of a paused, shared-RAM VM. */
  saveDeviceState(path: string): Promise<void> {
    return this.lock.run("save-state", async () => {
      this.assertState(["paused"], "save the device state of");
      if (!this.init.memShared) throw new HypervisorError("SM_VM_STATE", "saveDeviceState needs shared RAM");
      await this.migrateTo(path, true);
    });
  }

  async agentStream(): Promise<Duplex> {
    this.assertState(["running", "paused", "starting"], "open the agent stream of");
    const old = this.agentSock;
    if (old && !old.destroyed) {
      const closed = new Promise<void>((r) => old.once("close", () => r()));
      old.destroy();
      await closed;
    }
    const deadline = Date.now() + 5_000;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(this.agentSocketPath);
          s.once("connect", () => {
            s.removeListener("error", rej);
            res(s);
          });
          s.once("error", rej);
        });
        this.agentSock = sock;
        if (this.init.unref) sock.unref();
        sock.once("close", () => {
          if (this.agentSock === sock) this.agentSock = undefined;
        });
        if (this.processGone) sock.destroy();
        return sock;
      } catch (err) {
        if (this.processGone || Date.now() > deadline) {
          throw new HypervisorError(
            "SM_VM_STATE",
            `cannot connect to the agent socket of VM ${this.id}: ${(err as Error).message}`,
            {
              cause: err,
            },
          );
        }
        await sleep(10);
      }
    }
  }

  /** True between freeze() and thaw() (or the VMM's exit). */
  get frozen(): boolean {
    return this.isFrozen;
  }

  /**
   * Stop the whole VMM process (SIGSTOP): until thaw() it uses no CPU at all, QEMU's own main loop
   * included. Unlike pause() (QMP `stop`), the guest's clock runs on: it derives from the host's clock
   * (the TSC under TCG, kvm-clock under KVM), so after thaw() the guest has the right time, like a VM
   * the host did not schedule for a while. Meant for idle VMs: a QMP operation or stop() thaws first;
   * one already in flight completes after thaw(). Synchronous (one signal). SM_VM_STATE unless running.
   */
  freeze(): void {
    this.assertState(["running"], "freeze");
    if (this.isFrozen) return;
    if (!this.init.spawned.child.kill("SIGSTOP"))
      throw new HypervisorError("SM_VM_STATE", `cannot freeze VM ${this.id}: its VMM process is gone`);
    this.isFrozen = true;
  }

  /** Continue the VMM process after freeze() (SIGCONT). Idempotent; a no-op once the process is gone. */
  thaw(): void {
    if (!this.isFrozen) return;
    this.isFrozen = false;
    if (!this.processGone) this.init.spawned.child.kill("SIGCONT");
  }

  pause(): Promise<void> {
    return this.lock.run("pause", async () => {
      this.assertState(["running"], "pause");
      await this.requireQmp().execute("stop");
      this.setState("paused");
    });
  }

  resume(): Promise<void> {
    return this.lock.run("resume", async () => {
      this.assertState(["paused"], "resume");
      await this.requireQmp().execute("cont");
      this.setState("running");
    });
  }

  /** `mark`: QEMU's stderr position before the migration; the writer (`cat`) reports errors there. */
  private async waitOutgoingMigration(qmp: QmpClient, mark: number): Promise<void> {
    const deadline = Date.now() + MIGRATION_TIMEOUT_MS;
    for (;;) {
      const m = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
      if (m.status === "completed") return;
      if (m.status === "failed" || m.status === "cancelled") {
        await sleep(100); // the writer's complaint may still be on its way through QEMU's stderr pipe
        const said = this.init.spawned.stderr.since(mark).trim().split("\n").slice(-5).join(" | ");
        // QEMU only sees its pipe to the writer break; a full disk is told by the writer
        const full = /No space left on device/i.test(said)
          ? "ENOSPC"
          : /Disk quota exceeded/i.test(said)
            ? "EDQUOT"
            : undefined;
        throw new HypervisorError(
          "SM_QMP",
          `snapshot migration ${m.status}: ${m["error-desc"] ?? "no detail"}${said ? ` (QEMU stderr: ${said})` : ""}`,
          { details: { stderr: said, ...(full ? { errno: full } : {}) } },
        );
      }
      if (Date.now() > deadline) {
        await qmp.execute("migrate_cancel").catch(() => {});
        throw new HypervisorError("SM_TIMEOUT", `snapshot migration took over ${MIGRATION_TIMEOUT_MS} ms`);
      }
      await sleep(MIGRATION_POLL_MS);
    }
  }

  snapshot(dir: string): Promise<SnapshotResult> {
    return this.lock.run("snapshot", async () => {
      this.assertState(["running", "paused"], "snapshot");
      const dest = resolve(dir);
      if (existsSync(dest)) {
        throw new HypervisorError(
          "SM_VMM_CONFIG",
          `snapshot destination ${dest} already exists; choose a new directory or delete it`,
        );
      }
      const qmp = this.requireQmp();
      const t0 = performance.now();
      const wasRunning = this._state === "running";
      mkdirSync(dirname(dest), { recursive: true });
      const tmp = `${dest}.tmp-${randomBytes(4).toString("hex")}`;
      mkdirSync(tmp, { mode: 0o755 });
      let resumed = false;
      try {
        if (wasRunning) {
          await qmp.execute("stop");
          this.setState("paused");
        }
        const tState = performance.now();
        const memBytes = this.config.memoryMib * 1024 * 1024;
        let ramInState = false;
        let tMem: number;
        let tResumed: number | undefined;
        if (this.init.memShared) {
          // Booted VM: RAM lives in a shared file → device state only, then copy the RAM file (still paused).
          await this.migrateTo(join(tmp, STATE_FILE), true);
          tMem = performance.now();
          await copyMemoryFile(this.init.memPath, join(tmp, MEMORY_FILE));
        } else {
          // Restored VM: RAM is a private CoW mapping. Full-RAM migration (paused), resume, then compact offline:
          // a helper QEMU loads the stream into a shared RAM file and saves device state only, so the new snapshot
          // has the same format (CoW restores). If compaction fails the full stream is kept (ramInState: true).
          const full = join(tmp, "state.full");
          await this.migrateTo(full, false);
          tMem = performance.now();
          if (wasRunning) {
            await qmp.execute("cont");
            resumed = true;
            this.setState("running");
            tResumed = performance.now();
          }
          createSparseFile(join(tmp, MEMORY_FILE), memBytes);
          try {
            if (!this.init.compact) throw new Error("no compaction helper");
            await this.init.compact(full, join(tmp, MEMORY_FILE), join(tmp, STATE_FILE));
            rmSync(full, { force: true });
          } catch (err) {
            this.compactionError = err as Error;
            rmSync(join(tmp, STATE_FILE), { force: true });
            createSparseFile(join(tmp, MEMORY_FILE), memBytes);
            renameSync(full, join(tmp, STATE_FILE));
            ramInState = true;
          }
        }
        const tDone = performance.now();
        const rec = this.init.machineRecord;
        const manifest: SnapshotManifest = {
          format: SNAPSHOT_FORMAT_VERSION,
          backend: this.init.profile.backend,
          arch: this.arch,
          machine: this.init.profile.machine,
          accel: this.accel,
          memoryMib: this.config.memoryMib,
          vcpus: this.config.vcpus,
          kernelPath: rec.kernelPath,
          initrdPath: rec.initrdPath,
          cmdline: rec.cmdline,
          devices: rec.devices,
          ramInState,
          createdAt: new Date().toISOString(),
          stateBytes: statSync(join(tmp, STATE_FILE)).size,
        };
        if (rec.kernelRelease) manifest.kernelRelease = rec.kernelRelease;
        if (rec.qemuVersion) manifest.qemuVersion = rec.qemuVersion;
        writeJsonSync(join(tmp, MANIFEST_FILE), manifest);
        renameSync(tmp, dest);
        if (wasRunning && !resumed) {
          await qmp.execute("cont");
          resumed = true;
          this.setState("running");
        }
        const tEnd = performance.now();
        return {
          dir: dest,
          manifest,
          timings: {
            pausedMs: wasRunning ? (tResumed ?? tEnd) - tState : 0,
            stateMs: tMem - tState,
            memoryMs: tDone - tMem,
            totalMs: tEnd - t0,
          },
        };
      } catch (err) {
        rmSync(tmp, { recursive: true, force: true });
        if (wasRunning && !resumed && !this.processGone && this.qmp && !this.qmp.isClosed) {
          await this.qmp.execute("cont").then(
            () => this.setState("running"),
            () => {},
          );
        }
        throw err;
      }
    });
  }

  stop(options: StopOptions = {}): Promise<VmExit> {
    if (this.stopPromise) return this.stopPromise;
    if (this.processGone) return this.exited;
    this.thaw(); // QMP quit, SIGTERM and the guest's shutdown need a running process
    this.stopRequested = true;
    this.setState("stopping");
    const exit = this.init.spawned.exit;
    const kill = (sig: NodeJS.Signals) => {
      try {
        this.init.spawned.child.kill(sig);
      } catch {}
    };
    this.stopPromise = (async () => {
      if (options.guestShutdown && !this.init.incoming) {
        const t = options.guestShutdownTimeoutMs ?? STOP_GUEST_SHUTDOWN_TIMEOUT_MS;
        const deadline = Date.now() + t;
        await within(
          options.guestShutdown().catch(() => {}),
          t,
        );
        if (await within(exit, Math.max(0, deadline - Date.now()))) return this.exited;
      }
      if (this.qmp && !this.qmp.isClosed) {
        this.qmp.execute("quit").catch(() => {});
        if (await within(exit, options.qmpQuitTimeoutMs ?? STOP_QMP_QUIT_TIMEOUT_MS)) return this.exited;
      }
      kill("SIGTERM");
      if (await within(exit, options.sigtermTimeoutMs ?? STOP_SIGTERM_TIMEOUT_MS)) return this.exited;
      kill("SIGKILL");
      await within(exit, STOP_SIGKILL_TIMEOUT_MS);
      return this.exited;
    })();
    return this.stopPromise;
  }

  async memoryStats(): Promise<MemoryStats> {
    if (this.processGone) throw new HypervisorError("SM_VM_STATE", `VM ${this.id} has exited`);
    return readMemoryStats(this.pid);
  }

  consoleTail(lines = CONSOLE_TAIL_LINES): string {
    try {
      const file = readTailBytes(this.consoleLogPath, CONSOLE_KEEP_BYTES);
      return lastLines(Buffer.concat([this.consoleCarry, file]).toString("utf8"), lines);
    } catch {
      return lastLines(this.consoleCarry.toString("utf8"), lines);
    }
  }

  /**
   * Keep the console log bounded: past CONSOLE_MAX_BYTES its last CONSOLE_KEEP_BYTES move to memory
   * (consoleTail still shows them) and the file is emptied; QEMU appends to the new end.
   */
  private trimConsole(): void {
    try {
      const size = statSync(this.consoleLogPath).size;
      if (size <= CONSOLE_MAX_BYTES) return;
      const keep = readTailBytes(this.consoleLogPath, CONSOLE_KEEP_BYTES);
      truncateSync(this.consoleLogPath, 0);
      this.consoleCarry = keep;
      this.consoleTrimmedBytes += size - keep.length;
    } catch {
      /* not created yet, or already removed */
    }
  }
}
