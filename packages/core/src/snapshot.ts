/**
 * Snapshot directory layout, versioned metadata.json, atomic publication and validation.
 *
 *   <snapshotsDir>/<name>/
 *     metadata.json        this file's SnapshotMetadata (format "supermachine-snapshot", version 1)
 *     rootfs.sqfs          the image's root filesystem (squashfs, read-only in the guest)
 *     initramfs.cpio.gz    agent as /init + kernel modules + /sm/config.cbor
 *     vm/                  whatever the backend's snapshot() wrote (device state, memory file, ...)
 *
 * A snapshot is written into `<snapshotsDir>/.tmp-<name>-<random>/` and published with one rename,
 * so a crash or a full disk never leaves a half snapshot under the final name.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, rmSync, statSync } from "node:fs";
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { registerForCleanup } from "./cleanup";
import { SupermachineError } from "./errors";
import { type RecordedMount, type RecordedVolume, SNAPSHOT_FORMAT_VERSION } from "./fingerprint";
import { pidAlive } from "./lock";
import type { NetworkOption } from "./network/policy";

/** A guest mount of a volume device (see SnapshotMetadata.volumeMounts). */
export interface VolumeMount {
  /** Device as mounted, e.g. /dev/vdb (or a partition of it). */
  source: string;
  target: string;
  fstype: string;
  readOnly: boolean;
}

export const METADATA_FILE = "metadata.json";
export const ROOTFS_FILE = "rootfs.sqfs";
export const INITRAMFS_FILE = "initramfs.cpio.gz";
export const VM_DIR = "vm";
export const FORMAT_NAME = "supermachine-snapshot";

export interface SnapshotMetadata {
  format: typeof FORMAT_NAME;
  version: number;
  name: string;
  fingerprint: string;
  /** The canonical fingerprint inputs (for humans and `supermachine images`). */
  inputs: Record<string, unknown>;
  ref: string;
  imageDigest: string;
  createdAt: string;
  /** The baked limits (the defaults of a pool); the VM's RAM and vCPUs are the max values below. */
  memoryMib: number;
  vcpus: number;
  /** RAM of the VM (the ceiling a pool override may use); absent = memoryMib. */
  maxMemoryMib?: number;
  /** vCPUs of the VM; absent = vcpus. */
  maxVcpus?: number;
  /** memory.max of the guest's work cgroup as the agent set it at boot (bytes, or "max"). */
  workMemoryMax?: string;
  arch: string;
  accel: string;
  backend: { name: string; version: string };
  kernel: { release: string; dir: string };
  agent: { version: string; sha256: string };
  guestPort: number;
  listenerRequired: boolean;
  network: "none" | "nat";
  /** The image's network policy (README "Network"); absent in older metadata = "none". */
  networkPolicy?: NetworkOption;
  extraKernelArgs: string[];
  volumes: RecordedVolume[];
  /**
   * Guest mounts of volume devices in place at the end of the warmup, in mount order: unmounted before
   * the capture (so the snapshot holds no filesystem state of a volume) and mounted again on every VM.
   */
  volumeMounts?: VolumeMount[];
  mounts: RecordedMount[];
  /** The workload argv (ENTRYPOINT+CMD or the cmd override); null when the image has none. */
  workload?: string[] | null;
  /** Whether a workload is started by `resume` on restore. */
  startWorkload: "boot" | "resume" | "never";
  /** Opaque backend data needed to restore (file names inside vm/, machine config). */
  backendState: Record<string, unknown>;
  /** Every file of the snapshot with its size, relative to the snapshot dir. */
  files: Record<string, { size: number }>;
}

function invalid(dir: string, file: string, problem: string, cause?: unknown): SupermachineError {
  return new SupermachineError(
    "SM_SNAPSHOT_INVALID",
    `Snapshot ${dir} is invalid: ${file}: ${problem}. Delete the directory and build again.`,
    { details: { file, dir }, cause },
  );
}

/** Accept the snapshot directory, its metadata.json, or any file inside it. */
export async function resolveSnapshotDir(path: string): Promise<string> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch (err) {
    throw invalid(path, METADATA_FILE, "snapshot path does not exist", err);
  }
  if (st.isDirectory()) return path;
  let dir = dirname(path);
  // A state file under vm/ → its snapshot dir.
  if (basename(dir) === VM_DIR) dir = dirname(dir);
  return dir;
}

export async function readMetadata(dir: string): Promise<SnapshotMetadata> {
  let raw: string;
  try {
    raw = await readFile(join(dir, METADATA_FILE), "utf8");
  } catch (err) {
    throw invalid(dir, METADATA_FILE, "missing or unreadable", err);
  }
  return parseMetadata(dir, raw);
}

