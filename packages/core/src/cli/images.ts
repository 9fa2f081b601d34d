/** `supermachine images`, `rm`, `pull` and `image rootfs`. */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { imageLayers, type pull } from "@supermachine/oci";
import { RootfsError, runRootfsCommand } from "@supermachine/rootfs";
import { loadFromEnvSource } from "../image-source";
import { defaultSnapshotsDir } from "../paths";
import { FORMAT_NAME } from "../snapshot";
import { NAME_RE } from "../validate";
import {
  type CommandHelp,
  flag,
  has,
  intFlag,
  type OptionSpec,
  oneOf,
  type Parsed,
  parseArgs,
  UsageError,
} from "./args";
import { fmtBytes, progressRenderer } from "./progress";

const SNAPSHOTS_DIR_OPTION: OptionSpec = {
  names: ["--snapshots-dir"],
  value: "DIR",
  help: "where snapshots live (default ~/.local/supermachine-snapshots, env SUPERMACHINE_SNAPSHOTS_DIR)",
};

export const IMAGES_HELP: CommandHelp = {
  usage: "images [--snapshots-dir DIR]",
  summary: "list snapshots (name, image, memory, size on disk, age)",
  options: [SNAPSHOTS_DIR_OPTION],
  examples: ["supermachine images"],
};

export const RM_HELP: CommandHelp = {
  usage: "rm [--snapshots-dir DIR] NAME...",
  summary: "delete snapshots by name (see `supermachine images`)",
  options: [SNAPSHOTS_DIR_OPTION],
  examples: ["supermachine rm alpine-latest-3f2a9c1b"],
};

const PULL_OPTIONS: OptionSpec[] = [
  {
    names: ["--platform"],
    value: "OS/ARCH",
    help: "platform to pull, e.g. linux/arm64 (default: the host's)",
  },
  { names: ["--quiet", "-q"], help: "no progress output" },
];

export const PULL_HELP: CommandHelp = {
  usage: "pull [--platform OS/ARCH] IMAGE",
  summary: "pull IMAGE into the local OCI store; prints the reference and manifest digest",
  options: PULL_OPTIONS,
  examples: ["supermachine pull alpine:latest", "supermachine pull --platform linux/arm64 alpine:latest"],
};

const ROOTFS_OPTIONS: OptionSpec[] = [
  { names: ["--output", "-o"], value: "FILE", help: "where to write the squashfs image (required)" },
  { names: ["--platform"], value: "OS/ARCH", help: "platform to pull (default: the host's)" },
  { names: ["--pull"], value: "always|missing|never", help: "when to pull IMAGE (default missing)" },
  { names: ["--block-size"], value: "BYTES", help: "squashfs block size, 4096..1048576 (default 131072)" },
  { names: ["--no-compression"], help: "store data uncompressed (default gzip)" },
  { names: ["--quiet", "-q"], help: "no progress output" },
];

export const IMAGE_ROOTFS_HELP: CommandHelp = {
  usage: "image rootfs [options] IMAGE -o FILE",
  summary: "pull IMAGE and write its root filesystem (all layers flattened) as a squashfs 4.0 image",
  description:
    "FILE is written atomically (a temporary file next to it, then renamed): it is either complete or\nabsent. Read it with unsquashfs -l FILE, sqfs2tar FILE | tar -t, or mount -o loop -t squashfs.",
  options: ROOTFS_OPTIONS,
  examples: ["supermachine image rootfs alpine:latest -o alpine.sqfs && unsquashfs -l alpine.sqfs | head"],
};

export const IMAGE_HELP: CommandHelp = {
  usage: "image SUBCOMMAND ...",
  summary: "image tools: `image rootfs IMAGE -o FILE` writes its root filesystem as squashfs",
  description: `Subcommands:\n  rootfs    ${IMAGE_ROOTFS_HELP.summary}\n\nSee \`supermachine image rootfs --help\`.`,
  options: [],
  examples: ["supermachine image rootfs alpine:latest -o alpine.sqfs"],
};

function snapshotsDir(p: Parsed): string {
  return resolve(flag(p, "--snapshots-dir") ?? defaultSnapshotsDir());
}

function dirSize(dir: string): number {
  let total = 0;
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, ent.name);
    if (ent.isDirectory()) total += dirSize(full);
    else if (ent.isFile()) total += statSync(full).blocks * 512;
  }
  return total;
}

function age(iso: string): string {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  if (s < 129600) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export async function cmdImages(args: string[]): Promise<number> {
  const p = parseArgs("images", args, IMAGES_HELP.options, 0);
  if (p.rest.length) throw new UsageError(`images takes no arguments, got: ${p.rest.join(" ")}`, "images");
  const dir = snapshotsDir(p);
  const rows: string[][] = [["NAME", "IMAGE", "MEMORY", "SIZE", "CREATED"]];
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue;
      const metaPath = join(dir, name, "metadata.json");
      if (!existsSync(metaPath)) continue;
      try {
        const m = JSON.parse(readFileSync(metaPath, "utf8"));
        rows.push([
          name,
          String(m.ref),
          `${m.memoryMib} MiB`,
          fmtBytes(dirSize(join(dir, name))),
          age(m.createdAt),
        ]);
      } catch {
        rows.push([name, "(unreadable metadata)", "", "", ""]);
      }
    }
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  for (const r of rows)
    process.stdout.write(
      `${r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd()}\n`,
    );
  return 0;
}

