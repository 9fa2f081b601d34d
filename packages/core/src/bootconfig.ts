/**
 * Builds the boot configuration the agent reads from `/sm/config.cbor` in the initramfs from the
 * image's OCI config and the build options. The format, its types and its encoder live in
 * @supermachine/agent-protocol (SPEC.md, "Boot configuration"); this file only decides the values.
 */
import type { BootVolume, ResolvedBootConfig } from "@supermachine/agent-protocol";

export { encodeBootConfig } from "@supermachine/agent-protocol";
/** The boot configuration with every field set, as core builds it. */
export type BootConfig = ResolvedBootConfig;
export type { BootVolume };

export interface OciImageConfigLike {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Merge `extra` over an OCI `Env` list (KEY=VALUE strings), keeping the image's order. */
export function mergeEnv(
  imageEnv: readonly string[] | null | undefined,
  extra: Record<string, string>,
): string[] {
  const order: string[] = [];
  const values = new Map<string, string>();
  for (const kv of imageEnv ?? []) {
    const eq = kv.indexOf("=");
    const k = eq >= 0 ? kv.slice(0, eq) : kv;
    const v = eq >= 0 ? kv.slice(eq + 1) : "";
    if (!values.has(k)) order.push(k);
    values.set(k, v);
  }
  if (!values.has("PATH")) {
    order.unshift("PATH");
    values.set("PATH", DEFAULT_PATH);
  }
  for (const [k, v] of Object.entries(extra)) {
    if (!values.has(k)) order.push(k);
    values.set(k, v);
  }
  return order.map((k) => `${k}=${values.get(k)}`);
}

/** Workload argv: `cmd` override, else ENTRYPOINT + CMD. null when the image defines neither. */
export function workloadArgv(config: OciImageConfigLike, cmd: string[] | undefined): string[] | null {
  if (cmd && cmd.length > 0) return [...cmd];
  const argv = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  return argv.length > 0 ? argv : null;
}

export interface BootConfigInput {
  hostname: string;
  imageConfig: OciImageConfigLike;
  cmd: string[] | undefined;
  env: Record<string, string>;
  tmpfsMib: number;
  guestPort: number;
  listenerRequired: boolean;
  volumes: { guestPath: string; format: boolean }[];
  network: "none" | "nat";
}

export function buildBootConfig(input: BootConfigInput): BootConfig {
  const argv = workloadArgv(input.imageConfig, input.cmd);
  return {
    v: 1,
    hostname: input.hostname,
    rootDevice: "/dev/vda",
    tmpfsMib: input.tmpfsMib,
    workload:
      argv === null
        ? null
        : {
            argv,
            env: mergeEnv(input.imageConfig.Env, input.env),
            cwd: input.imageConfig.WorkingDir || "/",
            user: input.imageConfig.User || "0",
          },
    // Default: the snapshot is taken before the workload starts; every restore starts it after
    // `resume`. With listenerRequired the workload runs at boot and the bake waits for `listening`.
    startWorkload: argv === null ? "never" : input.listenerRequired ? "boot" : "resume",
    guestPort: input.guestPort,
    listenerRequired: input.listenerRequired,
    // Volumes are the virtio-blk devices after the rootfs: vdb, vdc, ...
    volumes: input.volumes.map((v, i) => ({
      device: `/dev/vd${String.fromCharCode("b".charCodeAt(0) + i)}`,
      path: v.guestPath,
      format: v.format,
    })),
    network: input.network === "nat" ? { ip: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" } : null,
  };
}

/** A hostname from a snapshot name: lowercase letters, digits, dashes; ≤ 63 chars. */
export function hostnameFor(name: string): string {
  const h = name
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63);
  return h || "supermachine";
}
