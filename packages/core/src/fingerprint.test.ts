import { describe, expect, it } from "vitest";
import { canonicalJson, defaultName, type FingerprintInputs, fingerprint } from "./fingerprint";

const base: FingerprintInputs = {
  imageDigest: "sha256:aa",
  cmd: null,
  env: { A: "1", B: "2" },
  memoryMib: 256,
  vcpus: 1,
  guestPort: 80,
  listenerRequired: false,
  extraFiles: [],
  mounts: [],
  volumes: [],
  extraKernelArgs: [],
  warmupTag: null,
  network: "none",
  tmpfsMib: 0,
  kernelRelease: "6.1.0",
  arch: "x86_64",
  agentVersion: "1",
  agentSha256: "ff",
  formatVersion: 1,
};

describe("fingerprint", () => {
  it("is independent of key order", () => {
    expect(canonicalJson({ b: 1, a: [2, { d: 1, c: 2 }] })).toBe('{"a":[2,{"c":2,"d":1}],"b":1}');
    expect(fingerprint({ ...base, env: { B: "2", A: "1" } })).toBe(fingerprint(base));
  });

  it('changes with every fingerprinted input (README "Fingerprint")', () => {
    const fp = fingerprint(base);
    const variants: Partial<FingerprintInputs>[] = [
      { imageDigest: "sha256:bb" },
      { cmd: ["sh"] },
      { env: { A: "1" } },
      { memoryMib: 512 },
      { vcpus: 2 },
      { guestPort: 8080 },
      { listenerRequired: true },
      { extraFiles: [{ guestPath: "/a", sha256: "00", mode: 0o644 }] },
      { mounts: [{ hostPath: "/h", guestTag: "t", symlinks: "opaque" }] },
      { volumes: [{ hostPath: "/v", guestPath: "/d", sizeMib: 10 }] },
      { extraKernelArgs: ["quiet"] },
      { warmupTag: "default" },
      { kernelRelease: "6.2" },
      { agentSha256: "ee" },
      { network: "nat" },
    ];
    const seen = new Set([fp]);
    for (const v of variants) {
      const other = fingerprint({ ...base, ...v });
      expect(seen.has(other), JSON.stringify(v)).toBe(false);
      seen.add(other);
    }
  });

  it("extraFiles contents, not just paths, count", () => {
    const a = fingerprint({ ...base, extraFiles: [{ guestPath: "/a", sha256: "01", mode: 0o644 }] });
    const b = fingerprint({ ...base, extraFiles: [{ guestPath: "/a", sha256: "02", mode: 0o644 }] });
    expect(a).not.toBe(b);
  });

  it("derives a readable default name", () => {
    expect(defaultName("127.0.0.1:5000/busybox:latest", "abcdef0123456789")).toBe(
      "busybox-latest-abcdef012345",
    );
    expect(defaultName("alpine", "abcdef0123456789")).toBe("alpine-latest-abcdef012345");
    expect(defaultName("img@sha256:00", "abcdef0123456789")).toBe("img-digest-abcdef012345");
  });
});
