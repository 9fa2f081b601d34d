import { OciError } from "./errors";
import type { ImageConfigFile, RuntimeConfig } from "./types";

function strArray(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new OciError("SM_INVALID_IMAGE", `image config field ${field} must be an array of strings`);
  }
  return v as string[];
}

/** Validate an image config document (parsed JSON). Throws `SM_INVALID_IMAGE`. */
export function parseImageConfig(doc: unknown): ImageConfigFile {
  if (typeof doc !== "object" || doc === null) {
    throw new OciError("SM_INVALID_IMAGE", "image config is not a JSON object");
  }
  const d = doc as Record<string, unknown>;
  if (typeof d.architecture !== "string" || typeof d.os !== "string") {
    throw new OciError("SM_INVALID_IMAGE", "image config lacks architecture/os");
  }
  const rootfs = d.rootfs as { type?: unknown; diff_ids?: unknown } | undefined;
  if (!rootfs || rootfs.type !== "layers" || !Array.isArray(rootfs.diff_ids)) {
    throw new OciError("SM_INVALID_IMAGE", "image config lacks rootfs.diff_ids");
  }
  if (d.config !== undefined && d.config !== null && typeof d.config !== "object") {
    throw new OciError("SM_INVALID_IMAGE", "image config field config must be an object");
  }
  const c = (d.config ?? {}) as Record<string, unknown>;
  strArray(c.Env, "config.Env");
  strArray(c.Cmd, "config.Cmd");
  strArray(c.Entrypoint, "config.Entrypoint");
  if (c.User !== undefined && typeof c.User !== "string") {
    throw new OciError("SM_INVALID_IMAGE", "image config field config.User must be a string");
  }
  if (c.WorkingDir !== undefined && typeof c.WorkingDir !== "string") {
    throw new OciError("SM_INVALID_IMAGE", "image config field config.WorkingDir must be a string");
  }
  return d as unknown as ImageConfigFile;
}

/** The runtime view of an image config (arrays never undefined, ports parsed). */
export function runtimeConfig(file: ImageConfigFile): RuntimeConfig {
  const c = file.config ?? {};
  const exposedPorts: RuntimeConfig["exposedPorts"] = [];
  for (const key of Object.keys(c.ExposedPorts ?? {})) {
    const m = /^(\d+)(?:\/(tcp|udp|sctp))?$/i.exec(key);
    if (!m) continue;
    const port = Number(m[1]);
    if (port < 1 || port > 65535) continue;
    exposedPorts.push({ port, protocol: (m[2]?.toLowerCase() ?? "tcp") as "tcp" | "udp" | "sctp" });
  }
  exposedPorts.sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
  return {
    entrypoint: strArray(c.Entrypoint, "config.Entrypoint"),
    cmd: strArray(c.Cmd, "config.Cmd"),
    env: strArray(c.Env, "config.Env"),
    workingDir: c.WorkingDir || "/",
    user: c.User ?? "",
    exposedPorts,
    labels: { ...(c.Labels ?? {}) },
    stopSignal: c.StopSignal,
  };
}
