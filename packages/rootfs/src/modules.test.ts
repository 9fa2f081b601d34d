import { execFileSync, spawnSync } from "node:child_process";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modinfoDepends, readModule, resolveModules } from "./modules";
import { fakeModuleElf, realKernelModulesDir, rmrf, tempDir } from "./test-util";

let dir: string;
beforeAll(async () => {
  dir = await tempDir("sm-rootfs-modules-");
});
afterAll(async () => {
  await rmrf(dir);
});

const has = (tool: string) => spawnSync(tool, ["--version"]).status === 0;

/** Writes `rel` (a .ko, .ko.gz, .ko.zst or .ko.xz path) under `root` as a fake module with these depends. */
async function fakeKo(root: string, rel: string, depends: string[]): Promise<string> {
  const p = join(root, rel);
  await mkdir(dirname(p), { recursive: true });
  const name = (rel.split("/").pop() as string).replace(/\.ko.*$/, "").replace(/-/g, "_");
  const elf = fakeModuleElf(name, depends);
  if (rel.endsWith(".ko")) await writeFile(p, elf);
  else if (rel.endsWith(".ko.gz")) await writeFile(p, gzipSync(elf));
  else if (rel.endsWith(".ko.zst")) execFileSync("zstd", ["-q", "-o", p], { input: elf });
  else if (rel.endsWith(".ko.xz")) await writeFile(p, execFileSync("xz", ["-c"], { input: elf }));
  return p;
}

describe("resolveModules from each module's .modinfo (no modules.dep, as a kernel package ships)", () => {
  let mods: string;
  beforeAll(async () => {
    mods = join(dir, "mods");
    await fakeKo(mods, "kernel/drivers/virtio/virtio_ring.ko", []);
    await fakeKo(mods, "kernel/drivers/virtio/virtio.ko", []);
    await fakeKo(mods, "kernel/drivers/virtio/virtio_mmio.ko", ["virtio", "virtio_ring"]);
    await fakeKo(mods, "kernel/net/core/failover.ko", []);
    await fakeKo(mods, "kernel/drivers/net/net_failover.ko", ["failover"]);
    await fakeKo(mods, "kernel/drivers/net/virtio_net.ko", ["virtio_ring", "virtio", "net_failover"]);
    await fakeKo(mods, "kernel/drivers/char/hw_random/virtio-rng.ko", ["virtio", "virtio_ring"]);
    await writeFile(join(mods, "modules.builtin"), "kernel/fs/ext4/ext4.ko\n");
  });

  it("puts every dependency before its users, each module once; built-ins skipped", async () => {
    const r = await resolveModules(mods, ["virtio_net", "virtio_mmio", "virtio-rng", "ext4"]);
    expect(r.map((m) => m.name)).toEqual([
      "virtio_ring",
      "virtio",
      "failover",
      "net_failover",
      "virtio_net",
      "virtio_mmio",
      "virtio_rng",
    ]);
    expect(r.find((m) => m.name === "virtio_rng")?.path).toBe("kernel/drivers/char/hw_random/virtio-rng.ko");
  });

  it("takes names with dashes, as file names or as paths", async () => {
    const r = await resolveModules(mods, [
      "virtio_rng.ko",
      "kernel/drivers/virtio/virtio_mmio.ko",
      "net-failover",
    ]);
    expect(r.map((m) => m.name)).toEqual([
      "virtio",
      "virtio_ring",
      "virtio_rng",
      "virtio_mmio",
      "failover",
      "net_failover",
    ]);
  });

  it.skipIf(!has("modinfo"))("writes test modules kmod's modinfo reads the same way", () => {
    const file = join(mods, "kernel/drivers/net/virtio_net.ko");
    expect(execFileSync("modinfo", ["-F", "depends", file], { encoding: "utf8" }).trim()).toBe(
      "virtio_ring,virtio,net_failover",
    );
  });

  it.skipIf(!has("zstd") || !has("xz"))(
    "reads .modinfo of .ko.gz / .ko.zst / .ko.xz modules, also outside kernel/",
    async () => {
      const cm = join(dir, "compressed");
      await fakeKo(cm, "updates/top.ko.zst", ["mid"]);
      await fakeKo(cm, "kernel/a/mid.ko.gz", ["base-x"]);
      await fakeKo(cm, "extra/base_x.ko.xz", []);
      const r = await resolveModules(cm, ["top"]);
      expect(r).toEqual([
        { name: "base_x", path: "extra/base_x.ko.xz" },
        { name: "mid", path: "kernel/a/mid.ko.gz" },
        { name: "top", path: "updates/top.ko.zst" },
      ]);
    },
  );

  it("reads depends= leniently (empty, spaces, trailing comma) and only from .modinfo", () => {
    expect(modinfoDepends(fakeModuleElf("a", []))).toEqual([]);
    expect(modinfoDepends(fakeModuleElf("a", [" b-c", "d", ""]))).toEqual(["b_c", "d"]);
    // A "depends=" in the bytes counts only inside the ELF's .modinfo section.
    const notElf64 = Buffer.concat([Buffer.from("\x7fELF....junk\0depends=x\0"), Buffer.alloc(64)]);
    expect(() => modinfoDepends(notElf64)).toThrow(/little-endian ELF64/);
    const truncated = fakeModuleElf("a", ["b"]).subarray(0, 100);
    expect(() => modinfoDepends(truncated)).toThrow(/truncated or malformed/);
  });
});

