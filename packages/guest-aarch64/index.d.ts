/** Guest architecture of this bundle. */
export declare const arch: "aarch64";
/** Directory holding manifest.json, sm-agent and kernel/. */
export declare const bundleDir: string;
/** Kernel bundle directory (bundle.json, vmlinuz, modules/): pass as `kernelDir` or SUPERMACHINE_KERNEL_DIR. */
export declare const kernelDir: string;
/** The kernel image as Debian ships it. */
export declare const kernelImage: string;
/** The static guest agent (PID 1 of the guest); SUPERMACHINE_AGENT accepts this path. */
export declare const agentPath: string;
export declare const manifestPath: string;

export interface GuestManifest {
  schema: 1;
  arch: "aarch64";
  kernel: {
    dir: string;
    image: string;
    release: string;
    license: "GPL-2.0-only";
    debian: { binaryPackage: string; version: string; sourcePackage: string; sourceVersion: string };
    /** Where the kernel's corresponding source is. */
    correspondingSource: string;
  };
  /** Module names in load order (dependencies first). */
  modules: string[];
  agent: { file: string; license: string; source: string };
  /** Path relative to bundleDir → sha256 (hex). */
  files: Record<string, string>;
}

/** True when the bundle files are present. */
export declare function isBuilt(): boolean;
export declare function readManifest(): GuestManifest;
