/**
 * The guest boot configuration `/sm/config.cbor` (SPEC §12): typed, validated, encoded with the
 * same strict CBOR subset as frames.
 */
import { type CborMap, decodeCbor, encodeCbor } from "./cbor";
import { CONFIG_MAX } from "./constants";
import { AgentError } from "./errors";
import { Fields, isMap, kind } from "./frames";

export interface BootWorkload {
  /** ENTRYPOINT + CMD (at least one entry). */
  argv: string[];
  /** Full environment, "K=V" entries (also the base environment of exec/spawn). */
  env?: string[];
  /** Working directory (default "/"). */
  cwd?: string;
  /** "name", "uid", "name:group" or "uid:gid" (default "0:0"). */
  user?: string;
}
export interface BootVolume {
  device: string;
  path: string;
  /** Format (ext4) when the device is blank. */
  format: boolean;
}
export interface BootNetwork {
  /** CIDR, e.g. "10.0.2.15/24". */
  ip: string;
  gateway: string;
  dns: string;
}
export interface BootConfig {
  hostname?: string;
  rootDevice?: string;
  tmpfsMib?: number;
  workload?: BootWorkload | null;
  startWorkload?: "boot" | "resume" | "never";
  guestPort?: number;
  listenerRequired?: boolean;
  volumes?: BootVolume[];
  network?: BootNetwork | null;
}
/** A BootConfig with every default filled in, as the agent sees it. */
export type ResolvedBootConfig = Required<Omit<BootConfig, "workload">> & {
  v: 1;
  workload: Required<BootWorkload> | null;
};

function configError(message: string): AgentError {
  return new AgentError("SM_AGENT_INVALID_ARGS", `boot config: ${message}`);
}

function resolve(m: CborMap): ResolvedBootConfig {
  const f = new Fields(m, "config", configError);
  const v = f.uint("v");
  if (v !== 1) throw configError(`v must be 1, got ${v}`);
  const hostname = f.optText("hostname", "supermachine", 64);
  if (hostname.length === 0) throw configError("hostname must not be empty");
  const startWorkload = f.optText("startWorkload", "boot", 16);
  if (startWorkload !== "boot" && startWorkload !== "resume" && startWorkload !== "never") {
    throw configError(`startWorkload must be "boot", "resume" or "never", got "${startWorkload}"`);
  }
  let workload: Required<BootWorkload> | null = null;
  const wm = f.optMap("workload");
  if (wm !== null) {
    const w = new Fields(wm, "config.workload", configError);
    const env = w.present("env") ? w.textArray("env", 4096, 131072) : [];
    for (const e of env) if (!e.includes("=")) throw configError(`workload.env entry "${e}" is not K=V`);
    workload = {
      argv: w.textArray("argv", 4096, 131072, 1),
      env,
      cwd: w.optText("cwd", "/", 4096),
      user: w.optText("user", "0:0", 256),
    };
  }
  const volumes: BootVolume[] = [];
  if (f.present("volumes")) {
    const arr = f.array("volumes", 64);
    arr.forEach((x, i) => {
      if (!isMap(x)) throw configError(`volumes[${i}] must be a map, got ${kind(x)}`);
      const vf = new Fields(x, `config.volumes[${i}]`, configError);
      volumes.push({
        device: vf.text("device", 4096, 1),
        path: vf.text("path", 4096, 1),
        format: vf.optBool("format", false),
      });
    });
  }
  let network: BootNetwork | null = null;
  const nm = f.optMap("network");
  if (nm !== null) {
    const nf = new Fields(nm, "config.network", configError);
    network = { ip: nf.text("ip", 64, 1), gateway: nf.text("gateway", 64, 1), dns: nf.text("dns", 64, 1) };
  }
  return {
    v: 1,
    hostname,
    rootDevice: f.optText("rootDevice", "/dev/vda", 4096),
    tmpfsMib: f.optUint("tmpfsMib", 0, 0, 1 << 30),
    workload,
    startWorkload,
    guestPort: f.optUint("guestPort", 0, 0, 65535),
    listenerRequired: f.optBool("listenerRequired", false),
    volumes,
    network,
  };
}

/**
 * Validates `config`, fills defaults and encodes it as the bytes of `/sm/config.cbor`.
 * Throws SM_AGENT_INVALID_ARGS naming the bad key.
 */
export function encodeBootConfig(config: BootConfig): Buffer {
  if (typeof config !== "object" || config === null) throw configError("must be an object");
  // round-trip through the strict decoder so the encoder and the agent agree on every rule
  const draft = encodeCbor({ v: 1, ...(config as Record<string, never>) });
  const resolved = resolve(decodeCbor(draft) as CborMap);
  const out = encodeCbor(resolved as unknown as Record<string, never>);
  if (out.length > CONFIG_MAX) throw configError(`encoded size ${out.length} exceeds ${CONFIG_MAX} bytes`);
  return out;
}

/** Decodes and validates `/sm/config.cbor` bytes (defaults filled in). */
export function decodeBootConfig(bytes: Buffer): ResolvedBootConfig {
  if (bytes.length > CONFIG_MAX) throw configError(`${bytes.length} bytes exceeds ${CONFIG_MAX}`);
  let v: unknown;
  try {
    v = decodeCbor(bytes);
  } catch (e) {
    throw new AgentError("SM_AGENT_INVALID_ARGS", `boot config: ${(e as Error).message}`, { cause: e });
  }
  if (!isMap(v)) throw configError(`must be a map, got ${kind(v)}`);
  return resolve(v);
}
