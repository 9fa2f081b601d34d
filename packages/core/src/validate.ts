/**
 * Strict validation of every public options object: wrong types, unknown keys and out-of-range values
 * are rejected with SM_INVALID_OPTIONS naming the field (e.g. `volumes[1].sizeMib`). Like the
 * original (a napi binding), an optional field given as `null` means the same as leaving it out.
 */
import { statSync } from "node:fs";
import { MAX_TIMER_MS } from "@supermachine/base";
import { codeOf, invalidOption, SupermachineError } from "./errors";
import { type NetworkOption, parseNetwork } from "./network/policy";
import type {
  BuildOptions,
  ExtraFile,
  ImageSource,
  MountSpec,
  StagedFile,
  SymlinkPolicy,
  VolumeSpec,
} from "./types";

type Obj = Record<string, unknown>;

function isPlainObject(v: unknown): v is Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function checkObject(v: unknown, field: string): Obj {
  if (!isPlainObject(v)) throw invalidOption(field, `expected an object, got ${describe(v)}`);
  return v;
}

export function checkKeys(obj: Obj, allowed: readonly string[], field: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      throw invalidOption(field ? `${field}.${key}` : key, `unknown option (allowed: ${allowed.join(", ")})`);
    }
  }
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number" && Number.isNaN(v)) return "NaN";
  return typeof v === "string" ? `a string (${JSON.stringify(v.slice(0, 40))})` : typeof v;
}

export function optString(v: unknown, field: string, opts: { nonEmpty?: boolean } = {}): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw invalidOption(field, `expected a string, got ${describe(v)}`);
  if (opts.nonEmpty && v.length === 0) throw invalidOption(field, "must not be empty");
  if (v.includes("\0")) throw invalidOption(field, "must not contain NUL bytes");
  return v;
}

export function reqString(v: unknown, field: string): string {
  if (v === undefined || v === null) throw invalidOption(field, "is required");
  return optString(v, field, { nonEmpty: true }) as string;
}

export function optInt(
  v: unknown,
  field: string,
  range: { min?: number; max?: number } = {},
): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw invalidOption(field, `expected a finite number, got ${describe(v)}`);
  }
  if (!Number.isInteger(v)) throw invalidOption(field, `expected an integer, got ${v}`);
  if (range.min !== undefined && v < range.min) {
    throw invalidOption(
      field,
      v < 0 ? `must not be negative (got ${v})` : `must be ≥ ${range.min} (got ${v})`,
    );
  }
  if (range.max !== undefined && v > range.max)
    throw invalidOption(field, `must be ≤ ${range.max} (got ${v})`);
  return v;
}

export function optBool(v: unknown, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw invalidOption(field, `expected a boolean, got ${describe(v)}`);
  return v;
}

export function optEnum<T extends string>(v: unknown, field: string, values: readonly T[]): T | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || !(values as readonly string[]).includes(v)) {
    throw invalidOption(
      field,
      `expected one of ${values.map((x) => JSON.stringify(x)).join(" | ")}, got ${describe(v)}`,
    );
  }
  return v as T;
}

export function optStringArray(
  v: unknown,
  field: string,
  opts: { nonEmpty?: boolean } = {},
): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw invalidOption(field, `expected an array of strings, got ${describe(v)}`);
  if (opts.nonEmpty && v.length === 0) throw invalidOption(field, "must not be empty");
  v.forEach((item, i) => {
    optString(item, `${field}[${i}]`);
    if (item === undefined || item === null) throw invalidOption(`${field}[${i}]`, "expected a string");
  });
  return [...(v as string[])];
}

export function optStringRecord(v: unknown, field: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  const obj = checkObject(v, field);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(obj)) {
    if (k.length === 0 || k.includes("=") || k.includes("\0")) {
      throw invalidOption(`${field}.${k}`, "environment names must be non-empty and contain no '=' or NUL");
    }
    const s = optString(val, `${field}.${k}`);
    if (s === undefined) throw invalidOption(`${field}.${k}`, "expected a string");
    out[k] = s;
  }
  return out;
}

/** A share's host directory must exist now (SM_MOUNT_INVALID, not SM_INVALID_OPTIONS: the value is well-formed). */
function checkShareDir(hostPath: string, field: string): void {
  let st: ReturnType<typeof statSync> | undefined;
  try {
    st = statSync(hostPath);
  } catch (err) {
    throw new SupermachineError(
      "SM_MOUNT_INVALID",
      `Invalid option \`${field}\`: ${JSON.stringify(hostPath)} does not exist (${codeOf(err) ?? "stat failed"}). Create the directory or fix the path.`,
      { details: { field, hostPath }, cause: err },
    );
  }
  if (!st?.isDirectory())
    throw new SupermachineError(
      "SM_MOUNT_INVALID",
      `Invalid option \`${field}\`: ${JSON.stringify(hostPath)} is not a directory; a share must be a directory.`,
      { details: { field, hostPath } },
    );
}

