/**
 * Build/pool options on real VMs: the image-source override (OCI layout dir), runtime memoryMib/vcpus
 * overrides (restored, no re-bake), network "nat" vs the default "none", extraKernelArgs.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool } from "../../packages/core/src/index";
import { fixtures } from "../../scripts/lib/fixtures.mjs";
import { type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let shared: string;
let busyboxLayout: string;
const pools: Pool[] = [];

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
  busyboxLayout = ((await fixtures()) as { images: Record<string, { layout: string }> }).images.busybox!
    .layout;
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.shutdown()));
});

describe("options on real VMs", () => {
  it("an OCI layout source resolves to the same image as the registry (cache hit, nothing boots)", async () => {
    const fromRegistry = await Image.build({ ref: refs.busybox, snapshotsDir: shared });
    const phases: string[] = [];
    const fromLayout = await Image.build({
      ref: refs.busybox,
      snapshotsDir: shared,
      source: { type: "oci-layout", path: busyboxLayout },
      onProgress: (e) => phases.push(e.phase),
    });
    expect(fromLayout.snapshotPath).toBe(fromRegistry.snapshotPath);
    expect(phases).not.toContain("boot");
    const meta = JSON.parse(readFileSync(`${fromLayout.snapshotPath}/metadata.json`, "utf8"));
    expect(meta.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("a docker-save archive source bakes and runs", async () => {
    const { execFileSync } = await import("node:child_process");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(`${tmpdir()}/sm-core-e2e-archive-`);
    try {
      const tar = `${dir}/busybox.tar`;
      execFileSync("skopeo", [
        "copy",
        "--src-tls-verify=false",
        `docker://${refs.busybox}`,
        `docker-archive:${tar}:busybox:latest`,
      ]);
      const image = await Image.build({
        ref: "busybox:latest",
        snapshotsDir: shared,
        source: { type: "archive", path: tar },
      });
      const pool = await image.pool({ min: 0, max: 1 });
      pools.push(pool);
      const vm = await pool.acquire();
      expect((await vm.exec({ argv: ["busybox", "echo", "from archive"] })).stdout.toString()).toBe(
        "from archive\n",
      );
      await vm.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("pool memoryMib/vcpus overrides restore from the snapshot (warmup state kept) as limits in the guest; above the ceiling → SM_POOL_OVERRIDE", async () => {
    const image = await Image.build({
      ref: refs.busybox,
      snapshotsDir: shared,
      name: "e2e-overrides",
      memoryMib: 192,
      maxMemoryMib: 384,
      vcpus: 1,
      maxVcpus: 2,
      warmup: async (vm) => {
        await vm.exec({ argv: ["sh", "-c", "echo warm > /etc/warmup-marker"] });
      },
    });
    const probe = async (p: Pool) => {
      const vm = await p.acquire();
      const r = await vm.exec({
        argv: [
          "sh",
          "-c",
          "cat /etc/warmup-marker /sys/fs/cgroup/sm-work/memory.max; nproc; grep MemTotal /proc/meminfo",
        ],
      });
      await vm.release();
      const [marker, memMax, nproc, memTotal] = r.stdout.toString().trim().split("\n");
      return {
        marker,
        memMaxMib: Number(memMax) / 2 ** 20,
        nproc: Number(nproc),
        memTotalMib: Number(/(\d+) kB/.exec(memTotal ?? "")?.[1]) / 1024,
      };
    };
    const base = await image.pool({ min: 0, max: 1 });
    pools.push(base);
    const b = await probe(base);
    expect(b).toMatchObject({ marker: "warm", memMaxMib: 192, nproc: 1 });
    expect(b.memTotalMib).toBeGreaterThan(300); // the machine has the 384 MiB ceiling
    await base.shutdown();
    const low = await image.pool({ min: 0, max: 1, memoryMib: 128 });
    pools.push(low);
    expect(await probe(low)).toMatchObject({ marker: "warm", memMaxMib: 128, nproc: 1 });
    await low.shutdown();
    const high = await image.pool({ min: 0, max: 1, memoryMib: 320, vcpus: 2 });
    pools.push(high);
    const h = await probe(high);
    expect(h).toMatchObject({ marker: "warm", nproc: 2 });
    expect(h.memMaxMib).toBeGreaterThan(192); // raised (capped by what the guest really has)
    expect(h.memMaxMib).toBeLessThanOrEqual(320);
    await high.shutdown();
    const err = await image.pool({ memoryMib: 512 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "SM_POOL_OVERRIDE", details: { maxMemoryMib: 384, maxVcpus: 2 } });
    expect((err as Error).message).toContain("384 MiB");
    await expect(image.pool({ vcpus: 3 })).rejects.toMatchObject({ code: "SM_POOL_OVERRIDE" });
  });

  it("workloadSignal signals the image's workload (httpd), not an exec'd process", async () => {
    const image = await Image.build({
      ref: refs.httpd,
      snapshotsDir: shared,
      listenerRequired: true,
      guestPort: 80,
    });
    const pool = await image.pool({ min: 0, max: 1 });
    pools.push(pool);
    const vm = await pool.acquire();
    const fwd = await vm.exposeTcp(0, 80);
    expect((await fetch(`http://${fwd.localAddr}/`)).status).toBe(200);
    await vm.workloadSignal(9);
    let refused = false;
    for (let i = 0; i < 50 && !refused; i++) {
      refused = await fetch(`http://${fwd.localAddr}/`).then(
        () => false,
        () => true,
      );
      if (!refused) await new Promise((r) => setTimeout(r, 100));
    }
    expect(refused).toBe(true);
    // The agent (and the second listener, a separate daemon) still serve.
    expect((await vm.exec({ argv: ["echo", "agent ok"] })).stdout.toString()).toBe("agent ok\n");
    await fwd.stop();
    await vm.release();
  });

  it('network "nat" gives the guest eth0 at 10.0.2.15; the default has loopback only; extraKernelArgs reach the kernel', async () => {
    const none = await Image.build({ ref: refs.busybox, snapshotsDir: shared });
    const pNone = await none.pool({ min: 0, max: 1 });
    pools.push(pNone);
    const v1 = await pNone.acquire();
    const ifs1 = (await v1.exec({ argv: ["ls", "/sys/class/net"] })).stdout
      .toString()
      .split(/\s+/)
      .filter(Boolean);
    expect(ifs1).toEqual(["lo"]);
    await v1.release();

    const nat = await Image.build({
      ref: refs.busybox,
      snapshotsDir: shared,
      network: "nat",
      extraKernelArgs: ["sm.e2e=1"],
    });
    expect(nat.snapshotPath).not.toBe(none.snapshotPath);
    const pNat = await nat.pool({ min: 0, max: 1 });
    pools.push(pNat);
    const v2 = await pNat.acquire();
    const addr = (await v2.exec({ argv: ["ip", "-4", "addr", "show"] })).stdout.toString();
    expect(addr).toContain("10.0.2.15/24");
    expect((await v2.exec({ argv: ["cat", "/proc/cmdline"] })).stdout.toString()).toContain("sm.e2e=1");
    await v2.release();
  });
});