export async function cmdRm(args: string[]): Promise<number> {
  const p = parseArgs("rm", args, RM_HELP.options, Number.POSITIVE_INFINITY);
  if (p.positionals.length === 0)
    throw new UsageError("rm needs at least one NAME (see `supermachine images`)", "rm");
  const dir = snapshotsDir(p);
  let rc = 0;
  for (const name of p.positionals) {
    const target = join(dir, name);
    if (!NAME_RE.test(name) || !existsSync(join(target, "metadata.json"))) {
      process.stderr.write(
        `supermachine: no snapshot named ${name} in ${dir} (see \`supermachine images\`)\n`,
      );
      rc = 1;
      continue;
    }
    // Only a snapshot supermachine wrote is deleted (another tool's dir with a metadata.json is not ours).
    let format: unknown;
    try {
      format = JSON.parse(readFileSync(join(target, "metadata.json"), "utf8"))?.format;
    } catch {}
    if (format !== FORMAT_NAME) {
      process.stderr.write(
        `supermachine: SM_SNAPSHOT_FOREIGN: ${target} was not written by supermachine (its metadata.json is not a supermachine snapshot's); not deleting it\n`,
      );
      rc = 1;
      continue;
    }
    rmSync(target, { recursive: true, force: true });
    process.stdout.write(`${name}\n`);
  }
  return rc;
}

type PullOpts = NonNullable<Parameters<typeof pull>[1]>;

function pullOptions(quiet: boolean, platform: string | undefined, policy: PullOpts["pullPolicy"]) {
  const prog = progressRenderer(quiet);
  const opts: PullOpts = {
    ...(policy ? { pullPolicy: policy } : {}),
    ...(platform ? { platform } : {}),
    onProgress: (e) => {
      if (e.type === "blob-progress" && e.kind === "layer") {
        prog.onProgress({ phase: "pull", layer: e.digest, bytesDone: e.done, bytesTotal: e.total });
      }
    },
  };
  return { opts, done: prog.done };
}

export async function cmdPull(args: string[]): Promise<number> {
  const p = parseArgs("pull", args, PULL_OPTIONS, Number.POSITIVE_INFINITY);
  const [ref, ...extra] = [...p.positionals, ...p.rest];
  if (!ref) throw new UsageError("pull needs an IMAGE", "pull");
  if (extra.length) throw new UsageError(`pull takes one IMAGE, got also: ${extra.join(" ")}`, "pull");
  const { opts, done } = pullOptions(has(p, "--quiet"), flag(p, "--platform"), "always");
  try {
    const img = await loadFromEnvSource(ref, opts);
    done();
    process.stdout.write(`${img.reference} ${img.digest}\n`);
  } finally {
    done();
  }
  return 0;
}

/**
 * Fail before any pull when `out` cannot be written: its directory must exist and take a new file,
 * and `out` must not be a directory.
 */
export async function checkOutputPath(out: string): Promise<void> {
  const dir = dirname(out);
  const st = await stat(out).catch(() => undefined);
  if (st?.isDirectory()) {
    throw new RootfsError(
      "SM_ROOTFS_IO",
      `-o ${out} is a directory: give a file name, e.g. ${join(out, "rootfs.sqfs")}`,
    );
  }
  const dst = await stat(dir).catch(() => undefined);
  if (!dst?.isDirectory()) {
    throw new RootfsError(
      "SM_ROOTFS_IO",
      `cannot write ${out}: the directory ${dir} does not exist. Create it or choose another -o path.`,
    );
  }
  // A real write (not access(2): root passes that on a read-only filesystem too).
  let probe: string;
  try {
    probe = await mkdtemp(join(dir, ".sm-rootfs-probe-"));
  } catch (err) {
    throw new RootfsError(
      "SM_ROOTFS_IO",
      `cannot write ${out}: creating a file in ${dir} failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}). Choose a writable -o path.`,
    );
  }
  await rm(probe, { recursive: true, force: true });
}

export async function cmdImage(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "rootfs") return cmdImageRootfs(rest);
  if (sub === undefined) throw new UsageError("image needs a subcommand (rootfs)", "image");
  // `image --help` / `image -h` / unknown options are handled by the generic parser.
  parseArgs("image", args, [], Number.POSITIVE_INFINITY);
  throw new UsageError(`unknown image subcommand ${sub} (known: rootfs)`, "image");
}

async function cmdImageRootfs(args: string[]): Promise<number> {
  const cmd = "image rootfs";
  const p = parseArgs(cmd, args, ROOTFS_OPTIONS, Number.POSITIVE_INFINITY);
  const [ref, ...extra] = p.positionals;
  if (!ref) throw new UsageError("image rootfs needs an IMAGE and -o FILE", cmd);
  if (extra.length || p.rest.length)
    throw new UsageError(`image rootfs takes one IMAGE, got also: ${[...extra, ...p.rest].join(" ")}`, cmd);
  const outFlag = flag(p, "--output");
  if (!outFlag) throw new UsageError("image rootfs needs -o FILE: where to write the squashfs image", cmd);
  const out = resolve(outFlag);
  const blockSize = intFlag(cmd, p, "--block-size", { min: 4096, max: 1048576 });
  if (blockSize !== undefined && (blockSize & (blockSize - 1)) !== 0)
    throw new UsageError(`--block-size must be a power of two, got ${blockSize}`, cmd);
  const policy = oneOf(cmd, p, "--pull", ["always", "missing", "never"] as const);
  await checkOutputPath(out);
  const quiet = has(p, "--quiet");
  const { opts, done } = pullOptions(quiet, flag(p, "--platform"), policy ?? "missing");
  let img: Awaited<ReturnType<typeof pull>>;
  try {
    img = await loadFromEnvSource(ref, opts);
  } finally {
    done();
  }
  await runRootfsCommand({
    layers: imageLayers(img),
    out,
    compression: has(p, "--no-compression") ? "none" : "gzip",
    ...(blockSize !== undefined ? { blockSize } : {}),
    write: quiet ? () => undefined : (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${out}\n`);
  return 0;
}
