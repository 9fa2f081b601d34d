import { describe, expect, it } from "vitest";
import * as api from "./index";

describe("@supermachine/hypervisor exports", () => {
  it("exposes exactly the documented runtime API", () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        "BACKEND_CONTRACT_VERSION",
        "BASE_GUEST_MODULES",
        "HypervisorError",
        "MANIFEST_FILE",
        "MEMORY_FILE",
        "MIGRATION_TIMEOUT_MS",
        "NET_GUEST_MODULES",
        "PACKAGE_NAME",
        "QMP_COMMAND_TIMEOUT_MS",
        "QmpClient",
        "SNAPSHOT_FORMAT_VERSION",
        "STATE_FILE",
        "STOP_GUEST_SHUTDOWN_TIMEOUT_MS",
        "STOP_QMP_QUIT_TIMEOUT_MS",
        "STOP_SIGKILL_TIMEOUT_MS",
        "STOP_SIGTERM_TIMEOUT_MS",
        "VSOCK_GUEST_MODULES",
        "baseCmdline",
        "buildQemuArgv",
        "bzImageToVmlinux",
        "cacheRoot",
        "cachedProbe",
        "createQemuBackend",
        "defaultRuntimeRoot",
        "devicesFor",
        "ensureVmlinux",
        "findExecutable",
        "findPvhEntry",
        "hostArch",
        "isHypervisorError",
        "isPvmHost",
        "kvmPrecheck",
        "listCachedBundles",
        "lz4DecodeBlock",
        "lz4DecodeLegacy",
        "markExitCleanupListener",
        "onlyExitCleanupListeners",
        "parseBzImage",
        "probeAccelBoot",
        "pruneKernelCache",
        "qemuEscape",
        "readBundleJson",
        "readSnapshotManifest",
        "resolveKernelBundle",
        "sweepStaleRuntimeDirs",
        "validateVmConfig",
      ].sort(),
    );
    expect(api.BACKEND_CONTRACT_VERSION).toBe(1);
  });
});
