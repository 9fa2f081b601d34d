/**
 * The QEMU driver shared by all backends: a backend is a `MachineProfile` + kernel/accelerator policy
 * handed to `createQemuBackend`.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { baseCmdline, buildQemuArgv, devicesFor, type MachineProfile } from "./argv";
import {
  newVmId,
  validateAccel,
  validateId,
  validateNetwork,
  validateVmConfig,
  validateVolumes,
} from "./config";
import { BACKEND_CONTRACT_VERSION } from "./constants";
import type {
  Accel,
  AccelResolution,
  BackendCapabilities,
  PreparedRestore,
  ResolvedAccel,
  ResolvedVmConfig,
  RestoreOverrides,
  SnapshotDevice,
  SnapshotFiles,
  SnapshotManifest,
  Vm,
  VmConfig,
  VmmBackend,
} from "./contract";
import { HypervisorError } from "./errors";
import { type KernelBundle, resolveKernelBundle } from "./kernel";
import { findExecutable, qemuVersion, resolveQemu, spawnVmm } from "./process";
import { createRuntimeDir, defaultRuntimeRoot, registerVmmPid, removeRuntimeDir } from "./runtime";
import { readSnapshotManifest } from "./snapshot-files";
import { QemuVm } from "./vm";

/** Longest usable AF_UNIX path on Linux/macOS (sun_path minus NUL, macOS is 104). */
const UNIX_PATH_MAX = 103;

export interface QemuBackendOptions {
  /** Backend short name ("kvm", "hvf"). */
  name: string;
  profile: MachineProfile;
  /** The file QEMU boots for a bundle (x86_64: the derived ELF vmlinux). */
  kernelFile(bundle: KernelBundle): string;
  /**
   * Resolve "auto" (and validate a forced accelerator) for this host. Called with the QEMU binary and kernel
   * file so it can run a probe boot. Must not throw for "auto": fall back to TCG with a reason instead.
   */
  resolveAccel(requested: Accel, ctx: { qemuBinary: string; kernelPath: string }): Promise<AccelResolution>;
  /** Accelerators this backend may use on this host kind. */
  accels: ResolvedAccel[];
  /** Called with one-line warnings (accelerator fallback). Default: process.emitWarning. */
  warn?: (message: string) => void;
  /** Environment for kernel resolution (default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * Default true: a running VM keeps Node's event loop alive, like a child process. false: its QEMU
   * process, pipes, QMP and agent sockets are unref'd — an idle VM never holds the program open
   * (operations in flight still do through their timers; await nothing else than a VM and the program
   * may end). VMs are killed at process exit either way.
   */
  keepEventLoopAlive?: boolean;
}

const RESTORE_KEYS = new Set<keyof RestoreOverrides>([
  "id",
  "rootfs",
  "volumes",
  "kernel",
  "initrd",
  "network",
  "accel",
  "runtimeRoot",
  "qemuBinary",
  "extraQemuArgs",
]);

function socketPaths(runtimeDir: string) {
  const p = {
    qmp: join(runtimeDir, "qmp.sock"),
    agent: join(runtimeDir, "agent.sock"),
    console: join(runtimeDir, "console.log"),
    memory: join(runtimeDir, "memory"),
  };
  if (Buffer.byteLength(p.agent) > UNIX_PATH_MAX) {
    throw new HypervisorError(
      "SM_VMM_CONFIG",
      `runtime dir ${runtimeDir} is too long for Unix socket paths (${UNIX_PATH_MAX} bytes max): use a shorter runtimeRoot or id`,
    );
  }
  return p;
}

