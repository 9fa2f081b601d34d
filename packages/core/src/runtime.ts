/**
 * The default runtime: adapters from the real lower packages to core's ports.
 * Backends are loaded lazily through a short-name → package map, so core does not need the macOS
 * backend on Linux (or the reverse).
 */
import { createHash } from "node:crypto";
import { closeSync, createReadStream, existsSync, openSync, readSync, rmSync, statSync } from "node:fs";
import { resolve } from "node:path";
import type { Duplex } from "node:stream";
import { AgentClient } from "@supermachine/agent-protocol";
import {
  BASE_GUEST_MODULES,
  type Vm as HvVm,
  NET_GUEST_MODULES,
  resolveKernelBundle,
  type VmmBackend,
} from "@supermachine/hypervisor";
import {
  imageLayers,
  imageSourceFromEnv,
  importArchive,
  importLayout,
  type Image as OciImage,
  pull,
} from "@supermachine/oci";
import { buildInitramfs, buildRootfs } from "@supermachine/rootfs";
import { codeOf, SupermachineError } from "./errors";
import { agentCandidates, guestPackageName, kernelDirFor } from "./guest";
import { loadFromEnvSource } from "./image-source";
import { egressPortOf } from "./network/agent-egress";
import { hostArch } from "./paths";
import type {
  AgentChild,
  AgentExecArgs,
  AgentPort,
  BackendPort,
  BootSpec,
  LiveVmPort,
  PreparedRestorePort,
  RestoreSpec,
} from "./ports";
import { preflight } from "./preflight";
import type { KernelInfo, ResolvedImage, Runtime } from "./runtime-port";
import type { ResolvedBuildOptions } from "./validate";

/** Backend short name → package. Loaded with import() on first use. */
export const BACKEND_PACKAGES: Record<
  string,
  { pkg: string; factory: string; load: () => Promise<unknown> }
> = {
  kvm: {
    pkg: "@supermachine/hypervisor-kvm",
    factory: "createKvmBackend",
    load: () => import("@supermachine/hypervisor-kvm"),
  },
  hvf: {
    pkg: "@supermachine/hypervisor-hvf",
    factory: "createHvfBackend",
    load: () => import("@supermachine/hypervisor-hvf"),
  },
};

export function defaultBackendName(): string {
  const env = process.env.SUPERMACHINE_BACKEND;
  if (env) return env;
  return process.platform === "darwin" ? "hvf" : "kvm";
}

// ------------------------------------------------------------------ image resolution

function toResolved(img: OciImage): ResolvedImage {
  const rt = img.runtime;
  return {
    digest: img.manifestDescriptor.digest,
    reference: img.reference,
    config: {
      Entrypoint: rt.entrypoint,
      Cmd: rt.cmd,
      Env: rt.env,
      WorkingDir: rt.workingDir,
      User: rt.user,
    },
    layers: async () => imageLayers(img) as never,
  };
}

function tagOf(ref: string): string | undefined {
  const noDigest = ref.split("@")[0] ?? ref;
  const last = noDigest.slice(noDigest.lastIndexOf("/") + 1);
  const i = last.indexOf(":");
  return i >= 0 ? last.slice(i + 1) : undefined;
}

