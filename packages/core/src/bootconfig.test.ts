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

describe("boot config vs the agent-protocol reference decoder", () => {
  it("decodes with @supermachine/agent-protocol's strict decoder to the same values", async () => {
    const ap = await import("@supermachine/agent-protocol");
    const c = buildBootConfig({
      hostname: "sm-test",
      imageConfig: {
        Entrypoint: ["/bin/sh", "-c"],
        Cmd: ["httpd -f"],
        Env: ["PATH=/bin"],
        User: "1000:1000",
      },
      cmd: undefined,
      env: { A: "b" },
      tmpfsMib: 64,
      guestPort: 8080,
      listenerRequired: true,
      volumes: [{ guestPath: "/data", format: false }],
      network: "nat",
    });
    const decoded = ap.decodeBootConfig(encodeBootConfig(c)) as unknown as Record<string, unknown>;
    expect(decoded).toMatchObject({
      hostname: "sm-test",
      tmpfsMib: 64,
      startWorkload: "boot",
      guestPort: 8080,
      listenerRequired: true,
      workload: {
        argv: ["/bin/sh", "-c", "httpd -f"],
        env: ["PATH=/bin", "A=b"],
        cwd: "/",
        user: "1000:1000",
      },
      volumes: [{ device: "/dev/vdb", path: "/data", format: false }],
      network: { ip: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" },
    });
  });
});
