import { createHash, randomBytes } from "node:crypto";
import { open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { CPIO_CHAR, CPIO_DIR, CPIO_FILE, type CpioEntry, encodeCpio } from "./cpio";
import { isRootfsError, RootfsError } from "./errors";
import { readModule, resolveModules } from "./modules";

export interface BuildInitramfsOptions {
  /** Path of the guest agent binary; becomes /init (mode 0755). */
  init: string;
  /** Kernel bundle modules dir (lib/modules/<release>). Required when `modules` is not empty. */
  modulesDir?: string;
  /** Module names to include; their dependencies are added, dependencies first. */
  modules?: readonly string[];
  /** The /sm/config.cbor bytes (boot configuration, produced by the caller). */
  config: Uint8Array;
  /** Output path (written to a temp file next to it, then renamed). */
  out: string;
  /** gzip the cpio archive (default true). */
  gzip?: boolean;
  /** mtime of every entry (default 0). */
  mtime?: number;
}

export interface BuildInitramfsResult {
  path: string;
  bytes: number;
  sha256: string;
  /** Module names in load order (dependencies first), as written to /sm/modules.order. */
  modules: string[];
}

const KNOWN = new Set(["init", "modulesDir", "modules", "config", "out", "gzip", "mtime"]);

/**
 * Builds the guest initramfs: /init (agent), /sm/modules/<name>.ko (uncompressed), /sm/modules.order,
 * /sm/config.cbor, empty /dev /proc /sys /newroot and a /dev/console node. Deterministic.
 */
export async function buildInitramfs(opts: BuildInitramfsOptions): Promise<BuildInitramfsResult> {
  for (const k of Object.keys(opts))
    if (!KNOWN.has(k)) throw new RootfsError("SM_ROOTFS_CONFIG", `buildInitramfs: unknown option "${k}"`);
  if (typeof opts.init !== "string")
    throw new RootfsError("SM_ROOTFS_CONFIG", "buildInitramfs: init (agent binary path) is required");
  if (!(opts.config instanceof Uint8Array))
    throw new RootfsError("SM_ROOTFS_CONFIG", "buildInitramfs: config must be a Uint8Array (the CBOR bytes)");
  if (typeof opts.out !== "string" || opts.out === "")
    throw new RootfsError("SM_ROOTFS_CONFIG", "buildInitramfs: out is required");
  const wanted = opts.modules ?? [];
  if (wanted.length > 0 && !opts.modulesDir)
    throw new RootfsError(
      "SM_ROOTFS_CONFIG",
      "buildInitramfs: modulesDir is required when modules are requested",
    );

  const init = await readFile(opts.init).catch((err: unknown) => {
    throw new RootfsError(
      "SM_ROOTFS_CONFIG",
      `buildInitramfs: cannot read init binary ${opts.init}: ${(err as Error).message}`,
      { cause: err },
    );
  });
  const resolved = wanted.length ? await resolveModules(opts.modulesDir as string, wanted) : [];

  const entries: CpioEntry[] = [
    { name: "dev", mode: CPIO_DIR | 0o755 },
    { name: "dev/console", mode: CPIO_CHAR | 0o600, rdevMajor: 5, rdevMinor: 1 },
    { name: "init", mode: CPIO_FILE | 0o755, data: init },
    { name: "newroot", mode: CPIO_DIR | 0o755 },
    { name: "proc", mode: CPIO_DIR | 0o555 },
    { name: "sm", mode: CPIO_DIR | 0o755 },
    { name: "sm/config.cbor", mode: CPIO_FILE | 0o644, data: opts.config },
    { name: "sm/modules", mode: CPIO_DIR | 0o755 },
  ];
  for (const m of resolved) {
    entries.push({
      name: `sm/modules/${m.name}.ko`,
      mode: CPIO_FILE | 0o644,
      data: await readModule(join(opts.modulesDir as string, m.path)),
    });
  }
  entries.push({
    name: "sm/modules.order",
    mode: CPIO_FILE | 0o644,
    data: Buffer.from(resolved.map((m) => `${m.name}.ko\n`).join("")),
  });
  entries.push({ name: "sys", mode: CPIO_DIR | 0o555 });

  const cpio = encodeCpio(entries, opts.mtime ?? 0);
  const data = opts.gzip === false ? cpio : gzipSync(cpio, { level: 9 });
  const tmp = join(
    dirname(opts.out),
    `.${basename(opts.out)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`,
  );
  try {
    const fh = await open(tmp, "w", 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, opts.out);
  } catch (err) {
    await rm(tmp, { force: true });
    if (isRootfsError(err)) throw err;
    throw new RootfsError("SM_ROOTFS_IO", `writing ${opts.out} failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return {
    path: opts.out,
    bytes: data.length,
    sha256: createHash("sha256").update(data).digest("hex"),
    modules: resolved.map((m) => m.name),
  };
}