function absPath(v: unknown, field: string, guest: boolean): string {
  const s = reqString(v, field);
  if (guest && !s.startsWith("/"))
    throw invalidOption(field, `must be an absolute guest path (got ${JSON.stringify(s)})`);
  if (guest && s.split("/").includes("..")) throw invalidOption(field, "must not contain '..'");
  return s;
}

function optArray<T>(v: unknown, field: string, each: (item: unknown, f: string) => T): T[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw invalidOption(field, `expected an array, got ${describe(v)}`);
  return v.map((item, i) => each(item, `${field}[${i}]`));
}

function checkBytes(v: unknown, field: string): Buffer {
  if (typeof v === "string") return Buffer.from(v);
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw invalidOption(field, `expected a Buffer, Uint8Array or string, got ${describe(v)}`);
}

const BUILD_KEYS = [
  "ref",
  "name",
  "memoryMib",
  "vcpus",
  "maxMemoryMib",
  "maxVcpus",
  "pullPolicy",
  "guestPort",
  "cmd",
  "env",
  "listenerRequired",
  "snapshotsDir",
  "extraFiles",
  "mounts",
  "volumes",
  "extraKernelArgs",
  "warmupTag",
  "warmup",
  "source",
  "network",
  "accel",
  "platform",
  "kernelDir",
  "tmpfsMib",
  "onProgress",
] as const;

/** The validated BuildOptions with every default applied. */
export interface ResolvedBuildOptions {
  ref: string;
  name: string | undefined;
  memoryMib: number;
  vcpus: number;
  /** RAM ceiling of the VM (≥ memoryMib; default memoryMib). */
  maxMemoryMib: number;
  /** vCPUs of the VM (≥ vcpus; default vcpus); those above vcpus are kept offline. */
  maxVcpus: number;
  pullPolicy: "always" | "missing" | "never";
  guestPort: number;
  cmd: string[] | undefined;
  env: Record<string, string>;
  listenerRequired: boolean;
  snapshotsDir: string | undefined;
  extraFiles: ExtraFile[];
  mounts: (Required<Omit<MountSpec, "guestPath" | "cacheTtlMs" | "symlinks">> & {
    symlinks: SymlinkPolicy;
    guestPath?: string;
    cacheTtlMs?: number;
  })[];
  volumes: {
    [K in keyof VolumeSpec]-?: Exclude<VolumeSpec[K], null | undefined>;
  }[];
  extraKernelArgs: string[];
  warmupTag: string;
  warmup: BuildOptions["warmup"];
  source: ImageSource;
  /** `source` was given by the caller (an explicit registry source ignores SUPERMACHINE_IMAGE_SOURCE). */
  sourceGiven: boolean;
  network: NetworkOption;
  accel: "auto" | "kvm" | "hvf" | "tcg";
  platform: string | undefined;
  kernelDir: string | undefined;
  tmpfsMib: number | undefined;
  onProgress: BuildOptions["onProgress"];
}

