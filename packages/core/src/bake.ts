/**
 * The bake behind Image.build: resolve the inputs and their fingerprint, return a cached snapshot with
 * that fingerprint, or pull → rootfs → initramfs → boot → ready → warmup → capture → publish, once
 * per snapshot directory (in-process dedupe and a lock file across processes).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type BootConfig, buildBootConfig, encodeBootConfig, hostnameFor } from "./bootconfig";
import { codeOf, SupermachineError } from "./errors";
import {
  canonicalJson,
  defaultName,
  type FingerprintInputs,
  fingerprint,
  SNAPSHOT_FORMAT_VERSION,
  VOLUME_SEMANTICS,
} from "./fingerprint";
import type { Image, MakeImage } from "./image";
import { applyLimits, WORK_MEMORY_MAX } from "./limits";
import { acquireLock } from "./lock";
import { networkKey, nicMode } from "./network/policy";
import { noSpaceError, snapshotSpaceHint } from "./no-space";
import { cacheRoot, defaultSnapshotsDir, hostArch } from "./paths";
import type { LiveVmPort } from "./ports";
import type { Runtime } from "./runtime-port";
import {
  assertReplaceable,
  FORMAT_NAME,
  INITRAMFS_FILE,
  makeTempSnapshotDir,
  publishSnapshot,
  ROOTFS_FILE,
  readMetadataSync,
  removeTempSnapshotDir,
  type SnapshotMetadata,
  VM_DIR,
  validateFilesSync,
} from "./snapshot";
import type { BuildProgress } from "./types";
import type { ResolvedBuildOptions } from "./validate";
import { VmHandle } from "./vm-handle";
import { mountVolumes, quiesceVolumes, volumeDevice } from "./volume-guest";
import { prepareVolume, volumeLockError } from "./volumes";
import { WarmupVmImpl } from "./warmup";

/** Boot → ready deadline for a bake (TCG cold boots take ~5 s; leave room for slow CI). */
const BAKE_READY_TIMEOUT_MS = Number(process.env.SUPERMACHINE_BAKE_TIMEOUT_MS) || 120_000;

const fileHashCache = new Map<string, { key: string; sha256: string }>();

async function sha256OfFile(path: string): Promise<{ sha256: string; mode: number }> {
  const st = await stat(path);
  const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const hit = fileHashCache.get(path);
  if (hit && hit.key === key) return { sha256: hit.sha256, mode: st.mode & 0o7777 };
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  const sha256 = h.digest("hex");
  fileHashCache.set(path, { key, sha256 });
  return { sha256, mode: st.mode & 0o7777 };
}

/** In-process dedupe of concurrent builds of the same snapshot directory. */
const inflight = new Map<string, Promise<Image>>();

export function emit(opts: ResolvedBuildOptions, ev: BuildProgress): void {
  try {
    opts.onProgress?.(ev);
  } catch {
    /* a progress callback must not break the build */
  }
}

interface Prepared {
  opts: ResolvedBuildOptions;
  snapshotsDir: string;
  name: string;
  finalDir: string;
  fp: string;
  inputs: FingerprintInputs;
  image: Awaited<ReturnType<Runtime["resolveImage"]>>;
  kernel: ReturnType<Runtime["kernel"]>;
  agent: { path: string; sha256: string };
  tmpfsMib: number;
}

