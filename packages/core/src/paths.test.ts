import { homedir } from "node:os";
import { join } from "node:path";
import { cacheRoot } from "@supermachine/hypervisor";
import { defaultStoreDir } from "@supermachine/oci";
import { describe, expect, it } from "vitest";
import { cacheRoot as coreCacheRoot } from "./paths";

// The cache root has its home in @supermachine/hypervisor. @supermachine/oci may not depend on it (the layer
// rule), so it keeps its own default store directory: pinned here to `<cache root>/oci`.
describe("one cache root", () => {
  for (const [what, xdg] of [
    ["set", "/tmp/xdg-cache"],
    ["unset", undefined],
    ["empty (counts as unset)", ""],
  ] as const) {
    it(`XDG_CACHE_HOME ${what}: oci's store is <hypervisor's cache root>/oci, core uses hypervisor's`, () => {
      const env: NodeJS.ProcessEnv = xdg === undefined ? {} : { XDG_CACHE_HOME: xdg };
      const root = xdg ? join(xdg, "supermachine") : join(homedir(), ".cache", "supermachine");
      expect(cacheRoot(env)).toBe(root);
      expect(defaultStoreDir(env)).toBe(join(root, "oci"));
    });
  }
  it("core's cacheRoot is hypervisor's", () => {
    expect(coreCacheRoot).toBe(cacheRoot);
  });
});
