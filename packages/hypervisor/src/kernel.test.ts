import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  compareVersions,
  listCachedBundles,
  pruneKernelCache,
  readBundleJson,
  resolveKernelBundle,
} from "./kernel";

const tmp = mkdtempSync(join(tmpdir(), "sm-kernel-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function makeBundle(
  root: string,
  dirName: string,
  release: string,
  arch: string,
  debVersion: string,
): string {
  const dir = join(root, "kernels", dirName);
  mkdirSync(join(dir, "modules"), { recursive: true });
  writeFileSync(
    join(dir, "bundle.json"),
    JSON.stringify({ release, arch, package: `linux-image-${release}`, debVersion, kernel: "vmlinuz" }),
  );
  writeFileSync(join(dir, "vmlinuz"), "kernel");
  return dir;
}

describe("kernel bundles", () => {
  const cache = join(tmp, "cache");
  const older = makeBundle(
    cache,
    "6.1.0-40-cloud-amd64-x86_64",
    "6.1.0-40-cloud-amd64",
    "x86_64",
    "6.1.150-1",
  );
  const newer = makeBundle(
    cache,
    "6.1.0-56-cloud-amd64-x86_64",
    "6.1.0-56-cloud-amd64",
    "x86_64",
    "6.1.192-2",
  );
  makeBundle(cache, "6.1.0-56-cloud-arm64-aarch64", "6.1.0-56-cloud-arm64", "aarch64", "6.1.192-2");

  it("takes the newest cached bundle for the arch", () => {
    const b = resolveKernelBundle({ arch: "x86_64", cacheDir: cache, env: {} });
    expect(b.dir).toBe(newer);
    expect(b.modulesDir).toBe(join(newer, "modules"));
    expect(resolveKernelBundle({ arch: "aarch64", cacheDir: cache, env: {} }).release).toBe(
      "6.1.0-56-cloud-arm64",
    );
  });

  it("SUPERMACHINE_KERNEL_DIR wins over the cache; an explicit path wins over both", () => {
    expect(
      resolveKernelBundle({ arch: "x86_64", cacheDir: cache, env: { SUPERMACHINE_KERNEL_DIR: older } }).dir,
    ).toBe(older);
    expect(
      resolveKernelBundle({
        arch: "x86_64",
        cacheDir: cache,
        env: { SUPERMACHINE_KERNEL_DIR: older },
        path: join(newer, "vmlinuz"),
      }).kernelPath,
    ).toBe(join(newer, "vmlinuz"));
  });

  it("says how to provision when nothing is found", () => {
    expect(() => resolveKernelBundle({ arch: "x86_64", cacheDir: join(tmp, "empty"), env: {} })).toThrow(
      expect.objectContaining({
        code: "SM_KERNEL_NOT_FOUND",
        message: expect.stringContaining("npx supermachine setup"),
      }),
    );
    expect(() =>
      resolveKernelBundle({ arch: "x86_64", env: { SUPERMACHINE_KERNEL_DIR: join(tmp, "nope") } }),
    ).toThrow(/SUPERMACHINE_KERNEL_DIR/);
  });

  it("reads a bundle.json holding several JSON lines (takes the valid record for the arch)", () => {
    const d = join(tmp, "multi");
    mkdirSync(d);
    writeFileSync(
      join(d, "bundle.json"),
      '{"release":"6.1.0-56-cloud-amd64","arch":"x86_64","kernel":"vmlinuz"}\n{"release":"6.1.0-56-cloud-amd64","arch":"","package":"linux-image-"}\n',
    );
    expect(readBundleJson(d, "x86_64")?.release).toBe("6.1.0-56-cloud-amd64");
    expect(readBundleJson(d, "aarch64")).toBeUndefined();
  });

  it("keeps the 2 newest bundles per arch and warns before evicting", () => {
    const c2 = join(tmp, "cache2");
    const a = makeBundle(c2, "a", "6.1.0-10-cloud-amd64", "x86_64", "1");
    makeBundle(c2, "b", "6.1.0-20-cloud-amd64", "x86_64", "1");
    makeBundle(c2, "c", "6.1.0-30-cloud-amd64", "x86_64", "1");
    const other = makeBundle(c2, "d", "6.1.0-5-cloud-arm64", "aarch64", "1");
    utimesSync(a, new Date(), new Date());
    const events: string[] = [];
    const evicted = pruneKernelCache({ arch: "x86_64", cacheDir: c2, warn: (m) => events.push(`warn:${m}`) });
    expect(evicted).toEqual([a]);
    expect(events[0]).toContain("6.1.0-10-cloud-amd64");
    expect(listCachedBundles("x86_64", c2).map((b) => b.release)).toEqual([
      "6.1.0-30-cloud-amd64",
      "6.1.0-20-cloud-amd64",
    ]);
    expect(listCachedBundles("aarch64", c2).map((b) => b.dir)).toEqual([other]);
  });

  it("compares versions numerically", () => {
    expect(compareVersions("6.1.0-9", "6.1.0-10")).toBeLessThan(0);
    expect(compareVersions("6.1.192-2", "6.1.150-1")).toBeGreaterThan(0);
  });
});
