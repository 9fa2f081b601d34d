import { homedir } from "node:os";
import { join } from "node:path";
import { hostArch as baseHostArch, cacheRoot } from "@supermachine/base";
import {
  defaultRuntimeRoot,
  cacheRoot as hypervisorCacheRoot,
  hostArch as hypervisorHostArch,
} from "@supermachine/hypervisor";
import { defaultStoreDir } from "@supermachine/oci";
import { afterEach, describe, expect, it, vi } from "vitest";
import { cacheRoot as coreCacheRoot, hostArch, runtimeRoot } from "./paths";

// The cache root and the host architecture have their home in @supermachine/base; oci's store, hypervisor
// (kernels, accelerator probe) and core (agent, pulls) all build on that one root.
describe("one cache root", () => {
  for (const [what, xdg] of [
    ["set", "/tmp/xdg-cache"],
    ["unset", undefined],
    ["empty (counts as unset)", ""],
  ] as const) {
    it(`XDG_CACHE_HOME ${what}: base's cache root, and oci's store is <that root>/oci`, () => {
      const env: NodeJS.ProcessEnv = xdg === undefined ? {} : { XDG_CACHE_HOME: xdg };
      const root = xdg ? join(xdg, "supermachine") : join(homedir(), ".cache", "supermachine");
      expect(cacheRoot(env)).toBe(root);
      expect(defaultStoreDir(env)).toBe(join(root, "oci"));
    });
  }
  it("hypervisor and core re-export base's cacheRoot and hostArch", () => {
    expect(hypervisorCacheRoot).toBe(cacheRoot);
    expect(coreCacheRoot).toBe(cacheRoot);
    expect(hypervisorHostArch).toBe(baseHostArch);
    expect(hostArch()).toBe(baseHostArch() ?? "x86_64");
  });
});

describe("runtimeRoot", () => {
  afterEach(() => vi.unstubAllEnvs());
  it("is SUPERMACHINE_RUNTIME_DIR when set, else the hypervisor driver's default", () => {
    vi.stubEnv("SUPERMACHINE_RUNTIME_DIR", "/tmp/sm-rt");
    expect(runtimeRoot()).toBe("/tmp/sm-rt");
    vi.stubEnv("SUPERMACHINE_RUNTIME_DIR", "");
    expect(runtimeRoot()).toBe(defaultRuntimeRoot());
  });
});
