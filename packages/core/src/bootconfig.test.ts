import { decode } from "cbor-x";
import { describe, expect, it } from "vitest";
import {
  buildBootConfig,
  DEFAULT_PATH,
  encodeBootConfig,
  hostnameFor,
  mergeEnv,
  workloadArgv,
} from "./bootconfig";

describe("boot config", () => {
  it("workload argv = cmd override, else ENTRYPOINT + CMD", () => {
    expect(workloadArgv({ Entrypoint: ["/e"], Cmd: ["a"] }, undefined)).toEqual(["/e", "a"]);
    expect(workloadArgv({ Entrypoint: ["/e"], Cmd: ["a"] }, ["x"])).toEqual(["x"]);
    expect(workloadArgv({}, undefined)).toBeNull();
  });

  it("merges env over the image's, keeping order, adding PATH when missing", () => {
    expect(mergeEnv(["A=1", "PATH=/bin"], { A: "2", C: "3" })).toEqual(["A=2", "PATH=/bin", "C=3"]);
    expect(mergeEnv([], {})).toEqual([`PATH=${DEFAULT_PATH}`]);
  });

  it("starts the workload on resume by default, at boot with listenerRequired", () => {
    const input = {
      hostname: "h",
      imageConfig: { Cmd: ["httpd"], WorkingDir: "/www", User: "app" },
      cmd: undefined,
      env: {},
      tmpfsMib: 0,
      guestPort: 80,
      listenerRequired: false,
      volumes: [{ guestPath: "/data", format: false }],
      network: "none" as const,
    };
    const c = buildBootConfig(input);
    expect(c.startWorkload).toBe("resume");
    expect(c.workload).toMatchObject({ argv: ["httpd"], cwd: "/www", user: "app" });
    expect(c.volumes).toEqual([{ device: "/dev/vdb", path: "/data", format: false }]);
    expect(c.network).toBeNull();
    expect(buildBootConfig({ ...input, listenerRequired: true }).startWorkload).toBe("boot");
    expect(buildBootConfig({ ...input, imageConfig: {} }).startWorkload).toBe("never");
    expect(buildBootConfig({ ...input, network: "nat" }).network).toEqual({
      ip: "10.0.2.15/24",
      gateway: "10.0.2.2",
      dns: "10.0.2.3",
    });
  });

  it("encodes one definite-length CBOR map with text keys and no floats/tags", () => {
    const c = buildBootConfig({
      hostname: "sm",
      imageConfig: { Cmd: ["/bin/sh"] },
      cmd: undefined,
      env: { X: "1" },
      tmpfsMib: 64,
      guestPort: 80,
      listenerRequired: false,
      volumes: [],
      network: "none",
    });
    const bytes = encodeBootConfig(c);
    expect(bytes[0]! >> 5).toBe(5); // major type 5: map
    expect(bytes[0]! & 0x1f).toBeLessThan(28); // definite length
    expect(decode(bytes)).toEqual(c);
    expect(hostnameFor("Busybox_latest-0123")).toBe("busybox-latest-0123");
  });
});