/** Snapshot names are directory names: keep them boring. */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function validateBuildOptions(input: unknown): ResolvedBuildOptions {
  const o = checkObject(input, "options");
  checkKeys(o, BUILD_KEYS, "");
  const ref = reqString(o.ref, "ref");
  if (/\s/.test(ref)) throw invalidOption("ref", `must not contain whitespace (got ${JSON.stringify(ref)})`);
  const name = optString(o.name, "name", { nonEmpty: true });
  if (name !== undefined && !NAME_RE.test(name)) {
    throw invalidOption(
      "name",
      "must match [A-Za-z0-9][A-Za-z0-9._-]* (it is a directory name), max 128 chars",
    );
  }
  const memoryMib = optInt(o.memoryMib, "memoryMib", { min: 64, max: 1024 * 1024 }) ?? 256;
  const vcpus = optInt(o.vcpus, "vcpus", { min: 1, max: 256 }) ?? 1;
  const maxMemoryMib =
    optInt(o.maxMemoryMib, "maxMemoryMib", { min: memoryMib, max: 1024 * 1024 }) ?? memoryMib;
  const maxVcpus = optInt(o.maxVcpus, "maxVcpus", { min: vcpus, max: 255 }) ?? vcpus;
  const pullPolicy =
    optEnum(o.pullPolicy, "pullPolicy", ["always", "missing", "never"] as const) ?? "missing";
  const guestPort = optInt(o.guestPort, "guestPort", { min: 1, max: 65535 }) ?? 80;
  const cmd = optStringArray(o.cmd, "cmd", { nonEmpty: true });
  const env = optStringRecord(o.env, "env") ?? {};
  const listenerRequired = optBool(o.listenerRequired, "listenerRequired") ?? false;
  const snapshotsDir = optString(o.snapshotsDir, "snapshotsDir", { nonEmpty: true });
  const extraFiles =
    optArray(o.extraFiles, "extraFiles", (item, f) => {
      const e = checkObject(item, f);
      checkKeys(e, ["hostPath", "guestPath"], f);
      return {
        hostPath: reqString(e.hostPath, `${f}.hostPath`),
        guestPath: absPath(e.guestPath, `${f}.guestPath`, true),
      };
    }) ?? [];
  const tags = new Set<string>();
  const mounts =
    optArray(o.mounts, "mounts", (item, f) => {
      const m = checkObject(item, f);
      checkKeys(m, ["hostPath", "guestTag", "symlinks", "guestPath", "cacheTtlMs"], f);
      const guestTag = reqString(m.guestTag, `${f}.guestTag`);
      if (Buffer.byteLength(guestTag) > 35) throw invalidOption(`${f}.guestTag`, "must be at most 35 bytes");
      if (!/^[A-Za-z0-9._-]+$/.test(guestTag) || guestTag === "." || guestTag === "..")
        throw invalidOption(
          `${f}.guestTag`,
          "use only letters, digits, '.', '_' and '-' (the guest mounts by this name)",
        );
      if (tags.has(guestTag))
        throw invalidOption(
          `${f}.guestTag`,
          `duplicate tag ${JSON.stringify(guestTag)}: every share needs its own tag`,
        );
      tags.add(guestTag);
      const hostPath = reqString(m.hostPath, `${f}.hostPath`);
      checkShareDir(hostPath, `${f}.hostPath`);
      const guestPath = m.guestPath == null ? undefined : absPath(m.guestPath, `${f}.guestPath`, true);
      const cacheTtlMs = optInt(m.cacheTtlMs, `${f}.cacheTtlMs`, { min: 0, max: 3_600_000 });
      return {
        hostPath,
        guestTag,
        symlinks: optEnum(m.symlinks, `${f}.symlinks`, ["deny", "opaque", "follow"] as const) ?? "opaque",
        ...(guestPath ? { guestPath } : {}),
        ...(cacheTtlMs ? { cacheTtlMs } : {}),
      };
    }) ?? [];
  const guestPaths = new Set<string>();
  const volumes =
    optArray(o.volumes, "volumes", (item, f) => {
      const v = checkObject(item, f);
      checkKeys(v, ["hostPath", "guestPath", "sizeMib", "format", "mount", "readOnly"], f);
      const guestPath = absPath(v.guestPath, `${f}.guestPath`, true);
      if (guestPath === "/") throw invalidOption(`${f}.guestPath`, "must not be /");
      if (guestPaths.has(guestPath))
        throw invalidOption(`${f}.guestPath`, `duplicate guest path ${guestPath}`);
      guestPaths.add(guestPath);
      return {
        hostPath: reqString(v.hostPath, `${f}.hostPath`),
        guestPath,
        sizeMib: optInt(v.sizeMib, `${f}.sizeMib`, { min: 8, max: 16 * 1024 * 1024 }) ?? 1024,
        format: optEnum(v.format, `${f}.format`, ["none", "ext4"] as const) ?? "none",
        mount: optBool(v.mount, `${f}.mount`) ?? false,
        readOnly: optBool(v.readOnly, `${f}.readOnly`) ?? false,
      };
    }) ?? [];
  if (volumes.length > 16) throw invalidOption("volumes", "at most 16 volumes");
  const extraKernelArgs = optStringArray(o.extraKernelArgs, "extraKernelArgs") ?? [];
  extraKernelArgs.forEach((a, i) => {
    if (/\s/.test(a) || a.length === 0) {
      throw invalidOption(
        `extraKernelArgs[${i}]`,
        "each argument must be a non-empty word without whitespace",
      );
    }
  });
  const warmupTag = optString(o.warmupTag, "warmupTag", { nonEmpty: true }) ?? "default";
  if (o.warmup != null && typeof o.warmup !== "function") {
    throw invalidOption("warmup", `expected a function (vm) => Promise<void>, got ${describe(o.warmup)}`);
  }
  if (o.onProgress != null && typeof o.onProgress !== "function") {
    throw invalidOption("onProgress", `expected a function, got ${describe(o.onProgress)}`);
  }
  const source = validateSource(o.source);
  const network = parseNetwork(o.network);
  const accel = optEnum(o.accel, "accel", ["auto", "kvm", "hvf", "tcg"] as const) ?? "auto";
  const platform = optString(o.platform, "platform", { nonEmpty: true });
  if (platform !== undefined && !/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(platform)) {
    throw invalidOption("platform", `expected os/arch[/variant], got ${JSON.stringify(platform)}`);
  }
  const kernelDir = optString(o.kernelDir, "kernelDir", { nonEmpty: true });
  const tmpfsMib = optInt(o.tmpfsMib, "tmpfsMib", { min: 1, max: 1024 * 1024 });
  return {
    ref,
    name,
    memoryMib,
    vcpus,
    maxMemoryMib,
    maxVcpus,
    pullPolicy,
    guestPort,
    cmd,
    env,
    listenerRequired,
    snapshotsDir,
    extraFiles,
    mounts,
    volumes,
    extraKernelArgs,
    warmupTag,
    warmup: (o.warmup ?? undefined) as BuildOptions["warmup"],
    source,
    sourceGiven: o.source !== undefined && o.source !== null,
    network,
    accel,
    platform,
    kernelDir,
    tmpfsMib,
    onProgress: (o.onProgress ?? undefined) as BuildOptions["onProgress"],
  };
}

