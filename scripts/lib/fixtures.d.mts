/** Types for scripts/lib/fixtures.mjs (used by TypeScript tests of every package). */

export type FixtureName = "busybox" | "layers" | "httpd" | "multiarch" | "debian-python" | "node";

export interface FixtureImage {
  /** `127.0.0.1:PORT/<name>:latest` */
  ref: string;
  /** manifest (or, for multiarch, image index) digest the registry serves: `sha256:<hex>` */
  digest: string;
  /** e.g. ["linux/amd64"], multiarch: ["linux/amd64", "linux/arm64"] */
  platforms: string[];
  /** the local OCI image layout directory (tag `latest`) */
  layout: string;
  /** only for `layers`: the tree once all layers are applied (checked against umoci's unpack) */
  expected?: LayersExpected;
  /**
   * only for `node`: what the image's own npm cache (/root/.npm) installs without network; /root/.npmrc
   * sets this `registry` and `offline=true`
   */
  npmCache?: { registry: string; packages: string[] };
}

export interface LayersExpected {
  /** paths (relative to /) that must not exist */
  absent: string[];
  /** regular files: exact content (utf8) and permission bits incl. setuid/setgid/sticky */
  files: Record<string, { content: string; mode: number }>;
  /** directories: permission bits and the exact sorted list of entry names */
  dirs: Record<string, { mode: number; entries: string[] }>;
  /** symlink path → target */
  symlinks: Record<string, string>;
  /** each group of paths shares one inode */
  hardlinks: string[][];
  /** no `.wh.*` marker may survive */
  noWhiteouts: true;
}

export interface Fixtures {
  /** `127.0.0.1:PORT` */
  registry: string;
  images: Record<FixtureName, FixtureImage>;
}

/** `${XDG_CACHE_HOME:-$HOME/.cache}/supermachine` */
export declare const CACHE_DIR: string;
/** Ensures the local test registry runs; plain HTTP on 127.0.0.1. */
export declare function testRegistry(): Promise<{ host: string }>;
/** fixtures.json content, after ensuring every fixture is pushed to the running registry. */
export declare function fixtures(): Promise<Fixtures>;
/** Kernel bundle directory (bundle.json, vmlinuz, modules/) for an arch; throws if not provisioned. */
export declare function kernelBundle(arch?: "x86_64" | "aarch64" | "amd64" | "arm64"): string;
/** `guest-agent/out/<arch>/sm-agent` */
export declare function agentBinary(arch?: "x86_64" | "aarch64"): string;
export declare function hasAgentBinary(arch?: "x86_64" | "aarch64"): boolean;
/** Silence setup progress output (stderr). */
export declare function quietSetup(quiet?: boolean): void;