/** Synchronous variant for the cache-hit path (a handful of syscalls; no thread-pool round trips). */
export function readMetadataSync(dir: string): SnapshotMetadata {
  let raw: string;
  try {
    raw = readFileSync(join(dir, METADATA_FILE), "utf8");
  } catch (err) {
    throw invalid(dir, METADATA_FILE, "missing or unreadable", err);
  }
  return parseMetadata(dir, raw);
}

function parseMetadata(dir: string, raw: string): SnapshotMetadata {
  let meta: unknown;
  try {
    meta = JSON.parse(raw);
  } catch (err) {
    throw invalid(dir, METADATA_FILE, "not valid JSON", err);
  }
  const m = meta as Partial<SnapshotMetadata>;
  if (typeof m !== "object" || m === null || m.format !== FORMAT_NAME) {
    throw invalid(dir, METADATA_FILE, `not a supermachine snapshot (format ${JSON.stringify(m?.format)})`);
  }
  if (m.version !== SNAPSHOT_FORMAT_VERSION) {
    throw invalid(
      dir,
      METADATA_FILE,
      `format version ${JSON.stringify(m.version)} is not supported (this build reads version ${SNAPSHOT_FORMAT_VERSION})`,
    );
  }
  const need: [keyof SnapshotMetadata, string][] = [
    ["name", "string"],
    ["fingerprint", "string"],
    ["memoryMib", "number"],
    ["vcpus", "number"],
    ["arch", "string"],
    ["files", "object"],
    ["backend", "object"],
    ["kernel", "object"],
    ["backendState", "object"],
  ];
  for (const [key, type] of need) {
    if (typeof m[key] !== type || m[key] === null)
      throw invalid(dir, METADATA_FILE, `field ${key} missing or not a ${type}`);
  }
  return m as SnapshotMetadata;
}

function checkFileEntry(
  dir: string,
  rel: string,
  info: { size: number },
  st: { isFile(): boolean; size: number } | Error,
): void {
  if (rel.startsWith("/") || rel.split("/").includes(".."))
    throw invalid(dir, rel, "path escapes the snapshot");
  if (st instanceof Error) throw invalid(dir, rel, "missing", st);
  if (!st.isFile()) throw invalid(dir, rel, "not a regular file");
  if (st.size !== info.size)
    throw invalid(dir, rel, `size ${st.size} differs from the recorded ${info.size} (truncated?)`);
}

function checkRequired(dir: string, meta: SnapshotMetadata): void {
  for (const required of [ROOTFS_FILE, INITRAMFS_FILE]) {
    if (!(required in meta.files)) throw invalid(dir, required, "not listed in metadata.json");
  }
}

/** Check every listed file exists with its recorded size. */
export async function validateFiles(dir: string, meta: SnapshotMetadata): Promise<void> {
  checkRequired(dir, meta);
  await Promise.all(
    Object.entries(meta.files).map(async ([rel, info]) => {
      const st = await stat(join(dir, rel)).catch((err: Error) => err);
      checkFileEntry(dir, rel, info, st);
    }),
  );
}

export function validateFilesSync(dir: string, meta: SnapshotMetadata): void {
  checkRequired(dir, meta);
  for (const [rel, info] of Object.entries(meta.files)) {
    let st: ReturnType<typeof statSync> | Error;
    try {
      st = statSync(join(dir, rel));
    } catch (err) {
      st = err as Error;
    }
    checkFileEntry(dir, rel, info, st as { isFile(): boolean; size: number } | Error);
  }
}

export async function loadSnapshot(path: string): Promise<{ dir: string; meta: SnapshotMetadata }> {
  const dir = await resolveSnapshotDir(path);
  const meta = await readMetadata(dir);
  await validateFiles(dir, meta);
  return { dir, meta };
}

