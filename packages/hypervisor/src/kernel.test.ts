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
  resolveModules,
} from "./kernel";

const tmp = mkdtempSync(join(tmpdir(), "sm-kernel-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fakeKo(dir: string, rel: string, depends: string[]): void {
  const p = join(dir, rel);
  mkdirSync(join(p, ".."), { recursive: true });
  const name = rel.split("/").pop()?.replace(/\.ko$/, "").replace(/-/g, "_");
  writeFileSync(
    p,
    Buffer.concat([
      Buffer.from("\x7fELF....junk\0"),
      Buffer.from(`name=${name}\0depends=${depends.join(",")}\0vermagic=6.1\0`),
    ]),
  );
}

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

describe("kernel modules in dependency order", () => {
  const mods = join(tmp, "mods");
  fakeKo(mods, "kernel/drivers/virtio/virtio_ring.ko", []);
  fakeKo(mods, "kernel/drivers/virtio/virtio.ko", []);
  fakeKo(mods, "kernel/drivers/virtio/virtio_mmio.ko", ["virtio", "virtio_ring"]);
  fakeKo(mods, "kernel/net/core/failover.ko", []);
  fakeKo(mods, "kernel/drivers/net/net_failover.ko", ["failover"]);
  fakeKo(mods, "kernel/drivers/net/virtio_net.ko", ["virtio_ring", "virtio", "net_failover"]);
  fakeKo(mods, "kernel/drivers/char/hw_random/virtio-rng.ko", ["virtio", "virtio_ring"]);
  writeFileSync(
    join(mods, "modules.order"),
    [
      "kernel/drivers/virtio/virtio_ring.ko",
      "kernel/drivers/virtio/virtio.ko",
      "kernel/drivers/virtio/virtio_mmio.ko",
      "kernel/net/core/failover.ko",
      "kernel/drivers/net/net_failover.ko",
      "kernel/drivers/net/virtio_net.ko",
      "kernel/drivers/char/hw_random/virtio-rng.ko",
    ].join("\n"),
  );
  writeFileSync(join(mods, "modules.builtin"), "kernel/fs/ext4/ext4.ko\n");

  it("puts every dependency before its users, each module once (from .ko modinfo; no modules.dep)", () => {
    const names = resolveModules(mods, ["virtio_net", "virtio_mmio", "virtio-rng", "ext4"]).map(
      (m) => m.name,
    );
    expect(names).toEqual([
      "virtio_ring",
      "virtio",
      "failover",
      "net_failover",
      "virtio_net",
      "virtio_mmio",
      "virtio_rng",
    ]);
  });

  it("prefers modules.dep when present", () => {
    const withDep = join(tmp, "mods-dep");
    fakeKo(withDep, "a/x.ko", []);
    fakeKo(withDep, "a/y.ko", []);
    fakeKo(withDep, "a/z.ko", []);
    writeFileSync(join(withDep, "modules.dep"), "a/z.ko: a/y.ko a/x.ko\na/y.ko: a/x.ko\na/x.ko:\n");
    expect(resolveModules(withDep, ["z"]).map((m) => m.relPath)).toEqual(["a/x.ko", "a/y.ko", "a/z.ko"]);
  });

  it("names the missing module and who needed it", () => {
    fakeKo(mods, "kernel/x/needs_ghost.ko", ["ghost"]);
    writeFileSync(join(mods, "modules.order"), "kernel/x/needs_ghost.ko\n", { flag: "a" });
    const fresh = join(tmp, "mods-ghost");
    fakeKo(fresh, "k/needs_ghost.ko", ["ghost"]);
    writeFileSync(join(fresh, "modules.order"), "k/needs_ghost.ko\n");
    expect(() => resolveModules(fresh, ["needs_ghost"])).toThrow(
      expect.objectContaining({
        code: "SM_KERNEL_NOT_FOUND",
        message: expect.stringContaining("ghost not found"),
      }),
    );
  });

  const real = listCachedBundles("x86_64")[0];
  it.skipIf(!real)("resolves the real cached kernel's virtio_net chain", () => {
    const names = resolveModules((real as { modulesDir: string }).modulesDir, [
      "virtio_mmio",
      "virtio_net",
    ]).map((m) => m.name);
    expect(names.indexOf("virtio")).toBeLessThan(names.indexOf("virtio_mmio"));
    expect(names.indexOf("net_failover")).toBeLessThan(names.indexOf("virtio_net"));
    expect(names.indexOf("failover")).toBeLessThan(names.indexOf("net_failover"));
  });
});

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
        message: expect.stringContaining("npm run setup"),
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
