/**
 * The bake fingerprint: sha256 over a canonical JSON of every input that changes the snapshot (the
 * README's "Fingerprint" paragraph under `BuildOptions` lists them); Image.build returns a cached
 * snapshot with the same fingerprint instead of baking. Accelerator-independent (a snapshot baked
 * under TCG restores under KVM only if the backend says so; the accelerator is recorded in metadata,
 * not in the fingerprint).
 */
import { createHash } from "node:crypto";

/** Bumped whenever the snapshot layout or boot config semantics change: old snapshots re-bake. */
export const SNAPSHOT_FORMAT_VERSION = 1;

/** A `mounts` entry as recorded in the fingerprint inputs and the snapshot metadata (absolute hostPath). */
export interface RecordedMount {
  hostPath: string;
  guestTag: string;
  symlinks: "deny" | "opaque" | "follow";
  guestPath?: string;
  cacheTtlMs?: number;
}

/** A `volumes` entry as recorded in the fingerprint inputs and the snapshot metadata (absolute hostPath). */
export interface RecordedVolume {
  hostPath: string;
  guestPath: string;
  sizeMib: number;
  format?: "ext4";
  mount?: true;
  readOnly?: true;
}

/** Volume semantics version recorded in the fingerprint inputs of builds with volumes. */
export const VOLUME_SEMANTICS = 2;

export interface FingerprintInputs {
  /** Resolved manifest digest of the image (platform-specific manifest). */
  imageDigest: string;
  /** Workload argv override (null = image default). */
  cmd: string[] | null;
  env: Record<string, string>;
  memoryMib: number;
  vcpus: number;
  /** Present only when above memoryMib / vcpus (so other fingerprints stay as they were). */
  maxMemoryMib?: number;
  maxVcpus?: number;
  guestPort: number;
  listenerRequired: boolean;
  /** guestPath + sha256 of the host file's contents (not its path or mtime). */
  extraFiles: { guestPath: string; sha256: string; mode: number }[];
  mounts: RecordedMount[];
  /** format/mount/readOnly only when set (not "none"/false). */
  volumes: RecordedVolume[];
  /**
   * 2 (present only with volumes): raw devices attached in the bake, guest mounts captured and
   * remounted (issue 17). Snapshots of the earlier semantics (host format + mount after resume) re-bake.
   */
  volumeSemantics?: number;
  extraKernelArgs: string[];
  /** Present only when a warmup callback is given. */
  warmupTag: string | null;
  network: string;
  tmpfsMib: number;
  kernelRelease: string;
  arch: string;
  agentVersion: string;
  agentSha256: string;
  formatVersion: number;
}

/** JSON with object keys sorted recursively; arrays keep their order; undefined properties dropped. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) throw new TypeError("non-finite number");
    return JSON.stringify(value) ?? "null";
  }
  if (Array.isArray(value))
    return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(",")}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(",")}}`;
}

export function fingerprint(inputs: FingerprintInputs): string {
  return createHash("sha256").update(canonicalJson(inputs)).digest("hex");
}

/** Default snapshot name: repository basename + tag + 12 hex chars of the fingerprint. */
export function defaultName(ref: string, fp: string): string {
  const noDigest = ref.split("@")[0] ?? ref;
  const lastSlash = noDigest.lastIndexOf("/");
  const last = noDigest.slice(lastSlash + 1);
  const colon = last.indexOf(":");
  const repo = colon >= 0 ? last.slice(0, colon) : last;
  const tag = colon >= 0 ? last.slice(colon + 1) : ref.includes("@") ? "digest" : "latest";
  const clean = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[^A-Za-z0-9]+/, "") || "image";
  return `${clean(repo)}-${clean(tag)}-${fp.slice(0, 12)}`.slice(0, 128);
}
