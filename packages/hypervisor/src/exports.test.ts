import { describe, expect, it } from "vitest";
import * as api from "./index";

describe("@supermachine/hypervisor exports", () => {
  it("exposes exactly the documented runtime API", () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        "HYPERVISOR_ERROR_CODES",
        "BACKEND_CONTRACT_VERSION",
        "BASE_GUEST_MODULES",
        "HypervisorError",
        "NET_GUEST_MODULES",
        "PACKAGE_NAME",
        "QmpClient",
        "SNAPSHOT_FORMAT_VERSION",
        "VSOCK_GUEST_MODULES",
        "cacheRoot",
        "cachedProbe",
        "createQemuBackend",
        "ensureVmlinux",
        "findExecutable",
        "hostArch",
        "isHypervisorError",
        "isPvmHost",
        "listCachedBundles",
        "kvmPrecheck",
        "markExitCleanupListener",
        "onlyExitCleanupListeners",
        "pruneKernelCache",
        "resolveKernelBundle",
      ].sort(),
    );
    expect(api.BACKEND_CONTRACT_VERSION).toBe(1);
  });
});