async function resolveImage(opts: ResolvedBuildOptions): Promise<ResolvedImage> {
  // QEMU, kernel and agent are checked before anything is pulled or built (one error naming the fix).
  preflight({ arch: hostArch(), kernelDir: opts.kernelDir });
  const onProgress = opts.onProgress
    ? (e: import("@supermachine/oci").ProgressEvent) => {
        if (e.type === "blob-progress" && e.kind === "layer") {
          opts.onProgress?.({ phase: "pull", layer: e.digest, bytesDone: e.done, bytesTotal: e.total });
        } else if (e.type === "blob-done" && e.kind === "layer") {
          opts.onProgress?.({ phase: "pull", layer: e.digest, bytesDone: e.size, bytesTotal: e.size });
        }
      }
    : undefined;
  const common = {
    ...(opts.platform ? { platform: opts.platform } : {}),
    ...(onProgress ? { onProgress } : {}),
  };
  const src = opts.source;
  // A bad SUPERMACHINE_IMAGE_SOURCE fails here, before any work, whatever the source.
  imageSourceFromEnv();
  if (src.type === "registry") {
    // SUPERMACHINE_IMAGE_SOURCE=docker: a Docker-API daemon; else the registry (Docker Hub names at Docker
    // Hub's API or a SUPERMACHINE_REGISTRY_MIRRORS mirror). The snapshot name comes from opts.ref as given.
    // An explicit `source: { type: "registry" }` always means the registry.
    const load = opts.sourceGiven ? pull : loadFromEnvSource;
    return toResolved(await load(opts.ref, { ...common, pullPolicy: opts.pullPolicy }));
  }
  const load = src.type === "oci-layout" ? importLayout : importArchive;
  const path = resolve(src.path);
  // The image inside a layout/archive is named by a full reference or a bare tag, depending on the tool
  // that wrote it: try the ref, then its tag, then "the only image".
  const candidates = [opts.ref, tagOf(opts.ref), undefined];
  let lastErr: unknown;
  for (const tag of candidates) {
    try {
      return toResolved(await load(path, { ...common, ...(tag !== undefined ? { tag } : {}) }));
    } catch (err) {
      lastErr = err;
      if (codeOf(err) !== "SM_IMAGE_NOT_FOUND" && codeOf(err) !== "SM_OCI_OPTIONS") throw err;
    }
  }
  throw lastErr;
}

// ------------------------------------------------------------------ kernel + agent

const kernelCache = new Map<string, KernelInfo>();

function kernel(kernelDir: string | undefined, arch: "x86_64" | "aarch64"): KernelInfo {
  const dir = kernelDirFor(kernelDir, arch);
  const key = `${arch}:${dir ?? ""}:${process.env.SUPERMACHINE_KERNEL_DIR ?? ""}`;
  const hit = kernelCache.get(key);
  if (hit) return hit;
  const b = resolveKernelBundle({ arch, ...(dir ? { path: dir } : {}) });
  const info = { release: b.release, dir: b.dir, modulesDir: b.modulesDir };
  kernelCache.set(key, info);
  return info;
}

export { agentCandidates };

const agentHashes = new Map<string, { key: string; sha256: string }>();

async function agentBinary(arch: "x86_64" | "aarch64"): Promise<{ path: string; sha256: string }> {
  const candidates = agentCandidates(arch);
  const path = candidates.find((p) => existsSync(p));
  if (!path) {
    throw new SupermachineError(
      "SM_DEPENDENCY_MISSING",
      `The guest agent binary for ${arch} was not found (looked in: ${candidates.join(", ")}). Install the guest bundle (npm install ${guestPackageName(arch)}; \`npx supermachine setup\` checks the host), set SUPERMACHINE_AGENT, or in a checkout build it with \`make -C guest-agent ARCH=${arch}\`.`,
      { details: { missing: ["agent"], arch, looked: candidates } },
    );
  }
  const st = statSync(path);
  const key = `${st.size}:${st.mtimeMs}`;
  const hit = agentHashes.get(path);
  if (hit?.key === key) return { path, sha256: hit.sha256 };
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  const sha256 = h.digest("hex");
  agentHashes.set(path, { key, sha256 });
  return { path, sha256 };
}

// ------------------------------------------------------------------ backend adapter

