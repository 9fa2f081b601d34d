/**
 * Image: a baked snapshot — built (bake.ts) or loaded from a snapshot directory — and the pools
 * restored from it. The bake VM is parked here for the first acquire (warm handoff).
 */
import { resolve } from "node:path";
import { buildImage } from "./bake";
import { SupermachineError } from "./errors";
import { whileHeld } from "./keepalive";
import { checkOverrides } from "./limits";
import { poolNetwork } from "./network/vm-network";
import { PoolImpl } from "./pool";
import { createPool, type Pool } from "./pool-facade";
import { getRuntime } from "./runtime-port";
import { loadSnapshot, type SnapshotMetadata } from "./snapshot";
import type { BuildOptions, PoolOptions } from "./types";
import { validateBuildOptions, validatePoolOptions } from "./validate";
import type { VmHandle } from "./vm-handle";
import { snapshotVm } from "./vm-snapshot";

/** An unused warm-handoff VM is stopped after this (so a script that only builds can exit). */
const HANDOFF_IDLE_MS = 5_000;

/** Wraps a snapshot directory in an Image: how bake.ts and vm-snapshot.ts return one. */
export type MakeImage = (dir: string, meta: SnapshotMetadata) => Image;

const IMAGE_TOKEN = Symbol("Image");
let newImage: MakeImage;

/** A baked snapshot (from `Image.build` / `Image.fromSnapshot`; no public constructor). */
export class Image {
  /** @internal */ readonly dir: string;
  /** @internal */ readonly meta: SnapshotMetadata;
  /** @internal the bake's VM, handed to the first acquire (warm handoff). */
  handoff: VmHandle | undefined;
  #handoffTimer: NodeJS.Timeout | undefined;

  private constructor(token: symbol, dir: string, meta: SnapshotMetadata) {
    if (token !== IMAGE_TOKEN)
      throw new SupermachineError(
        "SM_UNSUPPORTED",
        "Image has no public constructor: use Image.build() or Image.fromSnapshot().",
      );
    this.dir = dir;
    this.meta = meta;
  }

  static {
    newImage = (dir, meta) => new Image(IMAGE_TOKEN, dir, meta);
  }

  /** Absolute path of the snapshot directory. */
  get snapshotPath(): string {
    return this.dir;
  }
  /** Guest RAM ceiling in MiB the snapshot was baked with. */
  get memoryMib(): number {
    return this.meta.memoryMib;
  }
  /** vCPUs the snapshot was baked with. */
  get vcpus(): number {
    return this.meta.vcpus;
  }
  /** Beyond: the bake fingerprint (sha256 hex). */
  get fingerprint(): string {
    return this.meta.fingerprint;
  }

  /**
   * Pull, build, boot, warm up and snapshot an image — or return the cached snapshot when one with the
   * same fingerprint exists (no pull, no boot). Concurrent builds of the same snapshot (in this process
   * or another) bake once.
   */
  static build(options: BuildOptions): Promise<Image> {
    return whileHeld(async () => {
      const opts = validateBuildOptions(options);
      return buildImage(opts, getRuntime(), newImage);
    });
  }

  /** Load and validate a snapshot directory (or a file inside it, e.g. its metadata.json). */
  static async fromSnapshot(path: string): Promise<Image> {
    if (typeof path !== "string" || path.length === 0) {
      throw new SupermachineError(
        "SM_INVALID_OPTIONS",
        "Invalid option `path`: expected a snapshot directory",
        {
          details: { field: "path" },
        },
      );
    }
    const { dir, meta } = await whileHeld(() => loadSnapshot(resolve(path)));
    return newImage(dir, meta);
  }

  /** Start a pool of VMs restored from this snapshot. */
  async pool(options?: PoolOptions | null): Promise<Pool> {
    const opts = validatePoolOptions(options);
    checkOverrides(this.meta, { memoryMib: opts.memoryMib, vcpus: opts.vcpus });
    poolNetwork(opts.network, this.meta); // a "nat" override of a non-"nat" image: refused here
    const writable = this.meta.volumes.filter((v) => !v.readOnly).map((v) => v.hostPath);
    if (writable.length > 0 && opts.max > 1) {
      throw new SupermachineError(
        "SM_VOLUME_SHARED",
        `A pool with max ${opts.max} would attach the writable volume ${writable.join(", ")} to several VMs at once, and two guests on one filesystem corrupt it. Use max: 1, or declare the volume \`readOnly: true\` (attached read-only) to share it between VMs.`,
        { details: { field: "max", volumes: writable } },
      );
    }
    const pool = new PoolImpl(this, opts, getRuntime());
    claimVolumes(writable, pool);
    pool.start();
    return createPool(pool);
  }

  /** @internal vm.snapshot() of a VM of a pool of this image (vm-snapshot.ts). */
  capture(handle: VmHandle, destDir: string): Promise<Image> {
    return snapshotVm(this, handle, destDir, newImage);
  }

  /** @internal take the bake VM for a warm handoff (once). */
  takeHandoff(): VmHandle | undefined {
    const h = this.handoff;
    this.handoff = undefined;
    if (this.#handoffTimer) clearTimeout(this.#handoffTimer);
    return h && !h.dead ? h : undefined;
  }

  /** @internal park the bake VM for the first acquire; stop it if nobody takes it soon. */
  parkHandoff(handle: VmHandle): void {
    this.handoff = handle;
    this.#handoffTimer = setTimeout(() => {
      const h = this.takeHandoff();
      void h?.stop();
    }, HANDOFF_IDLE_MS);
    this.#handoffTimer.unref();
  }
}

/** Writable volume files held by live pools of this process (hostPath → pool). */
const volumeOwners = new Map<string, PoolImpl>();

/**
 * One live pool per writable volume file in this process (SM_VOLUME_SHARED otherwise); released when
 * the pool shuts down. Other processes are kept off by QEMU's lock on the file.
 */
function claimVolumes(paths: string[], pool: PoolImpl): void {
  for (const path of paths) {
    const owner = volumeOwners.get(path);
    if (owner && !owner.closed) {
      throw new SupermachineError(
        "SM_VOLUME_SHARED",
        `The writable volume ${path} is in use by another pool of this process, and two guests on one filesystem corrupt it. Shut that pool down first, or declare the volume \`readOnly: true\` in both images.`,
        { details: { volumes: [path] } },
      );
    }
  }
  for (const path of paths) volumeOwners.set(path, pool);
}
