import { decode, Encoder } from "cbor-x";
import { describe, expect, it } from "vitest";
import {
  type BootConfigInput,
  buildBootConfig,
  DEFAULT_PATH,
  encodeBootConfig,
  hostnameFor,
  mergeEnv,
  type OciImageConfigLike,
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

describe("boot config bytes: agent-protocol's encoder vs the cbor-x encoder core used before", () => {
  // The encoder core used until the boot config moved to @supermachine/agent-protocol, kept here as
  // a frozen oracle: the bytes of /sm/config.cbor must not change with the move.
  const cborx = new Encoder({
    useRecords: false,
    mapsAsObjects: true,
    variableMapSize: true,
    tagUint8Array: false,
  });
  const base = {
    hostname: "sm",
    imageConfig: { Cmd: ["/bin/sh"] } as OciImageConfigLike,
    cmd: undefined as string[] | undefined,
    env: {} as Record<string, string>,
    tmpfsMib: 0,
    guestPort: 0,
    listenerRequired: false,
    volumes: [] as { guestPath: string; format: boolean }[],
    network: "none" as "none" | "nat",
  };
  const long = (n: number) => "x".repeat(n);
  const cases: Record<string, BootConfigInput> = {
    minimal: base,
    "no workload": { ...base, imageConfig: {} },
    "full image config, nat, volumes": {
      ...base,
      hostname: hostnameFor("Some_Image-Name.v2"),
      imageConfig: {
        Entrypoint: ["/docker-entrypoint.sh"],
        Cmd: ["nginx", "-g", "daemon off;"],
        Env: ["PATH=/usr/local/bin:/usr/bin:/bin", "NGINX_VERSION=1.27.0", "EMPTY="],
        WorkingDir: "/usr/share/nginx/html",
        User: "101:101",
      },
      env: { A: "b", UNICODE: "grüße ✓ 🚀" },
      tmpfsMib: 64,
      guestPort: 8080,
      listenerRequired: true,
      volumes: [
        { guestPath: "/data", format: false },
        { guestPath: "/var/lib/db", format: true },
        { guestPath: "/é", format: false },
      ],
      network: "nat",
    },
    "cmd override": { ...base, imageConfig: { Entrypoint: ["/e"], Cmd: ["x"] }, cmd: ["/bin/echo", "hi"] },
    // integer and string header sizes at their boundaries (1-, 2-, 3-, 5-byte headers)
    "integer boundaries": { ...base, tmpfsMib: 23, guestPort: 24 },
    "integer boundaries 2": { ...base, tmpfsMib: 255, guestPort: 256 },
    "integer boundaries 3": { ...base, tmpfsMib: 65535, guestPort: 65535 },
    "integer boundaries 4": { ...base, tmpfsMib: 65536, guestPort: 1 },
    "string lengths": {
      ...base,
      hostname: long(23),
      imageConfig: { Cmd: [long(24), long(255), long(256), long(65535), long(65536), "", "ü".repeat(20)] },
      env: { K: long(100_000) },
    },
    "many entries": {
      ...base,
      imageConfig: { Cmd: Array.from({ length: 300 }, (_, i) => `arg${i}`) },
      env: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`V${i}`, `${i}`])),
      volumes: Array.from({ length: 16 }, (_, i) => ({ guestPath: `/v${i}`, format: i % 2 === 0 })),
    },
  };
  for (const [name, input] of Object.entries(cases)) {
    it(name, async () => {
      const ap = await import("@supermachine/agent-protocol");
      const c = buildBootConfig(input);
      const expected = Buffer.from(cborx.encode(c));
      expect(ap.encodeBootConfig(c).equals(expected)).toBe(true);
      expect(encodeBootConfig(c).equals(expected)).toBe(true);
    });
  }
});