describe("resolveModules with modules.dep", () => {
  it("prefers modules.dep over the modules' own .modinfo", async () => {
    const withDep = join(dir, "mods-dep");
    // The files claim no dependencies: the order below can only come from modules.dep.
    await fakeKo(withDep, "a/x.ko", []);
    await fakeKo(withDep, "a/y.ko", []);
    await fakeKo(withDep, "a/z.ko", []);
    await writeFile(join(withDep, "modules.dep"), "a/z.ko: a/y.ko a/x.ko\na/y.ko: a/x.ko\na/x.ko:\n");
    expect((await resolveModules(withDep, ["z"])).map((m) => m.path)).toEqual(["a/x.ko", "a/y.ko", "a/z.ko"]);
  });
});

describe("resolveModules errors", () => {
  it("names the missing module and who needed it", async () => {
    const fresh = join(dir, "mods-ghost");
    await fakeKo(fresh, "k/needs_ghost.ko", ["ghost"]);
    await expect(resolveModules(fresh, ["needs_ghost"])).rejects.toMatchObject({
      code: "SM_MODULE_NOT_FOUND",
      module: "ghost",
      message: expect.stringContaining(`"ghost" (needed by needs_ghost) is not in ${fresh}`),
    });
    await expect(resolveModules(fresh, ["nope"])).rejects.toMatchObject({
      code: "SM_MODULE_NOT_FOUND",
      module: "nope",
      message: expect.not.stringContaining("needed by"),
    });
  });

  it("reports a dependency cycle with its chain (from .modinfo and from modules.dep)", async () => {
    const cyc = join(dir, "mods-cycle");
    await fakeKo(cyc, "kernel/c.ko", ["a"]);
    await fakeKo(cyc, "kernel/a.ko", ["b"]);
    await fakeKo(cyc, "kernel/b.ko", ["a"]);
    await expect(resolveModules(cyc, ["c"])).rejects.toMatchObject({
      code: "SM_MODULE_INVALID",
      message: expect.stringContaining("dependency cycle in"),
    });
    await expect(resolveModules(cyc, ["c"])).rejects.toThrow(/: c -> a -> b -> a$/);
    await writeFile(join(cyc, "modules.dep"), "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n");
    await expect(resolveModules(cyc, ["b"])).rejects.toThrow(/cycle in .*: b -> a -> b$/);
  });

  it("says which module file is not an ELF module", async () => {
    const bad = join(dir, "mods-bad");
    await mkdir(join(bad, "kernel"), { recursive: true });
    await writeFile(join(bad, "kernel/junk.ko"), "not a module");
    await expect(resolveModules(bad, ["junk"])).rejects.toMatchObject({
      code: "SM_MODULE_INVALID",
      module: "junk",
      message: expect.stringMatching(/kernel\/junk\.ko: not an ELF file/),
    });
  });

  it("rejects a modules dir that is missing or holds no modules", async () => {
    await expect(resolveModules(join(dir, "absent"), ["x"])).rejects.toMatchObject({
      code: "SM_MODULE_NOT_FOUND",
      message: expect.stringContaining("does not exist"),
    });
    const empty = join(dir, "empty");
    await mkdir(empty);
    await expect(resolveModules(empty, ["x"])).rejects.toMatchObject({
      code: "SM_MODULE_NOT_FOUND",
      message: expect.stringContaining("neither modules.dep nor any .ko module file"),
    });
  });
});

const real = realKernelModulesDir();
describe.skipIf(!real)(
  `resolveModules with the real kernel bundle${real ? "" : " (skipped: no kernel bundle; run npm run setup)"}`,
  () => {
    const wanted = ["virtio_mmio", "virtio_net", "virtio_blk", "virtio_console", "squashfs", "overlay"];

    it("resolves the virtio_net chain", async () => {
      const names = (await resolveModules(real as string, wanted)).map((m) => m.name);
      expect(names.indexOf("virtio")).toBeLessThan(names.indexOf("virtio_mmio"));
      expect(names.indexOf("net_failover")).toBeLessThan(names.indexOf("virtio_net"));
      expect(names.indexOf("failover")).toBeLessThan(names.indexOf("net_failover"));
    });

    it("the .modinfo fallback finds the same modules as modules.dep, in a valid load order", async () => {
      const viaDep = await resolveModules(real as string, wanted);
      // The same files without modules.dep: dependencies now come from each real module's ELF .modinfo.
      const copy = join(dir, "real-no-dep");
      for (const m of viaDep) {
        await mkdir(dirname(join(copy, m.path)), { recursive: true });
        await copyFile(join(real as string, m.path), join(copy, m.path));
      }
      await copyFile(join(real as string, "modules.builtin"), join(copy, "modules.builtin"));
      const viaModinfo = await resolveModules(copy, wanted);
      expect(viaModinfo.map((m) => m.name).sort()).toEqual(viaDep.map((m) => m.name).sort());
      const pos = new Map(viaModinfo.map((m, i) => [m.name, i]));
      for (const [i, m] of viaModinfo.entries())
        for (const d of modinfoDepends(await readModule(join(copy, m.path))))
          expect(pos.get(d), `${d} before ${m.name}`).toBeLessThan(i);
    });
  },
);