/** Create a `VmmBackend` over QEMU for a machine profile. */
export function createQemuBackend(opts: QemuBackendOptions): VmmBackend {
  const { profile } = opts;
  const warn = opts.warn ?? ((m: string) => process.emitWarning(m, { code: "SM_ACCEL_FALLBACK" }));
  const accelMemo = new Map<string, Promise<AccelResolution>>();

  const capabilities: BackendCapabilities = {
    snapshot: true,
    cowRestore: true,
    prepareRestore: true,
    vsock: existsSync("/dev/vhost-vsock"),
    virtiofs:
      ["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"].some(existsSync) || !!findExecutable("virtiofsd"),
    arch: profile.arch,
    accels: opts.accels,
  };

  const qemuFor = (override?: string) => resolveQemu(override ?? profile.qemuBinary, profile.installHint);

  async function resolveAccelFor(
    requested: Accel,
    qemuBinary: string,
    kernelPath: string,
  ): Promise<AccelResolution> {
    const key = `${requested}|${qemuBinary}|${kernelPath}`;
    let p = accelMemo.get(key);
    if (!p) {
      p = opts.resolveAccel(requested, { qemuBinary, kernelPath });
      accelMemo.set(key, p);
      p.catch(() => accelMemo.delete(key));
    }
    const r = await p;
    if (r.fallbackReason) {
      // One warning per process and reason (warnOnce semantics via the memo: printed when first resolved).
      const msg = `supermachine: hardware acceleration unavailable (${r.fallbackReason}); using TCG software emulation (much slower). Set accel: "tcg" to silence this.`;
      if (!warnedMessages.has(msg)) {
        warnedMessages.add(msg);
        warn(msg);
      }
    }
    return r;
  }

  function kernelFor(path?: string): { bundle: KernelBundle; kernelPath: string } {
    const bundle = resolveKernelBundle({
      arch: profile.arch,
      ...(path ? { path } : {}),
      ...(opts.env ? { env: opts.env } : {}),
    });
    return { bundle, kernelPath: opts.kernelFile(bundle) };
  }

  async function launch(params: {
    config: ResolvedVmConfig;
    accel: ResolvedAccel;
    qemuBinary: string;
    kernelPath: string;
    kernelRelease?: string;
    initrdPath: string;
    cmdline: string;
    devices: SnapshotDevice[];
    memPath?: string;
    incoming?: { statePath: string; ramInState: boolean };
    restoredFrom?: string;
    /** RAM mapping (default: shared when booting, private when restoring). */
    memShare?: boolean;
    /** Snapshot-compaction helper VMM (see QemuLaunchSpec.helperDrives). */
    helper?: boolean;
  }): Promise<QemuVm> {
    const { config } = params;
    const runtimeDir = createRuntimeDir(config.runtimeRoot, config.id);
    try {
      const paths = socketPaths(runtimeDir);
      const memPath = params.memPath ?? paths.memory;
      const memShare = params.memShare ?? !params.incoming;
      const argv = buildQemuArgv(profile, {
        accel: params.accel,
        memoryMib: config.memoryMib,
        vcpus: config.vcpus,
        kernelPath: params.kernelPath,
        initrdPath: params.initrdPath,
        cmdline: params.cmdline,
        memPath,
        memShare,
        devices: params.devices,
        qmpSocket: paths.qmp,
        agentSocket: paths.agent,
        consoleLog: paths.console,
        incoming: !!params.incoming,
        helperDrives: !!params.helper,
        extraArgs: params.incoming ? ["-S", ...config.extraQemuArgs] : config.extraQemuArgs,
      });
      const unref = opts.keepEventLoopAlive === false;
      const spawned = spawnVmm(params.qemuBinary, argv, runtimeDir, unref);
      registerVmmPid(runtimeDir, spawned.pid);
      const qv = qemuVersion(params.qemuBinary);
      const vm = new QemuVm({
        id: config.id,
        profile,
        config,
        accel: params.accel,
        runtimeDir,
        spawned,
        qmpSocketPath: paths.qmp,
        agentSocketPath: paths.agent,
        consoleLogPath: paths.console,
        memPath,
        memShared: memShare,
        compact: (fullState, memFile, outState) => compactState(params, fullState, memFile, outState),
        machineRecord: {
          kernelPath: params.kernelPath,
          ...(params.kernelRelease ? { kernelRelease: params.kernelRelease } : {}),
          initrdPath: params.initrdPath,
          cmdline: params.cmdline,
          devices: params.devices,
          ...(qv ? { qemuVersion: qv } : {}),
        },
        ...(params.restoredFrom ? { restoredFrom: params.restoredFrom } : {}),
        ...(params.incoming ? { incoming: params.incoming } : {}),
        unref,
      });
      try {
        await vm.connect();
      } catch (err) {
        spawned.child.kill("SIGKILL");
        await vm.exited;
        throw err;
      }
      return vm;
    } catch (err) {
      removeRuntimeDir(runtimeDir);
      throw err;
    }
  }

  /**
   * Snapshot compaction: load a full-RAM stream into a helper VMM whose RAM is the new snapshot's (shared) memory
   * file, never run it, and save device state only. Result: the standard (x-ignore-shared) snapshot format.
   */
  async function compactState(
    source: Parameters<typeof launch>[0],
    fullState: string,
    memFile: string,
    outState: string,
  ): Promise<void> {
    const id = `${source.config.id.slice(0, 40)}-compact-${Math.random().toString(36).slice(2, 8)}`;
    const helper = await launch({
      config: { ...source.config, id, extraQemuArgs: [] },
      accel: source.accel,
      qemuBinary: source.qemuBinary,
      kernelPath: source.kernelPath,
      initrdPath: source.initrdPath,
      cmdline: source.cmdline,
      // The live VM still owns its vsock CID: the never-run helper takes a random one (the CID is not guest state).
      devices: source.devices.map((d) =>
        d.kind === "vsock"
          ? { kind: "vsock" as const, cid: 0x10000000 + Math.floor(Math.random() * 0x10000000) }
          : d,
      ),
      memPath: memFile,
      memShare: true,
      incoming: { statePath: fullState, ramInState: true },
      helper: true,
    });
    try {
      await helper.completeIncoming({ resume: false });
      await helper.saveDeviceState(outState);
    } finally {
      await helper.stop();
    }
  }

  async function prepare(
    snapshot: string | SnapshotFiles,
    overrides: RestoreOverrides = {},
  ): Promise<{ vm: QemuVm; dir: string }> {
    if (typeof overrides !== "object" || overrides === null)
      throw new HypervisorError("SM_VMM_CONFIG", "restore overrides must be an object");
    for (const k of Object.keys(overrides)) {
      if (!RESTORE_KEYS.has(k as keyof RestoreOverrides)) {
        throw new HypervisorError(
          "SM_VMM_CONFIG",
          `unknown restore override "${k}" (known: ${[...RESTORE_KEYS].join(", ")})`,
        );
      }
    }
    const { files, manifest } = readSnapshotManifest(snapshot);
    const invalid = (file: string, why: string) =>
      new HypervisorError("SM_SNAPSHOT_INVALID", `snapshot ${files.dir}: ${file} ${why}`, {
        details: { file },
      });
    if (manifest.arch !== profile.arch) {
      throw invalid(
        files.manifest,
        `is for ${manifest.arch}; backend ${opts.name} runs ${profile.arch} guests`,
      );
    }
    const qemuBinary = qemuFor(overrides.qemuBinary);
    // Device list: same shape, paths may be overridden.
    const devices: SnapshotDevice[] = manifest.devices.map((d) => ({ ...d }));
    const blkVolumes = devices.filter(
      (d): d is Extract<SnapshotDevice, { kind: "blk" }> => d.kind === "blk" && d.role === "volume",
    );
    if (overrides.volumes !== undefined) {
      const vols = validateVolumes(overrides.volumes);
      if (vols.length !== blkVolumes.length) {
        throw new HypervisorError(
          "SM_VMM_CONFIG",
          `the snapshot has ${blkVolumes.length} volume(s); restore overrides give ${vols.length} (the device layout cannot change on restore)`,
        );
      }
      vols.forEach((v, i) => {
        const d = blkVolumes[i] as Extract<SnapshotDevice, { kind: "blk" }>;
        d.path = v.path;
        d.readOnly = v.readOnly;
      });
    }
    for (const d of devices) {
      if (d.kind === "blk" && d.role === "rootfs" && overrides.rootfs !== undefined)
        d.path = resolve(overrides.rootfs);
      if (d.kind === "net" && overrides.network !== undefined) {
        const n = validateNetwork(overrides.network);
        if (n === "none")
          throw new HypervisorError(
            "SM_VMM_CONFIG",
            "the snapshot has a NIC: network can be 'nat' or 'restricted', not 'none'",
          );
        d.mode = n;
      }
      if (d.kind === "blk" && !existsSync(d.path))
        throw invalid(d.path, `(${d.role} image referenced by vm.json) is missing`);
    }
    if (
      overrides.network !== undefined &&
      overrides.network !== "none" &&
      !devices.some((d) => d.kind === "net")
    ) {
      throw new HypervisorError(
        "SM_VMM_CONFIG",
        "the snapshot was captured without a NIC; a restore cannot add one (re-bake with network)",
      );
    }
    const kernelPath = resolve(overrides.kernel ?? manifest.kernelPath);
    const initrdPath = resolve(overrides.initrd ?? manifest.initrdPath);
    if (!existsSync(kernelPath)) throw invalid(kernelPath, "(kernel referenced by vm.json) is missing");
    if (!existsSync(initrdPath)) throw invalid(initrdPath, "(initrd referenced by vm.json) is missing");
    const requested = overrides.accel === undefined ? manifest.accel : validateAccel(overrides.accel);
    const { accel } = await resolveAccelFor(requested, qemuBinary, kernelPath);
    if (accel !== manifest.accel) {
      throw invalid(
        files.manifest,
        `was captured with accel ${manifest.accel} but this restore resolves ${accel}; device/CPU state is not portable between accelerators — re-bake`,
      );
    }
    const config: ResolvedVmConfig = {
      id: overrides.id === undefined ? newVmId() : validateId(overrides.id),
      kernel: kernelPath,
      initrd: initrdPath,
      volumes: blkVolumes.map((d) => ({ path: d.path, readOnly: d.readOnly })),
      memoryMib: manifest.memoryMib,
      vcpus: manifest.vcpus,
      kernelArgs: [],
      network: devices.find((d) => d.kind === "net")?.mode ?? "none",
      vsock: devices.some((d) => d.kind === "vsock"),
      vsockCid: (devices.find((d) => d.kind === "vsock") as { cid?: number } | undefined)?.cid ?? 3,
      accel,
      runtimeRoot: overrides.runtimeRoot ? resolve(overrides.runtimeRoot) : defaultRuntimeRoot(),
      extraQemuArgs: overrides.extraQemuArgs ?? [],
    };
    const rootfs = devices.find((d) => d.kind === "blk" && d.role === "rootfs");
    if (rootfs && rootfs.kind === "blk") config.rootfs = rootfs.path;
    if (overrides.qemuBinary) config.qemuBinary = overrides.qemuBinary;
    const vm = await launch({
      config,
      accel,
      qemuBinary,
      kernelPath,
      ...(manifest.kernelRelease ? { kernelRelease: manifest.kernelRelease } : {}),
      initrdPath,
      cmdline: manifest.cmdline,
      devices,
      memPath: files.memory,
      incoming: { statePath: files.state, ramInState: manifest.ramInState },
      restoredFrom: files.dir,
    });
    return { vm, dir: files.dir };
  }

  const backend: VmmBackend = {
    version: BACKEND_CONTRACT_VERSION,
    name: opts.name,
    capabilities,

    async resolveAccel(requested: Accel = "auto"): Promise<AccelResolution> {
      const { kernelPath } = kernelFor();
      return resolveAccelFor(validateAccel(requested), qemuFor(), kernelPath);
    },

    async boot(input: VmConfig): Promise<Vm> {
      const config = validateVmConfig(input);
      const qemuBinary = qemuFor(config.qemuBinary);
      const { bundle, kernelPath } = kernelFor(config.kernel);
      if (config.vsock && !capabilities.vsock) {
        throw new HypervisorError(
          "SM_VMM_CONFIG",
          "vsock requested but this host has no /dev/vhost-vsock (modprobe vhost_vsock)",
        );
      }
      const { accel } = await resolveAccelFor(config.accel, qemuBinary, kernelPath);
      const cmdline = [
        baseCmdline(profile.consoleDevice),
        ...(profile.extraKernelArgs?.(accel) ?? []),
        ...config.kernelArgs,
      ].join(" ");
      const vm = await launch({
        config,
        accel,
        qemuBinary,
        kernelPath,
        kernelRelease: bundle.release,
        initrdPath: config.initrd,
        cmdline,
        devices: devicesFor(config),
      });
      vm.markRunning();
      return vm;
    },

    async prepareRestore(snapshot, overrides): Promise<PreparedRestore> {
      const { vm, dir } = await prepare(snapshot, overrides);
      let used = false;
      return {
        id: vm.id,
        pid: vm.pid,
        snapshotDir: dir,
        async start() {
          if (used)
            throw new HypervisorError(
              "SM_VM_STATE",
              `prepared restore ${vm.id} was already started or disposed`,
            );
          used = true;
          try {
            await vm.completeIncoming();
          } catch (err) {
            await vm.stop();
            throw err;
          }
          return vm;
        },
        async dispose() {
          used = true;
          if (vm.state === "starting") await vm.stop();
        },
      };
    },

    async restore(snapshot, overrides): Promise<Vm> {
      const prepared = await backend.prepareRestore(snapshot, overrides);
      return prepared.start();
    },

    async readSnapshot(snapshot): Promise<SnapshotManifest> {
      return readSnapshotManifest(snapshot).manifest;
    },
  };
  return backend;
}

const warnedMessages = new Set<string>();
