import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildInitramfs } from "./initramfs";
import { realKernelModulesDir, rmrf, tempDir } from "./test-util";

let dir: string;
let agent: string;
const config = new Uint8Array([0xa1, 0x61, 0x76, 0x01]); // {"v": 1}
beforeAll(async () => {
  dir = await tempDir();
  agent = join(dir, "sm-agent");
  await writeFile(agent, Buffer.from("\x7fELF fake agent binary"));
});
afterAll(async () => {
  await rmrf(dir);
});

function cpioList(file: string, gz: boolean): string[] {
  const raw = execFileSync("sh", ["-c", `${gz ? "gzip -dc" : "cat"} "$0" | cpio -it --quiet`, file], {
    encoding: "utf8",
  });
  return raw.split("\n").filter(Boolean);
}

function cpioExtract(file: string, into: string): void {
  execFileSync("sh", [
    "-c",
    `mkdir -p "$1" && cd "$1" && gzip -dc "$0" | cpio -idm --quiet --no-absolute-filenames`,
    file,
    into,
  ]);
}

describe("buildInitramfs with a synthetic modules dir (modules.dep, compressed modules)", () => {
  let mods: string;
  beforeAll(async () => {
    mods = join(dir, "modules");
    await mkdir(join(mods, "kernel/a"), { recursive: true });
    await writeFile(join(mods, "kernel/a/base.ko"), "BASE");
    await writeFile(join(mods, "kernel/a/mid.ko.gz"), gzipSync("MID"));
    execFileSync("sh", ["-c", `printf TOP | zstd -q -o "$0"`, join(mods, "kernel/a/top-mod.ko.zst")]);
    await writeFile(join(mods, "kernel/a/other.ko"), "OTHER");
    await writeFile(
      join(mods, "modules.dep"),
      [
        "kernel/a/top-mod.ko.zst: kernel/a/mid.ko.gz kernel/a/base.ko",
        "kernel/a/mid.ko.gz: kernel/a/base.ko",
        "kernel/a/base.ko:",
        "kernel/a/other.ko: kernel/a/base.ko",
        "",
      ].join("\n"),
    );
    await writeFile(join(mods, "modules.builtin"), "kernel/fs/ext4/ext4.ko\n");
  });

  it("resolves dependencies first, decompresses, writes the brief's layout; cpio -it agrees", async () => {
    const out = join(dir, "initrd.cpio.gz");
    const r = await buildInitramfs({
      init: agent,
      modulesDir: mods,
      modules: ["top_mod", "ext4", "other"],
      config,
      out,
    });
    expect(r.modules).toEqual(["base", "mid", "top_mod", "other"]);
    expect(cpioList(out, true)).toEqual([
      "dev",
      "dev/console",
      "init",
      "newroot",
      "proc",
      "sm",
      "sm/config.cbor",
      "sm/modules",
      "sm/modules/base.ko",
      "sm/modules/mid.ko",
      "sm/modules/top_mod.ko",
      "sm/modules/other.ko",
      "sm/modules.order",
      "sys",
    ]);
    const x = join(dir, "x1");
    cpioExtract(out, x);
    expect(await readFile(join(x, "sm/modules.order"), "utf8")).toBe(
      "base.ko\nmid.ko\ntop_mod.ko\nother.ko\n",
    );
    expect(await readFile(join(x, "sm/modules/mid.ko"), "utf8")).toBe("MID");
    expect(await readFile(join(x, "sm/modules/top_mod.ko"), "utf8")).toBe("TOP");
    expect(new Uint8Array(await readFile(join(x, "sm/config.cbor")))).toEqual(config);
    expect(await readFile(join(x, "init"), "utf8")).toBe("\x7fELF fake agent binary");
    const ls = execFileSync("sh", ["-c", `gzip -dc "$0" | cpio -itv --quiet`, out], { encoding: "utf8" });
    expect(ls).toMatch(/^-rwxr-xr-x .* init$/m);
    expect(ls).toMatch(/^crw------- .* dev\/console$/m);
  });

  it("is deterministic and can skip gzip", async () => {
    const a = await buildInitramfs({
      init: agent,
      modulesDir: mods,
      modules: ["mid"],
      config,
      out: join(dir, "a.cpio"),
      gzip: false,
    });
    const b = await buildInitramfs({
      init: agent,
      modulesDir: mods,
      modules: ["mid"],
      config,
      out: join(dir, "b.cpio"),
      gzip: false,
    });
    expect(a.sha256).toBe(b.sha256);
    expect(cpioList(join(dir, "a.cpio"), false)).toContain("sm/modules/mid.ko");
  });

  it("missing modules are SM_MODULE_NOT_FOUND, bad options SM_ROOTFS_CONFIG, nothing is left behind", async () => {
    const out = join(dir, "never.cpio.gz");
    await expect(
      buildInitramfs({ init: agent, modulesDir: mods, modules: ["nope"], config, out }),
    ).rejects.toMatchObject({
      code: "SM_MODULE_NOT_FOUND",
      message: expect.stringContaining("nope"),
    });
    await expect(buildInitramfs({ init: join(dir, "missing-agent"), config, out })).rejects.toMatchObject({
      code: "SM_ROOTFS_CONFIG",
    });
    expect(existsSync(out)).toBe(false);
  });
});

// A real kernel bundle provisioned by scripts/setup (module dependencies cross-checked with kmod's modinfo).
const realModules = realKernelModulesDir();
const hasModinfo = spawnSync("modinfo", ["--version"]).status === 0;
describe.skipIf(!realModules || !hasModinfo)(
  `buildInitramfs with the real kernel bundle${!realModules ? " (skipped: no kernel bundle; run npm run setup)" : !hasModinfo ? " (skipped: no modinfo)" : ""}`,
  () => {
    it("orders the guest's modules so that every dependency (per kmod's modinfo) loads first", async () => {
      const modulesDir = realModules as string;
      const out = join(dir, "real.cpio.gz");
      const wanted = ["virtio_mmio", "virtio_blk", "virtio_console", "virtio_rng", "squashfs", "overlay"];
      const r = await buildInitramfs({ init: agent, modulesDir, modules: wanted, config, out });
      for (const w of wanted) expect(r.modules).toContain(w);
      expect(r.modules.indexOf("virtio_ring")).toBeLessThan(r.modules.indexOf("virtio_mmio"));
      const x = join(dir, "x-real");
      cpioExtract(out, x);
      const order = (await readFile(join(x, "sm/modules.order"), "utf8")).trim().split("\n");
      expect(order).toEqual(r.modules.map((m) => `${m}.ko`));
      for (const [i, file] of order.entries()) {
        const deps = execFileSync("modinfo", ["-F", "depends", join(x, "sm/modules", file)], {
          encoding: "utf8",
        }).trim();
        for (const d of deps ? deps.split(",") : [])
          expect(order.indexOf(`${d.replace(/-/g, "_")}.ko`), `${d} before ${file}`).toBeLessThan(i);
        expect(
          execFileSync("modinfo", ["-F", "vermagic", join(x, "sm/modules", file)], { encoding: "utf8" }),
        ).toMatch(/^\d+\.\d+/);
      }
    });
  },
);
