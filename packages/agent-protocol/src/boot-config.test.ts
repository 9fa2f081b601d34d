import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decodeBootConfig, encodeBootConfig } from "./boot-config";
import { decodeCbor } from "./cbor";
import { toMeaning } from "./test-helpers";

interface ConfigVector {
  name: string;
  hex: string;
  valid: boolean;
  meaning?: unknown;
  key?: string;
}
const configVectors = JSON.parse(
  readFileSync(new URL("../test-vectors/config-vectors.json", import.meta.url), "utf8"),
) as ConfigVector[];

describe("boot configuration (/sm/config.cbor)", () => {
  it("fills every default and round-trips", () => {
    const bytes = encodeBootConfig({});
    expect(decodeCbor(bytes)).toEqual({
      v: 1,
      hostname: "supermachine",
      rootDevice: "/dev/vda",
      tmpfsMib: 0,
      workload: null,
      startWorkload: "boot",
      guestPort: 0,
      listenerRequired: false,
      volumes: [],
      network: null,
    });
    expect(decodeBootConfig(bytes).startWorkload).toBe("boot");
  });

  it("encodes a full configuration with the keys of SPEC §12", () => {
    const cfg = decodeBootConfig(
      encodeBootConfig({
        hostname: "sm-1",
        tmpfsMib: 64,
        workload: { argv: ["/bin/sh", "-c", "httpd -f"], env: ["PATH=/bin"], user: "app" },
        startWorkload: "resume",
        guestPort: 80,
        listenerRequired: true,
        volumes: [{ device: "/dev/vdb", path: "/data", format: true }],
        network: { ip: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" },
      }),
    );
    expect(cfg.workload).toEqual({
      argv: ["/bin/sh", "-c", "httpd -f"],
      env: ["PATH=/bin"],
      cwd: "/",
      user: "app",
    });
    expect(cfg.volumes).toEqual([{ device: "/dev/vdb", path: "/data", format: true }]);
    expect(cfg.network?.gateway).toBe("10.0.2.2");
    expect(cfg.guestPort).toBe(80);
  });

  it("rejects invalid values naming the key", () => {
    expect(() => encodeBootConfig({ startWorkload: "later" as never })).toThrowError(/startWorkload/);
    expect(() => encodeBootConfig({ guestPort: 70000 })).toThrowError(/guestPort/);
    expect(() => encodeBootConfig({ workload: { argv: [] } })).toThrowError(/argv/);
    expect(() => encodeBootConfig({ workload: { argv: ["x"], env: ["NOEQUALS"] } })).toThrowError(/K=V/);
    expect(() => decodeBootConfig(Buffer.from("a1617602", "hex"))).toThrowError(/v must be 1/);
    expect(() => decodeBootConfig(Buffer.from("f7", "hex"))).toThrowError(/undefined/);
  });

  describe("shared config vectors (test-vectors/config-vectors.json)", () => {
    for (const v of configVectors) {
      it(`${v.valid ? "accepts" : "rejects"} ${v.name}`, () => {
        const bytes = Buffer.from(v.hex, "hex");
        if (v.valid) {
          expect(toMeaning(decodeBootConfig(bytes))).toEqual(v.meaning);
          // and the encoder reproduces the resolved form
          expect(toMeaning(decodeCbor(encodeBootConfig(decodeBootConfig(bytes))))).toEqual(v.meaning);
        } else {
          let err: Error | null = null;
          try {
            decodeBootConfig(bytes);
          } catch (e) {
            err = e as Error;
          }
          expect(err, v.name).not.toBeNull();
          if (v.key !== "config") expect(err!.message).toContain(v.key);
        }
      });
    }
  });
});
