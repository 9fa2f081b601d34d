/**
 * The runtime: everything core needs from the lower packages, behind one object so the Image/Pool
 * logic can be unit-tested with test doubles. The default implementation (runtime.ts) uses the real
 * @supermachine/* packages.
 */
import type { LayerInput } from "@supermachine/rootfs";
import type { OciImageConfigLike } from "./bootconfig";
import type { AgentPort, BackendPort, LiveVmPort } from "./ports";
import type { ResolvedBuildOptions } from "./validate";

export interface ResolvedImage {
  /** Platform manifest digest (what the fingerprint uses). */
  digest: string;
  /** Normalised reference. */
  reference: string;
  config: OciImageConfigLike;
  /** Layer access; pulls missing blobs if needed. */
  layers(): Promise<LayerInput[]>;
}

export interface KernelInfo {
  release: string;
  dir: string;
  modulesDir: string;
}

export interface Runtime {
  resolveImage(opts: ResolvedBuildOptions): Promise<ResolvedImage>;
  kernel(kernelDir: string | undefined, arch: "x86_64" | "aarch64"): KernelInfo;
  agentBinary(arch: "x86_64" | "aarch64"): Promise<{ path: string; sha256: string }>;
  buildRootfs(o: {
    layers: LayerInput[];
    extraFiles: { hostPath: string; guestPath: string }[];
    out: string;
    onProgress?: (bytesDone: number) => void;
  }): Promise<void>;
  buildInitramfs(o: {
    agentPath: string;
    kernel: KernelInfo;
    network: boolean;
    /** Include the FUSE module (live host shares). */
    mounts: boolean;
    config: Buffer;
    out: string;
  }): Promise<void>;
  backend(): Promise<BackendPort>;
  /** Open the agent stream of a live VM and complete the hello handshake. */
  connectAgent(vm: LiveVmPort, timeoutMs: number): Promise<AgentPort>;
}

let current: Runtime | undefined;
let factory: (() => Runtime) | undefined;

/** Installed by index.ts (the real runtime) — kept indirect so tests can swap it. */
export function setRuntimeFactory(f: () => Runtime): void {
  factory = f;
}

/** For tests: replace the runtime (undefined = back to the default). */
export function setRuntime(rt: Runtime | undefined): void {
  current = rt;
}

export function getRuntime(): Runtime {
  if (current) return current;
  if (!factory) throw new Error("@supermachine/core: no runtime installed");
  current = factory();
  return current;
}
