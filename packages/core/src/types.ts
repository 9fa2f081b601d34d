/**
 * Public option and result types of @supermachine/core. Every name, default and unit below is the
 * one the README's "API" section documents. Fields marked "beyond" are extensions of this
 * implementation.
 */

/** Where the image bytes come from. Default: `{ type: "registry" }`. */
export type ImageSource =
  /** Pull `ref` from its registry (docker semantics; plain HTTP only for 127.0.0.1 / localhost). */
  | { type: "registry" }
  /**
   * An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`). The tag of `ref` selects the
   * manifest whose `org.opencontainers.image.ref.name` annotation matches; a layout with a single
   * manifest is used whatever the tag.
   */
  | { type: "oci-layout"; path: string }
  /** A `docker save` tarball or an OCI archive (a tar of an OCI layout). `ref` selects the image inside. */
  | { type: "archive"; path: string };

/** A host file copied into the guest root filesystem at bake time. Its contents feed the fingerprint. */
export interface ExtraFile {
  hostPath: string;
  guestPath: string;
}
/** The original's name for {@link ExtraFile}. */
export type ExtraFileSpec = ExtraFile;

/** Symlink policy of a live host directory share. */
export type SymlinkPolicy = "deny" | "opaque" | "follow";

/**
 * A live host directory share. Every VM handed out (and the bake VM during `warmup`) has it attached:
 * the guest mounts it by tag with `mount -t virtiofs <guestTag> <dir>` (alias `-t smfs`); it is always also reachable at
 * `/run/supermachine/shares/<guestTag>`. Served by a FUSE file server on the host (see README "Mounts").
 */
export interface MountSpec {
  hostPath: string;
  /** Tag the guest mounts by (1..35 bytes of `A-Z a-z 0-9 . _ -`). */
  guestTag: string;
  /**
   * Default "opaque": guest symlinks are stored verbatim, the host never follows one out of the share.
   * Typed `string` like the original's; any other value is refused at run time (SM_INVALID_OPTIONS).
   */
  symlinks?: SymlinkPolicy | (string & {}) | null;
  /** Beyond the seed: also mount the share at this guest path automatically (created if missing). */
  guestPath?: string;
}

/**
 * A raw block volume backed by a host file, created sparse if missing; it persists. The guest sees a
 * block device: the next `/dev/vdN` in declaration order after the root disk (`/dev/vdb`, `/dev/vdc`, …),
 * attached in the bake VM (warmup) and in every VM restored from the snapshot. The guest formats and
 * mounts it itself (`mkfs.ext4 /dev/vdb`, `mount /dev/vdb /data`, in the warmup or per exec); what the
 * warmup writes is in the host file and visible after every restore. Only the mapping (and the guest
 * mounts in place at the end of the warmup, remounted on every VM) is in the snapshot. See README
 * "Volumes".
 */
export interface VolumeSpec {
  hostPath: string;
  /** Where the volume belongs in the guest; mounted there automatically only with `mount: true`. */
  guestPath: string;
  /** Size of the backing file when it is created. Default 1024. */
  sizeMib?: number;
  /**
   * Beyond: "ext4" formats a blank file (first 64 KiB all zero) on the host with
   * `mke2fs -t ext4 -F -E root_owner=0:0` (e2fsprogs) before the bake. Default "none": left to the guest.
   */
  format?: "none" | "ext4" | null;
  /**
   * Beyond: true mounts the volume at guestPath (created if missing) in the bake VM before the warmup,
   * so on every VM. It needs a filesystem: `format: "ext4"` or a file formatted earlier. Default false.
   */
  mount?: boolean | null;
  /**
   * Beyond: attach the device read-only (bake and every VM). Only read-only volumes may be used by
   * several VMs at once (a pool with max > 1, several pools). Default false.
   */
  readOnly?: boolean | null;
}

/**
 * Networking of the guest (beyond; README "Network"). The guest never has a network device (except
 * "nat"): its TCP connects and DNS queries are carried by the agent and dialled by the host after the
 * policy check.
 */
export type NetworkMode =
  /** Nothing: every connect fails (ENETUNREACH), DNS is refused. */
  | "none"
  /** Default: TCP to public addresses and DNS; never the host, loopback, private, link-local, metadata. */
  | "public"
  /**
   * Unsafe, for compatibility: QEMU user-mode NAT, unfiltered. The guest can reach every service on the
   * host's 127.0.0.1 and private networks.
   */
  | "nat"
  /**
   * Entries: CIDR, address, host name or `*.suffix`, each optionally `:port` (`[v6]:port`). With
   * `allow` only what it names is reachable; `deny` wins; the always-denied ranges stay closed unless
   * an allow entry names an address or range inside them.
   */
  | { allow?: string[]; deny?: string[] };

