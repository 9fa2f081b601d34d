/**
 * Volumes with the original's semantics on real VMs: raw block devices after the root disk, attached in
 * the bake VM; the guest formats and mounts them in the warmup; what the warmup wrote is in the host file
 * and visible on every VM; guest mounts in place at the capture are remounted; no stale filesystem or
 * block-cache state of a volume rides in the snapshot; sharing rules.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool, type Vm } from "../../packages/core/src/index";
import { fixtures } from "../../scripts/lib/fixtures.mjs";
import { type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let shared: string;
let dir: string;
const pools: Pool[] = [];

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
  dir = await mkdtemp(join(tmpdir(), "sm-e2e-vol-"));
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.shutdown()));
  await rm(dir, { recursive: true, force: true });
});

async function sh(vm: Vm | { exec: Vm["exec"] }, script: string): Promise<string> {
  const r = await vm.exec({ argv: ["sh", "-c", script] });
  if (r.exitCode !== 0) throw new Error(`${script}: exit ${r.exitCode}: ${r.stderr}`);
  return r.stdout.toString();
}

describe("volumes on real VMs", () => {
  it("warmup formats and writes raw /dev/vdb and /dev/vdc; the host files hold it; every VM sees it and the last VM's writes", async () => {
    const a = join(dir, "a.img");
    const b = join(dir, "b.img");
    const image = await Image.build({
      ref: refs.busybox,
      snapshotsDir: shared,
      name: "e2e-volumes-raw",
      volumes: [
        { hostPath: a, guestPath: "/data", sizeMib: 32 },
        { hostPath: b, guestPath: "/cache", sizeMib: 16 },
      ],
      warmup: async (vm) => {
        // the root disk is vda; volumes follow in declaration order
        expect(await sh(vm, "cat /sys/block/vdb/size /sys/block/vdc/size")).toBe(
          `${32 * 2048}\n${16 * 2048}\n`,
        );
        // /data: formatted, written and unmounted by the warmup (example 07's pattern)
        await sh(
          vm,
          "mke2fs /dev/vdb >/dev/null 2>&1 && mkdir -p /data && mount /dev/vdb /data && echo warmup-wrote-this > /data/x && umount /data",
        );
        // /cache: left mounted at the end of the warmup
        await sh(
          vm,
          "mke2fs /dev/vdc >/dev/null 2>&1 && mkdir -p /cache && mount /dev/vdc /cache && echo warm > /cache/y",
        );
      },
    });
    // The host files were created sparse and hold what the warmup wrote.
    for (const [f, mib] of [
      [a, 32],
      [b, 16],
    ] as const) {
      const st = await stat(f);
      expect(st.size).toBe(mib * 1024 * 1024);
      expect(st.blocks * 512).toBeLessThan(st.size);
    }
    expect((await readFile(a)).includes("warmup-wrote-this\n")).toBe(true);
    expect((await readFile(b)).includes("warm\n")).toBe(true);
    const meta = JSON.parse(await readFile(join(image.snapshotPath, "metadata.json"), "utf8"));
    expect(meta.volumeMounts).toEqual([
      { source: "/dev/vdc", target: "/cache", fstype: expect.any(String), readOnly: false },
    ]);

    await expect(image.pool({ min: 0, max: 2 })).rejects.toMatchObject({ code: "SM_VOLUME_SHARED" });
    const pool = await image.pool({ min: 0, max: 1 });
    pools.push(pool);
    // 1st VM (the bake's own, handed off): /cache is mounted again, /data is the guest's to mount.
    let vm = await pool.acquire();
    expect(await sh(vm, "cat /cache/y")).toBe("warm\n");
    expect(await sh(vm, "mount /dev/vdb /data && cat /data/x && echo v2 > /data/x && umount /data")).toBe(
      "warmup-wrote-this\n",
    );
    await sh(vm, "echo cache-v2 > /cache/y");
    await vm.release();
    // Every later VM is restored from the snapshot: it must read the file's current contents, not the
    // filesystem or block cache of the bake time.
    for (let i = 2; i <= 3; i++) {
      vm = await pool.acquire();
      expect(await sh(vm, "cat /cache/y")).toBe(i === 2 ? "cache-v2\n" : "cache-v3\n");
      expect(await sh(vm, "mount /dev/vdb /data && cat /data/x && umount /data")).toBe(
        i === 2 ? "v2\n" : "v3\n",
      );
      await sh(
        vm,
        `echo cache-v${i + 1} > /cache/y && mount /dev/vdb /data && echo v${i + 1} > /data/x && umount /data`,
      );
      await vm.release();
    }
    // A second pool on the same writable volume file in this process is refused while the first lives.
    await expect(image.pool({ min: 0, max: 1 })).rejects.toMatchObject({ code: "SM_VOLUME_SHARED" });
    // Another VM that would open the file while a VM holds it (here: a bake of another image, like
    // another process would) is refused by QEMU's lock, reported as SM_VOLUME_SHARED.
    vm = await pool.acquire();
    await expect(
      Image.build({
        ref: refs.busybox,
        snapshotsDir: shared,
        name: "e2e-volumes-locked",
        volumes: [{ hostPath: a, guestPath: "/data", sizeMib: 32 }],
      }),
    ).rejects.toMatchObject({ code: "SM_VOLUME_SHARED" });
    await vm.release();
    await pool.shutdown();

    // Read-only sharing: same file, attached read-only, mounted by core (mount: true), several VMs.
    const ro = await Image.build({
      ref: refs.busybox,
      snapshotsDir: shared,
      name: "e2e-volumes-ro",
      volumes: [{ hostPath: a, guestPath: "/data", sizeMib: 32, readOnly: true, mount: true }],
    });
    const roPool = await ro.pool({ min: 0, max: 2 });
    pools.push(roPool);
    const [v1, v2] = await Promise.all([roPool.acquire(), roPool.acquire()]);
    for (const v of [v1!, v2!]) {
      expect(await sh(v, "cat /data/x")).toBe("v4\n");
      expect((await v.exec({ argv: ["sh", "-c", "echo no > /data/x"] })).exitCode).not.toBe(0);
    }
    await Promise.all([v1!.release(), v2!.release()]);
    await roPool.shutdown();
  });

  it("the original's example 07 pattern: mkfs.ext4 /dev/vdb + mount in the warmup (debian-python, e2fsprogs); every VM has it mounted", async () => {
    const f = (await fixtures()) as { images: Record<string, { ref: string }> };
    const ref = f.images["debian-python"]!.ref;
    const vol = join(dir, "ex07.img");
    const image = await Image.build({
      ref,
      snapshotsDir: shared,
      name: "e2e-volumes-ex07",
      volumes: [{ hostPath: vol, guestPath: "/workspace", sizeMib: 64 }],
      warmup: async (vm) => {
        await sh(vm, "mkfs.ext4 -q /dev/vdb && mkdir -p /workspace && mount /dev/vdb /workspace");
        await sh(vm, 'cd /workspace && python3 -c \'open("deps.txt", "w").write("installed\\n")\'');
      },
    });
    const pool = await image.pool({ min: 0, max: 1 });
    pools.push(pool);
    for (let i = 0; i < 2; i++) {
      const vm = await pool.acquire();
      expect(
        await sh(vm, "cat /workspace/deps.txt && grep ' /workspace ' /proc/mounts | cut -d' ' -f1,3"),
      ).toBe("installed\n/dev/vdb ext4\n");
      await vm.release();
    }
    await pool.shutdown();
  });

  it('mount: true with format: "ext4" mounts a host-formatted volume at guestPath in the warmup and on every VM', async () => {
    const c = join(dir, "c.img");
    const image = await Image.build({
      ref: refs.busybox,
      snapshotsDir: shared,
      name: "e2e-volumes-auto",
      volumes: [{ hostPath: c, guestPath: "/srv/data", sizeMib: 16, format: "ext4", mount: true }],
      warmup: async (vm) => {
        await sh(vm, "echo from-warmup > /srv/data/w");
      },
    });
    const pool = await image.pool({ min: 0, max: 1 });
    pools.push(pool);
    for (let i = 0; i < 2; i++) {
      const vm = await pool.acquire();
      expect(await sh(vm, "cat /srv/data/w; grep -c ' /srv/data ' /proc/mounts")).toBe("from-warmup\n1\n");
      await vm.release();
    }
    await pool.shutdown();
  });
});