/** List every regular file under dir (relative paths) with sizes. */
export async function listFiles(dir: string, prefix = ""): Promise<Record<string, { size: number }>> {
  const out: Record<string, { size: number }> = {};
  for (const ent of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${ent.name}` : ent.name;
    if (ent.isDirectory()) Object.assign(out, await listFiles(dir, rel));
    else if (ent.isFile() && rel !== METADATA_FILE) out[rel] = { size: (await stat(join(dir, rel))).size };
  }
  return out;
}

/** Short tag of this host in temp dir names: a snapshots dir on a shared filesystem may serve several. */
const HOST_TAG = createHash("sha256").update(hostname()).digest("hex").slice(0, 8);
/** `.tmp-<name>-<host tag>-<pid>-<random>` */
const TEMP_DIR_RE = /^\.tmp-.+-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}$/;
/** Unregister functions of the temp dirs this process is writing (removed on exit and signals). */
const liveTemps = new Map<string, () => void>();

/**
 * Remove the temp dirs in `dir` that a process of this host left behind when it died mid-write
 * (SIGKILL, crash, power loss): their pid is gone. Returns the names removed.
 */
export async function sweepDeadTempDirs(dir: string): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = TEMP_DIR_RE.exec(n);
    if (!m || m[1] !== HOST_TAG) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || pidAlive(pid)) continue;
    await rm(join(dir, n), { recursive: true, force: true }).catch(() => undefined);
    removed.push(n);
  }
  return removed;
}

/**
 * A fresh temp dir inside snapshotsDir (same filesystem, so the final rename is atomic). It is removed
 * if the process exits or gets SIGINT/SIGTERM/SIGHUP before `publishSnapshot` or `removeTempSnapshotDir`;
 * dirs left by dead processes (SIGKILL) are swept here, by the next writer in the same directory.
 */
export async function makeTempSnapshotDir(snapshotsDir: string, name: string): Promise<string> {
  await mkdir(snapshotsDir, { recursive: true });
  await sweepDeadTempDirs(snapshotsDir);
  const tmp = join(snapshotsDir, `.tmp-${name}-${HOST_TAG}-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp, { recursive: false, mode: 0o755 });
  liveTemps.set(
    tmp,
    registerForCleanup(() => rmSync(tmp, { recursive: true, force: true })),
  );
  return tmp;
}

function forgetTemp(tmp: string): void {
  liveTemps.get(tmp)?.();
  liveTemps.delete(tmp);
}

/** Remove a temp dir that will not be published (the write failed). */
export async function removeTempSnapshotDir(tmp: string): Promise<void> {
  await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  forgetTemp(tmp);
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Refuse (SM_SNAPSHOT_FOREIGN) when `dir` exists and is not a snapshot supermachine wrote: anything but
 * a directory, or a non-empty directory without a metadata.json of our format (any version). Such a
 * directory is never deleted or replaced. `hint` says which option picks another place.
 */
export async function assertReplaceable(dir: string, hint: string): Promise<void> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  let why: string | undefined;
  if (!st.isDirectory()) why = "it is not a directory";
  else if ((await readdir(dir)).length > 0) {
    let format: unknown;
    try {
      format = (JSON.parse(await readFile(join(dir, METADATA_FILE), "utf8")) as { format?: unknown })?.format;
    } catch {
      format = undefined;
    }
    if (format !== FORMAT_NAME) why = `it has no ${METADATA_FILE} of format "${FORMAT_NAME}"`;
  }
  if (!why) return;
  throw new SupermachineError(
    "SM_SNAPSHOT_FOREIGN",
    `${dir} exists and was not written by supermachine (${why}); it is left untouched. ${hint}`,
    { details: { dir } },
  );
}

/**
 * Write metadata.json (with the file list) into tmpDir, fsync, then rename tmpDir → finalDir. An existing
 * finalDir (an older fingerprint under the same name) is moved aside and removed after the swap; a
 * finalDir supermachine did not write is refused (SM_SNAPSHOT_FOREIGN, see assertReplaceable).
 */
export async function publishSnapshot(
  tmpDir: string,
  finalDir: string,
  meta: Omit<SnapshotMetadata, "files">,
  foreignHint = "Choose another destination.",
): Promise<SnapshotMetadata> {
  await assertReplaceable(finalDir, foreignHint);
  const files = await listFiles(tmpDir);
  const full: SnapshotMetadata = { ...meta, files };
  const metaPath = join(tmpDir, METADATA_FILE);
  const fh = await open(metaPath, "w", 0o644);
  try {
    await fh.writeFile(`${JSON.stringify(full, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await Promise.all(Object.keys(files).map((rel) => fsyncPath(join(tmpDir, rel)).catch(() => undefined)));
  let old: string | undefined;
  try {
    await rename(tmpDir, finalDir);
    forgetTemp(tmpDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
    old = `${finalDir}.old-${randomBytes(4).toString("hex")}`;
    await rename(finalDir, old);
    await rename(tmpDir, finalDir);
    forgetTemp(tmpDir);
  }
  await fsyncPath(dirname(finalDir)).catch(() => undefined);
  if (old) await rm(old, { recursive: true, force: true });
  return full;
}