/** Accelerator choice (beyond): "auto" probes KVM/HVF and falls back to TCG with a warning. */
export type Accelerator = "auto" | "kvm" | "hvf" | "tcg";

/** Progress of a build, for progress bars (beyond). */
export type BuildProgress =
  | { phase: "resolve"; ref: string }
  | { phase: "pull"; layer: string; bytesDone: number; bytesTotal: number }
  | { phase: "rootfs"; bytesDone?: number; entries?: number }
  | { phase: "initramfs" }
  | { phase: "boot" }
  | { phase: "warmup" }
  | { phase: "snapshot" }
  | { phase: "done"; cacheHit: boolean; snapshotPath: string };

export interface BuildOptions {
  /** OCI reference: `alpine:latest`, `registry:5000/ns/img:tag`, `img@sha256:...`. Required. */
  ref: string;
  /** Stable snapshot name (directory name under snapshotsDir). Default: derived from ref and fingerprint. */
  name?: string;
  /** Guest-visible RAM ceiling in MiB; host memory is committed lazily. Default 256. */
  memoryMib?: number;
  /** vCPUs per VM. Default 1. */
  vcpus?: number;
  /**
   * Beyond: the guest RAM ceiling in MiB (≥ memoryMib; default memoryMib). The VM is baked with this much
   * RAM (committed lazily: unused RAM costs nothing) and memoryMib becomes a limit inside it, so a pool's
   * `memoryMib` override may go up to this without a re-bake. See README "Pool overrides".
   */
  maxMemoryMib?: number | null;
  /**
   * Beyond: vCPUs the VM is baked with (≥ vcpus; default vcpus); those above `vcpus` are offline in the
   * guest, so a pool's `vcpus` override may go up to this without a re-bake.
   */
  maxVcpus?: number | null;
  /**
   * Docker semantics. Default "missing". Typed `string` like the original's; a value other than
   * "always" | "missing" | "never" is refused at run time (SM_INVALID_OPTIONS naming `pullPolicy`).
   */
  pullPolicy?: "always" | "missing" | "never" | (string & {}) | null;
  /** Workload listener port (used with listenerRequired). Default 80. */
  guestPort?: number;
  /** Override the workload command. Default: the image's ENTRYPOINT + CMD. */
  cmd?: string[];
  /** Extra workload environment, merged over the image's Env. Default {}. */
  env?: Record<string, string>;
  /**
   * false (default): snapshot just before the workload is exec'd (fast bake; the workload starts fresh
   * on every restore). true: start the workload and snapshot once it listens on guestPort.
   */
  listenerRequired?: boolean;
  /** Where snapshots live. Default `~/.local/supermachine-snapshots` (env SUPERMACHINE_SNAPSHOTS_DIR). */
  snapshotsDir?: string;
  /** Host files copied into the guest filesystem at bake; their contents feed the fingerprint. */
  extraFiles?: ExtraFile[];
  /** Live host directory shares. */
  mounts?: MountSpec[];
  /** Writable block volumes backed by sparse host files. */
  volumes?: VolumeSpec[];
  /** Appended to the kernel command line; part of the fingerprint. */
  extraKernelArgs?: string[];
  /** Versions the warmup for cache invalidation. Default "default". Only counts when warmup is given. */
  warmupTag?: string;
  /** Runs on a freshly booted guest before capture. The WarmupVm's exec fails after it returns. */
  warmup?: (vm: WarmupVm) => Promise<void>;
  /**
   * Where the image bytes come from instead of a registry (the "image source override").
   * Default `{ type: "registry" }`. See {@link ImageSource}.
   */
  source?: ImageSource;
  /** Beyond: guest networking policy. Default "public". Part of the fingerprint. */
  network?: NetworkMode;
  /** Beyond: accelerator. Default "auto". Not part of the fingerprint. */
  accel?: Accelerator;
  /** Beyond: platform to pull, e.g. "linux/arm64". Default: the host's. */
  platform?: string;
  /** Beyond: explicit kernel bundle directory (else SUPERMACHINE_KERNEL_DIR, else the cache). */
  kernelDir?: string;
  /** Beyond: writable tmpfs upper layer size in MiB. Default: half of memoryMib. */
  tmpfsMib?: number;
  /** Beyond: progress callback (pull bytes, bake phases). */
  onProgress?: (event: BuildProgress) => void;
}

