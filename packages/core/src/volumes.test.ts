import { execFileSync } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MKE2FS_CANDIDATES, prepareVolume } from "./volumes";

const dir = await mkdtemp(join(tmpdir(), "sm-core-vol-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

const hasMke2fs = MKE2FS_CANDIDATES.some((c) => {
  try {
    execFileSync(c, ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
});

describe("volumes (raw)", () => {
  it("without format: a missing file is created sparse at sizeMib and left blank for the guest to format", async () => {
    const p = join(dir, "raw", "r.img");
    const v = await prepareVolume({ hostPath: p, guestPath: "/data", sizeMib: 16 });
    expect(v.formatted).toBe(false);
    const st = await stat(p);
    expect(st.size).toBe(16 * 1024 * 1024);
    expect(st.blocks).toBe(0);
    // An existing file keeps its contents (and size).
    await writeFile(p, "guest data");
    expect((await prepareVolume({ hostPath: p, guestPath: "/data", sizeMib: 16 })).formatted).toBe(false);
    expect((await stat(p)).size).toBe(10);
  });
});

describe.skipIf(!hasMke2fs)("volumes (host mke2fs)", () => {
  it("creates a sparse file and formats it ext4 with a root-owned root dir", async () => {
    const p = join(dir, "sub", "v.img");
    const v = await prepareVolume({ hostPath: p, guestPath: "/data", sizeMib: 32, format: "ext4" });
    expect(v.formatted).toBe(true);
    const st = await stat(p);
    expect(st.size).toBe(32 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(st.size / 2);
    const info = execFileSync("/sbin/dumpe2fs", ["-h", p], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
    expect(info).toMatch(/Filesystem features:.*extent/);
    // Second use: contents kept, not reformatted.
    expect(
      (await prepareVolume({ hostPath: p, guestPath: "/data", sizeMib: 32, format: "ext4" })).formatted,
    ).toBe(false);
  });

  it("rejects a directory as volume file", async () => {
    await expect(prepareVolume({ hostPath: dir, guestPath: "/d", sizeMib: 8 })).rejects.toMatchObject({
      code: "SM_VOLUME_INVALID",
    });
  });

  it("keeps an existing non-blank file as it is", async () => {
    const p = join(dir, "used.img");
    await writeFile(p, Buffer.concat([Buffer.from("not blank"), Buffer.alloc(1024 * 1024)]));
    const v = await prepareVolume({ hostPath: p, guestPath: "/d", sizeMib: 8 });
    expect(v.formatted).toBe(false);
    expect((await stat(p)).size).toBe(1024 * 1024 + 9);
  });
});