function validateSource(v: unknown): ImageSource {
  if (v === undefined || v === null) return { type: "registry" };
  const s = checkObject(v, "source");
  const type = optEnum(s.type, "source.type", ["registry", "oci-layout", "archive"] as const);
  if (type === undefined) throw invalidOption("source.type", "is required");
  if (type === "registry") {
    checkKeys(s, ["type"], "source");
    return { type };
  }
  checkKeys(s, ["type", "path"], "source");
  return { type, path: reqString(s.path, "source.path") };
}

const POOL_KEYS = [
  "min",
  "max",
  "acquireTimeoutMs",
  "idleTimeoutMs",
  "restoreOnRelease",
  "memoryMib",
  "vcpus",
  "restoreTimeoutMs",
  "network",
] as const;

export interface ResolvedPoolOptions {
  min: number;
  max: number;
  acquireTimeoutMs: number;
  idleTimeoutMs: number | undefined;
  restoreOnRelease: boolean;
  memoryMib: number | undefined;
  vcpus: number | undefined;
  restoreTimeoutMs: number;
  /** Overrides the image's network policy (undefined = the image's). */
  network: NetworkOption | undefined;
}

export function validatePoolOptions(input: unknown): ResolvedPoolOptions {
  const o = input === undefined || input === null ? {} : checkObject(input, "options");
  checkKeys(o, POOL_KEYS, "");
  const min = optInt(o.min, "min", { min: 0, max: 4096 }) ?? 1;
  const max = optInt(o.max, "max", { min: 1, max: 4096 }) ?? Math.max(1, min);
  if (min > max) throw invalidOption("min", `must be ≤ max (min ${min}, max ${max})`);
  return {
    min,
    max,
    acquireTimeoutMs: optInt(o.acquireTimeoutMs, "acquireTimeoutMs", { min: 0, max: MAX_TIMER_MS }) ?? 60_000,
    idleTimeoutMs: optInt(o.idleTimeoutMs, "idleTimeoutMs", { min: 0, max: MAX_TIMER_MS }),
    restoreOnRelease: optBool(o.restoreOnRelease, "restoreOnRelease") ?? true,
    memoryMib: optInt(o.memoryMib, "memoryMib", { min: 64, max: 1024 * 1024 }),
    vcpus: optInt(o.vcpus, "vcpus", { min: 1, max: 256 }),
    // the pool adds its own margin to this deadline
    restoreTimeoutMs:
      optInt(o.restoreTimeoutMs, "restoreTimeoutMs", { min: 1, max: MAX_TIMER_MS - 60_000 }) ?? 30_000,
    network: o.network === undefined ? undefined : parseNetwork(o.network),
  };
}

const EXEC_KEYS = [
  "argv",
  "stageFiles",
  "stageFilesMode",
  "timeoutMs",
  "env",
  "cwd",
  "chain",
  "tty",
  "winsize",
  "maxOutputBytes",
] as const;

/** Default `maxOutputBytes` of exec: 64 MiB of stdout + stderr kept on the host. */
export const DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