export interface PoolOptions {
  /** Idle VMs kept warm, started eagerly. Default 1. */
  min?: number;
  /** Total VMs (in use + idle). Default 1, or `min` when only min is given. min > max is an error. */
  max?: number;
  /** How long acquire waits; 0 means forever. Default 60000. */
  acquireTimeoutMs?: number;
  /** Idle VMs above min are stopped after this. Default: never. */
  idleTimeoutMs?: number;
  /** true (default): every release discards the VM and a clean one is restored. false: dirty reuse. */
  restoreOnRelease?: boolean;
  /**
   * Runtime override of the image's memoryMib without a re-bake: every VM is still restored from the
   * snapshot (warmup state kept) and the value becomes the memory limit of the guest's commands and
   * workload (cgroup `sm-work` memory.max). At most the image's RAM ceiling (BuildOptions.maxMemoryMib,
   * default its memoryMib): above it `image.pool()` fails with SM_POOL_OVERRIDE. See README.
   */
  memoryMib?: number;
  /**
   * Runtime override of the image's vcpus without a re-bake: vCPUs above it are taken offline in the
   * restored guest. At most the vCPUs the image was baked with (BuildOptions.maxVcpus, default its vcpus),
   * else SM_POOL_OVERRIDE.
   */
  vcpus?: number;
  /** Per-VM restore deadline; a VM that misses it is discarded and replaced. Default 30000. */
  restoreTimeoutMs?: number;
  /** Beyond: network policy of this pool's VMs, overriding the image's (not "nat" unless the image is). */
  network?: NetworkMode;
}

export interface PoolStats {
  /** inUse + idle. */
  alive: number;
  /** VMs checked out by callers (acquired, not yet released). */
  inUse: number;
  /** VMs ready for checkout. */
  idle: number;
  /** acquire() calls waiting for a VM. */
  waiting: number;
  min: number;
  max: number;
  /** Beyond: VMs being restored (after a release, or to fill min); neither in use nor idle. */
  restoring: number;
}

export interface AcquireOptions {
  /** Aborting removes the waiter; acquire rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface StagedFile {
  guestPath: string;
  bytes: Buffer | Uint8Array | string;
  /** Unix mode; default (also for null) 0o644. */
  mode?: number | null;
}
/** The original's name for {@link StagedFile}. */
export type StagedFileMode = StagedFile;

/** A pty size. 0/0 lets the agent pick (80x24). */
export interface Winsize {
  cols: number;
  rows: number;
}

/** Beyond: the richer form of `ExecOptions.chain` (a follow-up command with its own env and cwd). */
export interface ExecChain {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
}

export interface ExecOptions {
  /** argv[0] is resolved through PATH in the guest. Required. */
  argv: string[];
  /** Files written (mode 0644) before the command starts: guestPath → bytes. */
  stageFiles?: Record<string, Buffer | Uint8Array | string>;
  /** Same with an explicit mode per file. */
  stageFilesMode?: StagedFile[];
  /** Collect mode only: kill the process (and its group) after this. Default 60000; 0 = none. */
  timeoutMs?: number;
  /** Merged over the image environment. */
  env?: Record<string, string>;
  /** Working directory. Default "/". */
  cwd?: string;
  /**
   * The argv of one follow-up command, run only if argv exits 0, in the same call (the original's
   * form). Beyond: an {@link ExecChain} object also gives the follow-up its own env and cwd.
   */
  chain?: string[] | ExecChain | null;
  /** Allocate a pty; stdout and stderr merge onto stdout. Default false. */
  tty?: boolean;
  /** Initial pty size. Default 80x24; 0/0 lets the agent pick (80x24). */
  winsize?: Winsize | null;
  /**
   * Beyond the seed API, collect mode only: the most stdout + stderr bytes exec keeps on the host.
   * Default 64 MiB. Above it the command's process group is killed and
   * exec rejects with `SM_OUTPUT_LIMIT`, so a guest cannot fill the host's memory; stream big
   * outputs with `spawn()` (flow-controlled) instead. Ignored by spawn.
   */
  maxOutputBytes?: number;
}

export interface ExecOutput {
  stdout: Buffer;
  stderr: Buffer;
  /** Exit status; -1 when killed by a signal, the timeout, or agent loss. */
  exitCode: number;
  /** Beyond: true when the timeout killed the process. */
  timedOut?: boolean;
  /** Beyond: the signal number that killed the process, if any. */
  signal?: number | null;
  /** Beyond: peak resident set size of the process in KiB. */
  peakRssKib?: number;
}

/** What `ExecChild.wait()` resolves with. */
export interface ExecWaitResult {
  /** Exit status; -1 when killed by a signal, the timeout, or agent loss. */
  exitCode: number;
  timedOut: boolean;
  peakRssKib?: number;
  /** Beyond: the signal that killed the process, if any. */
  signal?: number | null;
}
/** Earlier name of {@link ExecWaitResult}. */
export type ExecExit = ExecWaitResult;

/** The VM handed to a warmup callback: exec only, and only while the callback runs. */
export interface WarmupVm {
  exec(options: ExecOptions): Promise<ExecOutput>;
}