async function prepare(opts: ResolvedBuildOptions, rt: Runtime): Promise<Prepared> {
  emit(opts, { phase: "resolve", ref: opts.ref });
  const arch = hostArch();
  const [image, agent, extraFiles] = await Promise.all([
    rt.resolveImage(opts),
    rt.agentBinary(arch),
    Promise.all(
      opts.extraFiles.map(async (f) => {
        try {
          const { sha256, mode } = await sha256OfFile(resolve(f.hostPath));
          return { guestPath: f.guestPath, sha256, mode };
        } catch (err) {
          throw new SupermachineError(
            "SM_INVALID_OPTIONS",
            `Invalid option \`extraFiles\`: cannot read ${f.hostPath}: ${(err as Error).message}`,
            {
              cause: err,
              details: { field: "extraFiles" },
            },
          );
        }
      }),
    ),
  ]);
  const kernel = rt.kernel(opts.kernelDir, arch);
  const tmpfsMib = opts.tmpfsMib ?? 0;
  const inputs: FingerprintInputs = {
    imageDigest: image.digest,
    cmd: opts.cmd ?? null,
    env: opts.env,
    memoryMib: opts.memoryMib,
    vcpus: opts.vcpus,
    ...(opts.maxMemoryMib > opts.memoryMib ? { maxMemoryMib: opts.maxMemoryMib } : {}),
    ...(opts.maxVcpus > opts.vcpus ? { maxVcpus: opts.maxVcpus } : {}),
    guestPort: opts.guestPort,
    listenerRequired: opts.listenerRequired,
    extraFiles,
    mounts: opts.mounts.map((m) => ({
      hostPath: resolve(m.hostPath),
      guestTag: m.guestTag,
      symlinks: m.symlinks,
      // Only present when set, so fingerprints of mount-less or path-less specs stay as before.
      ...(m.guestPath ? { guestPath: m.guestPath } : {}),
      ...(m.cacheTtlMs ? { cacheTtlMs: m.cacheTtlMs } : {}),
    })),
    volumes: opts.volumes.map((v) => ({
      hostPath: resolve(v.hostPath),
      guestPath: v.guestPath,
      sizeMib: v.sizeMib,
      // Only present when set, so the inputs of plain raw volumes stay minimal.
      ...(v.format === "ext4" ? { format: "ext4" as const } : {}),
      ...(v.mount ? { mount: true as const } : {}),
      ...(v.readOnly ? { readOnly: true as const } : {}),
    })),
    ...(opts.volumes.length > 0 ? { volumeSemantics: VOLUME_SEMANTICS } : {}),
    extraKernelArgs: opts.extraKernelArgs,
    warmupTag: opts.warmup ? opts.warmupTag : null,
    network: networkKey(opts.network),
    tmpfsMib,
    kernelRelease: kernel.release,
    arch,
    agentVersion: agent.sha256.slice(0, 16),
    agentSha256: agent.sha256,
    formatVersion: SNAPSHOT_FORMAT_VERSION,
  };
  const fp = fingerprint(inputs);
  const snapshotsDir = resolve(opts.snapshotsDir ?? defaultSnapshotsDir());
  const name = opts.name ?? defaultName(opts.ref, fp);
  return {
    opts,
    snapshotsDir,
    name,
    finalDir: join(snapshotsDir, name),
    fp,
    inputs,
    image,
    kernel,
    agent,
    tmpfsMib,
  };
}

/** A valid snapshot with this fingerprint at finalDir, or undefined. */
async function cacheHit(finalDir: string, fp: string, make: MakeImage): Promise<Image | undefined> {
  let meta: SnapshotMetadata;
  try {
    meta = readMetadataSync(finalDir);
  } catch {
    return undefined;
  }
  if (meta.fingerprint !== fp) return undefined;
  try {
    validateFilesSync(finalDir, meta);
  } catch {
    return undefined; // corrupt: re-bake over it
  }
  return make(finalDir, meta);
}

/** Image.build: `make` wraps a snapshot directory in an Image (image.ts; this file never constructs one). */
export async function buildImage(opts: ResolvedBuildOptions, rt: Runtime, make: MakeImage): Promise<Image> {
  let p: Prepared;
  try {
    p = await prepare(opts, rt);
  } catch (err) {
    // a pull that fills the disk: the image store (the oci package removes its partial blob)
    const hint =
      "Free space there, or set XDG_CACHE_HOME to a larger filesystem (the image store is $XDG_CACHE_HOME/supermachine/oci).";
    throw (await noSpaceError(err, `Pulling ${opts.ref}`, join(cacheRoot(), "oci"), hint, "pull")) ?? err;
  }
  const hit = await cacheHit(p.finalDir, p.fp, make);
  if (hit) {
    emit(opts, { phase: "done", cacheHit: true, snapshotPath: hit.dir });
    return hit;
  }
  // Before any pull or boot: a directory of that name that is not ours is never replaced.
  await assertReplaceable(p.finalDir, foreignBuildHint(p));
  const running = inflight.get(p.finalDir);
  if (running) {
    const img = await running;
    if (img.meta.fingerprint === p.fp) return img;
  }
  const job = (async () => {
    const lock = await acquireLock(join(p.snapshotsDir, ".locks"), p.name);
    try {
      const again = await cacheHit(p.finalDir, p.fp, make);
      if (again) {
        emit(opts, { phase: "done", cacheHit: true, snapshotPath: again.dir });
        return again;
      }
      return await bake(p, rt, make);
    } finally {
      await lock.release();
    }
  })();
  inflight.set(p.finalDir, job);
  try {
    return await job;
  } finally {
    if (inflight.get(p.finalDir) === job) inflight.delete(p.finalDir);
  }
}