function adaptLive(vm: HvVm): LiveVmPort {
  // opened at the first liveness check (the pid is final by then), closed when the VMM exits
  let liveness: ReturnType<typeof processWatch> | undefined;
  const unwatch = () => liveness?.close();
  vm.exited.then(unwatch, unwatch);
  return {
    get pid() {
      return vm.pid;
    },
    runtimeDir: vm.runtimeDir,
    agentSocketPath: vm.agentSocketPath,
    consoleLogPath: vm.consoleLogPath,
    accel: vm.accel,
    exited: vm.exited.then((e) => ({ expected: e.cause === "stop", ...(e.error ? { error: e.error } : {}) })),
    agentStream: () => vm.agentStream(),
    consoleTail: (lines) => vm.consoleTail(lines),
    snapshot: async (dir) => {
      const r = await vm.snapshot(dir);
      return { manifest: r.manifest, timings: r.timings };
    },
    stop: async () => {
      await vm.stop();
    },
    killSync: () => {
      try {
        process.kill(vm.pid, "SIGKILL");
      } catch {
        /* gone */
      }
      try {
        rmSync(vm.runtimeDir, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
    },
    memory: async () => {
      const m = await vm.memoryStats();
      return { rssBytes: m.rssBytes, ...(m.pssBytes !== null ? { pssBytes: m.pssBytes } : {}) };
    },
    freeze: () => vm.freeze(),
    thaw: () => vm.thaw(),
    alive: () => {
      liveness ??= processWatch(vm.pid);
      return liveness.alive();
    },
  };
}

const statBuf = Buffer.alloc(1024);

/**
 * Whether the main-thread stat line in `buf[0, n)` (of /proc/<pid>/task/<pid>/stat) says the process
 * goes on: state not Z/X, no PF_EXITING in "flags" (field 9), no SIGKILL in "signal" (field 31).
 * Scanned as bytes, without building strings: it runs on the acquire path of a paused VM.
 */
export function statSaysAlive(buf: Buffer, n: number): boolean {
  const close = buf.lastIndexOf(0x29, n - 1); // ")" ends the command name, which may hold anything
  if (close < 0 || close + 2 >= n) return false;
  const state = buf[close + 2];
  if (state === 0x5a || state === 0x58 || state === 0x78) return false; // Z, X, x
  let field = 0; // fields after the state: 6 = flags, 28 = pending signals
  let value = 0;
  for (let i = close + 3; i <= n; i++) {
    const c = i < n ? buf[i]! : 0x20;
    if (c === 0x20 || c === 0x0a) {
      if (field === 6 && value & 0x4) return false; // PF_EXITING from the start of its exit
      if (field === 28) return (value & (1 << 8)) === 0; // SIGKILL (9) pending
      field++;
      value = 0;
    } else if (c >= 0x30 && c <= 0x39) value = value * 10 + (c - 0x30);
    else value = 0; // a negative or non-numeric field: not one of the two read here
  }
  return true;
}

/**
 * Whether a child process still runs and will go on running: false once it is gone, a zombie (a VMM
 * killed a moment ago is one until Node reaps it and reports the exit), exiting (PF_EXITING), or has a
 * SIGKILL pending (kill returns before the target's threads were scheduled to die; on a loaded host
 * that takes a while).
 * Linux: one read of /proc/<pid>/task/<pid>/stat (state, and the pending-signal mask, where a SIGKILL
 * sent to the process shows on every thread) — the main thread's stat: the same fields without summing
 * over every thread of the (multi-threaded) VMM, which /proc/<pid>/stat does; elsewhere a signal-0 probe.
 */
export function processAlive(pid: number): boolean {
  const w = processWatch(pid);
  try {
    return w.alive();
  } finally {
    w.close();
  }
}

/**
 * processAlive for repeated checks of one process: the stat file stays open (a pread per check, no
 * path lookup), and an open /proc fd keeps answering for that process only — once it is gone, reads
 * fail, even if its pid is reused. close() when the process is no longer watched.
 */
export function processWatch(pid: number): { alive(): boolean; close(): void } {
  let fd: number | undefined;
  let gone = false;
  // closed = no longer watched: later checks say gone rather than reopen a pid that may be reused
  const close = () => {
    if (fd !== undefined) closeSync(fd);
    fd = undefined;
    gone = true;
  };
  const alive = (): boolean => {
    if (gone) return false;
    if (process.platform !== "linux") {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        gone = true;
        return false;
      }
    }
    try {
      fd ??= openSync(`/proc/${pid}/task/${pid}/stat`, "r");
      const n = readSync(fd, statBuf, 0, statBuf.length, 0);
      if (statSaysAlive(statBuf, n)) return true;
    } catch {
      // gone (ENOENT at open, ESRCH at read)
    }
    gone = true;
    close();
    return false;
  };
  return { alive, close };
}

/** SUPERMACHINE_RUNTIME_DIR overrides the backend's runtime root (default /dev/shm/supermachine). */
function runtimeRootOverride(): { runtimeRoot?: string } {
  const dir = process.env.SUPERMACHINE_RUNTIME_DIR;
  return dir ? { runtimeRoot: dir } : {};
}

function restoreOverrides(spec: RestoreSpec) {
  return {
    ...runtimeRootOverride(),
    rootfs: spec.rootfsPath,
    initrd: spec.initramfsPath,
    volumes: spec.volumes.map((v) => ({ path: v.hostPath, ...(v.readOnly ? { readOnly: true } : {}) })),
    accel: spec.accel,
  };
}

function adaptBackend(b: VmmBackend): BackendPort {
  return {
    name: b.name,
    version: String(b.version),
    boot: async (spec: BootSpec) =>
      adaptLive(
        await b.boot({
          ...(spec.kernelDir ? { kernel: spec.kernelDir } : {}),
          initrd: spec.initramfsPath,
          rootfs: spec.rootfsPath,
          volumes: spec.volumes.map((v) => ({ path: v.hostPath, ...(v.readOnly ? { readOnly: true } : {}) })),
          memoryMib: spec.memoryMib,
          vcpus: spec.vcpus,
          kernelArgs: spec.extraKernelArgs,
          network: spec.network,
          accel: spec.accel,
          ...runtimeRootOverride(),
        }),
      ),
    restore: async (spec: RestoreSpec) =>
      adaptLive(await b.restore(spec.snapshotDir, restoreOverrides(spec))),
    prepareRestore: b.capabilities.prepareRestore
      ? async (spec: RestoreSpec): Promise<PreparedRestorePort> => {
          const p = await b.prepareRestore(spec.snapshotDir, restoreOverrides(spec));
          return {
            restore: async () => adaptLive(await p.start()),
            discard: () => p.dispose(),
            killSync: () => {
              try {
                process.kill(p.pid, "SIGKILL");
              } catch {
                /* gone */
              }
            },
          };
        }
      : undefined,
  };
}

let backendPromise: Promise<BackendPort> | undefined;

async function loadBackend(): Promise<BackendPort> {
  backendPromise ??= (async () => {
    const name = defaultBackendName();
    const entry = BACKEND_PACKAGES[name];
    if (!entry) {
      throw new SupermachineError(
        "SM_DEPENDENCY_MISSING",
        `Unknown backend "${name}" (known: ${Object.keys(BACKEND_PACKAGES).join(", ")}).`,
      );
    }
    let mod: Record<string, unknown>;
    try {
      mod = (await entry.load()) as Record<string, unknown>;
    } catch (err) {
      throw new SupermachineError(
        "SM_DEPENDENCY_MISSING",
        `The ${name} backend package ${entry.pkg} is not installed: npm install ${entry.pkg}`,
        { cause: err },
      );
    }
    const factory = mod[entry.factory] as ((o: { keepEventLoopAlive: boolean }) => VmmBackend) | undefined;
    if (typeof factory !== "function") {
      throw new SupermachineError(
        "SM_DEPENDENCY_MISSING",
        `${entry.pkg} does not export ${entry.factory}().`,
      );
    }
    // Idle VMs never keep a program running; core holds the event loop while an operation runs
    // (keepalive.ts).
    return adaptBackend(factory({ keepEventLoopAlive: false }));
  })();
  backendPromise.catch(() => {
    backendPromise = undefined;
  });
  return backendPromise;
}

// ------------------------------------------------------------------ agent adapter

async function connectAgent(live: LiveVmPort, timeoutMs: number): Promise<AgentPort> {
  const stream: Duplex = await live.agentStream();
  const client = new AgentClient(stream, { helloTimeoutMs: timeoutMs });
  // A VMM that dies during the handshake ends it at once instead of waiting for the timeout.
  const abort = new AbortController();
  void live.exited.then(() => abort.abort(new Error("the VM exited during the agent handshake")));
  try {
    await client.connect({ signal: abort.signal });
  } catch (err) {
    client.close();
    throw err;
  }
  return adaptAgent(client);
}

function waitFor(
  client: AgentClient,
  done: () => boolean,
  event: "ready" | "listening",
  timeoutMs: number,
): Promise<void> {
  if (done()) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(
        new SupermachineError(
          "SM_BAKE_FAILED",
          `The guest agent did not report \`${event}\` within ${timeoutMs} ms.`,
        ),
      );
    }, timeoutMs);
    const onEvent = () => {
      cleanup();
      resolve();
    };
    const onFailed = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      clearTimeout(timer);
      client.off(event, onEvent);
      client.off("failed", onFailed);
    };
    client.on(event, onEvent);
    client.on("failed", onFailed);
  });
}

