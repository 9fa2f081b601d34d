import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Accel, NetworkMode, ResolvedVmConfig, VmConfig } from "./contract";
import { HypervisorError } from "./errors";
import { defaultRuntimeRoot } from "./runtime";

const VM_CONFIG_KEYS = new Set<keyof VmConfig>([
  "id",
  "kernel",
  "initrd",
  "rootfs",
  "volumes",
  "memoryMib",
  "vcpus",
  "kernelArgs",
  "network",
  "vsock",
  "vsockCid",
  "accel",
  "runtimeRoot",
  "qemuBinary",
  "extraQemuArgs",
]);
const ACCELS: readonly Accel[] = ["auto", "kvm", "hvf", "tcg"];
const NETWORKS: readonly NetworkMode[] = ["none", "restricted", "nat"];
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

function bad(msg: string): HypervisorError {
  return new HypervisorError("SM_VMM_CONFIG", msg);
}

let idCounter = 0;
/** A fresh VM id: `vm-<pid>-<n>-<random>`. */
export function newVmId(): string {
  idCounter++;
  return `vm-${process.pid}-${idCounter}-${randomBytes(3).toString("hex")}`;
}

export function validateId(id: unknown): string {
  if (typeof id !== "string" || !ID_RE.test(id) || id === "." || id === "..") {
    throw bad(`id must match ${ID_RE} (got ${JSON.stringify(id)})`);
  }
  return id;
}

function existingFile(what: string, p: unknown): string {
  if (typeof p !== "string" || p.length === 0) throw bad(`${what} must be a non-empty path string`);
  const abs = resolve(p);
  if (!existsSync(abs)) throw bad(`${what} ${abs} does not exist`);
  return abs;
}

export function validateAccel(a: unknown): Accel {
  if (!ACCELS.includes(a as Accel))
    throw bad(`accel must be one of ${ACCELS.join(", ")} (got ${JSON.stringify(a)})`);
  return a as Accel;
}

export function validateNetwork(n: unknown): NetworkMode {
  if (!NETWORKS.includes(n as NetworkMode))
    throw bad(`network must be one of ${NETWORKS.join(", ")} (got ${JSON.stringify(n)})`);
  return n as NetworkMode;
}

function intIn(what: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw bad(`${what} must be an integer in [${min}, ${max}] (got ${JSON.stringify(v)})`);
  }
  return v;
}

function stringArray(what: string, v: unknown): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string"))
    throw bad(`${what} must be an array of strings`);
  return [...v];
}

export function validateVolumes(v: unknown): Required<import("./contract").VolumeConfig>[] {
  if (!Array.isArray(v)) throw bad("volumes must be an array of { path, readOnly? }");
  return v.map((x, i) => {
    if (typeof x !== "object" || x === null) throw bad(`volumes[${i}] must be an object`);
    for (const k of Object.keys(x))
      if (k !== "path" && k !== "readOnly") throw bad(`volumes[${i}]: unknown key ${k}`);
    const o = x as { path?: unknown; readOnly?: unknown };
    if (o.readOnly !== undefined && typeof o.readOnly !== "boolean")
      throw bad(`volumes[${i}].readOnly must be boolean`);
    return { path: existingFile(`volumes[${i}].path`, o.path), readOnly: o.readOnly === true };
  });
}

/** Validate a VmConfig (unknown keys rejected, files must exist) and apply defaults. Throws SM_VMM_CONFIG. */
export function validateVmConfig(input: unknown): ResolvedVmConfig {
  if (typeof input !== "object" || input === null || Array.isArray(input))
    throw bad("VM config must be an object");
  const c = input as Record<string, unknown>;
  for (const k of Object.keys(c)) {
    if (!VM_CONFIG_KEYS.has(k as keyof VmConfig))
      throw bad(`unknown VM config key "${k}" (known: ${[...VM_CONFIG_KEYS].join(", ")})`);
  }
  const out: ResolvedVmConfig = {
    id: c.id === undefined ? newVmId() : validateId(c.id),
    initrd: existingFile("initrd", c.initrd),
    volumes: c.volumes === undefined ? [] : validateVolumes(c.volumes),
    memoryMib: c.memoryMib === undefined ? 256 : intIn("memoryMib", c.memoryMib, 32, 1024 * 1024),
    vcpus: c.vcpus === undefined ? 1 : intIn("vcpus", c.vcpus, 1, 255),
    kernelArgs: c.kernelArgs === undefined ? [] : stringArray("kernelArgs", c.kernelArgs),
    network: c.network === undefined ? "none" : validateNetwork(c.network),
    vsock: c.vsock === undefined ? false : c.vsock === true,
    vsockCid: c.vsockCid === undefined ? 3 : intIn("vsockCid", c.vsockCid, 3, 0xfffffffe),
    accel: c.accel === undefined ? "auto" : validateAccel(c.accel),
    runtimeRoot: c.runtimeRoot === undefined ? defaultRuntimeRoot() : resolve(String(c.runtimeRoot)),
    extraQemuArgs: c.extraQemuArgs === undefined ? [] : stringArray("extraQemuArgs", c.extraQemuArgs),
  };
  if (c.vsock !== undefined && typeof c.vsock !== "boolean") throw bad("vsock must be boolean");
  if (c.kernel !== undefined) out.kernel = existingFile("kernel", c.kernel);
  if (c.rootfs !== undefined) out.rootfs = existingFile("rootfs", c.rootfs);
  if (c.qemuBinary !== undefined) {
    if (typeof c.qemuBinary !== "string" || !c.qemuBinary) throw bad("qemuBinary must be a non-empty string");
    out.qemuBinary = c.qemuBinary;
  }
  return out;
}