function foreignBuildHint(p: Prepared): string {
  return `Pass another \`name\` (this build uses ${JSON.stringify(p.name)}) or another \`snapshotsDir\` (this build uses ${p.snapshotsDir}) to Image.build, or move that directory away.`;
}

function wrapBakeError(err: unknown, step: string, consoleTail: string | undefined): unknown {
  const code = codeOf(err);
  // Errors of the lower packages (and ours) keep their code; the guest agent never answering, and
  // anything without a code, become SM_BAKE_FAILED with the guest console's last lines.
  const agentGone = code === "SM_AGENT_LOST" || code === "SM_AGENT_TIMEOUT" || code === "SM_AGENT_PROTOCOL";
  if (code?.startsWith("SM_") && !agentGone) return err;
  const tail = consoleTail?.trim() ? `\n--- guest console (last lines) ---\n${consoleTail.trim()}` : "";
  return new SupermachineError(
    "SM_BAKE_FAILED",
    `Bake failed while ${step}: ${(err as Error)?.message ?? String(err)}${tail}`,
    { cause: err },
  );
}

async function bake(p: Prepared, rt: Runtime, make: MakeImage): Promise<Image> {
  const { opts } = p;
  let step = "creating the snapshot directory";
  let tmp: string | undefined;
  let live: LiveVmPort | undefined;
  let handle: VmHandle | undefined;
  try {
    tmp = await makeTempSnapshotDir(p.snapshotsDir, p.name);
    step = "building the root filesystem";
    emit(opts, { phase: "rootfs" });
    const layers = await p.image.layers();
    await rt.buildRootfs({
      layers,
      extraFiles: opts.extraFiles.map((f) => ({ hostPath: resolve(f.hostPath), guestPath: f.guestPath })),
      out: join(tmp, ROOTFS_FILE),
      onProgress: (bytesDone) => emit(opts, { phase: "rootfs", bytesDone }),
    });
    step = "preparing volumes";
    const volumes = await Promise.all(opts.volumes.map((v) => prepareVolume(v)));
    step = "building the initramfs";
    emit(opts, { phase: "initramfs" });
    const bootConfig: BootConfig = buildBootConfig({
      hostname: hostnameFor(p.name),
      imageConfig: p.image.config,
      cmd: opts.cmd,
      env: opts.env,
      tmpfsMib: p.tmpfsMib,
      guestPort: opts.guestPort,
      listenerRequired: opts.listenerRequired,
      // Volumes are raw devices the guest mounts itself (or core with `mount: true`); see README "Volumes".
      volumes: [],
      network: nicMode(opts.network),
    });
    await rt.buildInitramfs({
      agentPath: p.agent.path,
      kernel: p.kernel,
      network: nicMode(opts.network) !== "none",
      mounts: opts.mounts.length > 0,
      config: encodeBootConfig(bootConfig),
      out: join(tmp, INITRAMFS_FILE),
    });
    step = "booting the VM";
    emit(opts, { phase: "boot" });
    const backend = await rt.backend();
    live = await backend.boot({
      kernelDir: p.kernel.dir,
      initramfsPath: join(tmp, INITRAMFS_FILE),
      rootfsPath: join(tmp, ROOTFS_FILE),
      // the machine has the ceilings; memoryMib/vcpus are limits inside it (limits.ts)
      memoryMib: opts.maxMemoryMib,
      vcpus: opts.maxVcpus,
      volumes: p.inputs.volumes.map((v) => ({
        hostPath: v.hostPath,
        ...(v.readOnly ? { readOnly: true } : {}),
      })),
      network: nicMode(opts.network),
      extraKernelArgs: opts.extraKernelArgs,
      accel: opts.accel,
    });
    step = "waiting for the guest agent";
    const agent = await rt.connectAgent(live, BAKE_READY_TIMEOUT_MS);
    const devices = volumes.map((_, i) => volumeDevice(i));
    handle = new VmHandle(live, agent, devices, p.inputs.mounts, opts.guestPort);
    handle.startNetwork(opts.network);
    await agent.waitReady(BAKE_READY_TIMEOUT_MS);
    // The work cgroup's memory limit as the agent chose it (the cap of any later memory limit).
    const bootWorkMemoryMax = await agent.readFile(WORK_MEMORY_MAX).then(
      (f) => f.data.toString().trim(),
      () => undefined,
    );
    if (opts.maxMemoryMib > opts.memoryMib || opts.maxVcpus > opts.vcpus) {
      step = "applying memoryMib/vcpus inside the VM";
      await applyLimits(agent, opts, opts.maxVcpus, bootWorkMemoryMax);
    }
    if (opts.listenerRequired) {
      step = `waiting for the workload to listen on port ${opts.guestPort}`;
      await agent.waitListening(BAKE_READY_TIMEOUT_MS);
    }
    const autoMounts = p.inputs.volumes.flatMap((v, i) =>
      v.mount
        ? [{ source: volumeDevice(i), target: v.guestPath, fstype: "ext4", readOnly: !!v.readOnly }]
        : [],
    );
    if (autoMounts.length > 0) {
      step = "mounting volumes (mount: true)";
      await mountVolumes(agent, autoMounts);
    }
    if (opts.warmup) {
      step = "running the warmup";
      emit(opts, { phase: "warmup" });
      // The warmup runs on the booted guest before capture, with the volumes attached as raw devices.
      const wvm = new WarmupVmImpl(handle);
      try {
        // Shares are live during the warmup and detached before capture (see README "Mounts").
        await handle.attachMounts();
        await opts.warmup(wvm);
      } finally {
        wvm.close();
      }
      await handle.detachMounts();
    }
    // The snapshot must hold no mounted filesystem and no cached blocks of a volume (later VMs change
    // the file): unmount what is mounted (recorded; every VM mounts it again), sync, drop caches.
    step = "unmounting volumes before the capture";
    const volumeMounts = await quiesceVolumes(agent, devices);
    handle.volumeMounts = volumeMounts;
    step = "capturing the snapshot";
    emit(opts, { phase: "snapshot" });
    const backendState = await live.snapshot(join(tmp, VM_DIR));
    const meta: Omit<SnapshotMetadata, "files"> = {
      format: FORMAT_NAME,
      version: SNAPSHOT_FORMAT_VERSION,
      name: p.name,
      fingerprint: p.fp,
      inputs: JSON.parse(canonicalJson(p.inputs)),
      ref: opts.ref,
      imageDigest: p.image.digest,
      createdAt: new Date().toISOString(),
      memoryMib: opts.memoryMib,
      vcpus: opts.vcpus,
      ...(opts.maxMemoryMib > opts.memoryMib ? { maxMemoryMib: opts.maxMemoryMib } : {}),
      ...(opts.maxVcpus > opts.vcpus ? { maxVcpus: opts.maxVcpus } : {}),
      ...(bootWorkMemoryMax ? { workMemoryMax: bootWorkMemoryMax } : {}),
      arch: hostArch(),
      accel: live.accel,
      backend: { name: backend.name, version: backend.version },
      kernel: { release: p.kernel.release, dir: p.kernel.dir },
      agent: { version: agent.hello.agentVersion, sha256: p.agent.sha256 },
      guestPort: opts.guestPort,
      listenerRequired: opts.listenerRequired,
      network: nicMode(opts.network),
      networkPolicy: opts.network,
      extraKernelArgs: opts.extraKernelArgs,
      volumes: p.inputs.volumes,
      ...(devices.length > 0 ? { volumeMounts } : {}),
      mounts: p.inputs.mounts,
      workload: bootConfig.workload?.argv ?? null,
      startWorkload: bootConfig.startWorkload,
      backendState,
    };
    step = "publishing the snapshot";
    const full = await publishSnapshot(tmp, p.finalDir, meta, foreignBuildHint(p));
    tmp = undefined;
    const img = make(p.finalDir, full);
    img.parkHandoff(handle);
    handle = undefined;
    live = undefined;
    emit(opts, { phase: "done", cacheHit: false, snapshotPath: p.finalDir });
    return img;
  } catch (err) {
    let tail: string | undefined;
    try {
      tail = live?.consoleTail?.(30);
    } catch {
      /* runtime dir already gone */
    }
    // Stop the VM and drop the partial files (a success hands both on, so only failures get here);
    // first, so the free space a disk-full error reports is what the user really has.
    if (handle) await handle.stop().catch(() => undefined);
    else if (live) await live.stop().catch(() => undefined);
    if (tmp) await removeTempSnapshotDir(tmp);
    throw (
      (await noSpaceError(
        err,
        `Bake failed while ${step}`,
        p.snapshotsDir,
        snapshotSpaceHint(opts.maxMemoryMib),
        step,
      )) ??
      volumeLockError(
        err,
        p.inputs.volumes.map((v) => v.hostPath),
      ) ??
      wrapBakeError(err, step, tail)
    );
  }
}