/** The process fields shared by exec and spawn, in the protocol client's shape. */
function processSpec(a: Omit<AgentExecArgs, "timeoutMs">) {
  return {
    argv: a.argv,
    env: a.env,
    cwd: a.cwd,
    stage: a.stage,
    chain: a.chain,
    tty: a.tty,
    winsize: { cols: a.cols, rows: a.rows },
  };
}

function adaptAgent(c: AgentClient): AgentPort {
  const hello = c.hello;
  let workloadExit: { exitCode: number; signal: number | null } | undefined;
  c.once("workload-exit", (e) => {
    workloadExit = e;
  });
  return {
    egress: egressPortOf(c),
    hello: {
      agentVersion: hello?.agentVersion ?? "unknown",
      caps: hello?.caps ?? [],
      ready: hello?.ready ?? false,
      listening: hello?.listening ?? null,
      bootMs: hello?.bootMs ?? 0,
    },
    exec: (a: AgentExecArgs) =>
      c.exec(
        { ...processSpec(a), timeoutMs: a.timeoutMs, maxOutputBytes: a.maxOutputBytes },
        { timeoutMs: a.answerTimeoutMs },
      ),
    spawn: async (a) => {
      const child = await c.spawn(processSpec(a), { timeoutMs: a.answerTimeoutMs });
      const port: AgentChild = {
        pid: child.pid,
        get stdout() {
          return child.stdout;
        },
        get stderr() {
          return child.stderr;
        },
        get stdin() {
          return child.stdin;
        },
        readStdout: (n) => child.readStdout(n),
        readStderr: (n) => child.readStderr(n),
        writeStdin: (d) => child.writeStdin(d),
        closeStdin: () => child.closeStdin(),
        wait: () => child.wait(),
        signal: (n) => child.signal(n),
        resize: (cols, rows) => child.resize(cols, rows),
      };
      return port;
    },
    writeFile: (path, data, mode, answerTimeoutMs) =>
      c.writeFile(path, data, { mode, timeoutMs: answerTimeoutMs }),
    readFile: (path, answerTimeoutMs) => c.readFile(path, { timeoutMs: answerTimeoutMs }),
    workloadSignal: (n) => c.workloadSignal(n),
    tcpConnect: (port) => c.tcpConnect(port),
    fsAttach: (tag, path) => c.fsAttach(path === undefined ? { tag } : { tag, path }),
    fsDetach: (tag) => c.fsDetach(tag),
    resume: (timeNs, entropy) => c.resume({ timeNs, entropy }),
    ping: () => c.ping(),
    shutdown: () => c.shutdown(),
    waitReady: (t) => waitFor(c, () => c.ready, "ready", t),
    waitListening: (t) => waitFor(c, () => c.listeningPort !== null, "listening", t),
    onLost: (cb) => {
      c.on("failed", cb);
    },
    onWorkloadExit: (cb) => {
      if (workloadExit) queueMicrotask(() => cb(workloadExit as NonNullable<typeof workloadExit>));
      else c.once("workload-exit", cb);
    },
    close: () => c.close(),
  };
}

/** Live host shares are FUSE in the guest (served by the host over the agent channel). */
const SHARE_GUEST_MODULES = ["fuse"];

export function createDefaultRuntime(): Runtime {
  return {
    resolveImage,
    kernel,
    agentBinary,
    buildRootfs: async (o) => {
      await buildRootfs({
        layers: o.layers,
        extraFiles: o.extraFiles,
        out: o.out,
        ...(o.onProgress
          ? {
              onProgress: (p: import("@supermachine/rootfs").RootfsProgress) => {
                if (p.phase === "data") o.onProgress?.(p.bytesDone);
              },
            }
          : {}),
      });
    },
    buildInitramfs: async (o) => {
      const names = [
        ...BASE_GUEST_MODULES,
        ...(o.network ? NET_GUEST_MODULES : []),
        ...(o.mounts ? SHARE_GUEST_MODULES : []),
      ];
      await buildInitramfs({
        init: o.agentPath,
        modulesDir: o.kernel.modulesDir,
        modules: names,
        config: o.config,
        out: o.out,
      });
    },
    backend: loadBackend,
    connectAgent,
  };
}

export type { AgentChild, AgentExecArgs };