export interface ResolvedExecOptions {
  argv: string[];
  stage: { path: string; data: Buffer; mode: number }[];
  timeoutMs: number;
  env: Record<string, string>;
  cwd: string;
  chain: { argv: string[]; env?: Record<string, string>; cwd?: string } | null;
  tty: boolean;
  cols: number;
  rows: number;
  maxOutputBytes: number;
}

export const MAX_FILE_BYTES = 4 * 1024 * 1024;

// Every duration option is capped to MAX_TIMER_MS (0 still means "none" where the option allows it).
export { MAX_TIMER_MS };

export function validateExecOptions(input: unknown): ResolvedExecOptions {
  const o = checkObject(input, "options");
  checkKeys(o, EXEC_KEYS, "");
  if (o.argv === undefined || o.argv === null) throw invalidOption("argv", "is required");
  const argv = optStringArray(o.argv, "argv", { nonEmpty: true }) as string[];
  if (argv[0] === "") throw invalidOption("argv[0]", "must not be empty");
  const stage: ResolvedExecOptions["stage"] = [];
  if (o.stageFiles !== undefined && o.stageFiles !== null) {
    const sf = checkObject(o.stageFiles, "stageFiles");
    for (const [path, bytes] of Object.entries(sf)) {
      const f = `stageFiles[${JSON.stringify(path)}]`;
      absPath(path, f, true);
      stage.push({ path, data: checkBytes(bytes, f), mode: 0o644 });
    }
  }
  if (o.stageFilesMode !== undefined && o.stageFilesMode !== null) {
    optArray(o.stageFilesMode, "stageFilesMode", (item, f) => {
      const s = checkObject(item, f) as Partial<StagedFile> & Obj;
      checkKeys(s, ["guestPath", "bytes", "mode"], f);
      stage.push({
        path: absPath(s.guestPath, `${f}.guestPath`, true),
        data: checkBytes(s.bytes, `${f}.bytes`),
        mode: optInt(s.mode, `${f}.mode`, { min: 0, max: 0o7777 }) ?? 0o644,
      });
    });
  }
  const staged = stage.reduce((n, f) => n + f.data.length, 0);
  if (staged > MAX_FILE_BYTES) {
    // one request frame carries them all (the agent's frame limit is 5 MiB)
    throw new SupermachineError(
      "SM_FILE_TOO_LARGE",
      `stageFiles/stageFilesMode: ${staged} bytes in total is over the 4 MiB per call; stage big files with several writeFile calls, through spawn stdin (e.g. sh -c 'cat > path'), or on a volume.`,
      { details: { field: "stageFiles", bytes: staged } },
    );
  }
  let chain: ResolvedExecOptions["chain"] = null;
  if (Array.isArray(o.chain)) {
    // the original's form: the argv of the follow-up command
    chain = { argv: optStringArray(o.chain, "chain", { nonEmpty: true }) as string[] };
  } else if (o.chain !== undefined && o.chain !== null) {
    const c = checkObject(o.chain, "chain");
    checkKeys(c, ["argv", "env", "cwd"], "chain");
    if (c.argv === undefined || c.argv === null) throw invalidOption("chain.argv", "is required");
    chain = { argv: optStringArray(c.argv, "chain.argv", { nonEmpty: true }) as string[] };
    const env = optStringRecord(c.env, "chain.env");
    if (env) chain.env = env;
    const cwd = optString(c.cwd, "chain.cwd", { nonEmpty: true });
    if (cwd) chain.cwd = cwd;
  }
  let cols = 80;
  let rows = 24;
  if (o.winsize !== undefined && o.winsize !== null) {
    const w = checkObject(o.winsize, "winsize");
    checkKeys(w, ["cols", "rows"], "winsize");
    // 0 (the original's "let the agent pick") gives the default size, 80x24
    cols = optInt(w.cols, "winsize.cols", { min: 0, max: 65535 }) || 80;
    rows = optInt(w.rows, "winsize.rows", { min: 0, max: 65535 }) || 24;
  }
  return {
    argv,
    stage,
    timeoutMs: optInt(o.timeoutMs, "timeoutMs", { min: 0, max: MAX_TIMER_MS }) ?? 60_000,
    env: optStringRecord(o.env, "env") ?? {},
    cwd: optString(o.cwd, "cwd", { nonEmpty: true }) ?? "/",
    chain,
    tty: optBool(o.tty, "tty") ?? false,
    cols,
    rows,
    maxOutputBytes:
      optInt(o.maxOutputBytes, "maxOutputBytes", { min: 1, max: Number.MAX_SAFE_INTEGER }) ??
      DEFAULT_MAX_OUTPUT_BYTES,
  };
}

export function toBuffer(v: unknown, field: string): Buffer {
  return checkBytes(v, field);
}
