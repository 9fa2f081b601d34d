/**
 * Build/pool options on real VMs: the image-source override (OCI layout dir), a runtime memoryMib override
 * (cold boot, no re-bake), network "nat" vs the default "none", extraKernelArgs.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool } from "../../packages/core/src/index";
// @ts-expect-error -- plain ESM helper with a .d.mts next to it
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

  it("pool memoryMib override: the guest sees the new size without a re-bake", async () => {
    const image = await Image.build({ ref: refs.busybox, snapshotsDir: shared });
    const memTotalMib = async (p: Pool) => {
      const vm = await p.acquire();
      const r = await vm.exec({ argv: ["cat", "/proc/meminfo"] });
      await vm.release();
      return Number(/MemTotal:\s+(\d+) kB/.exec(r.stdout.toString())![1]) / 1024;
    };
    const base = await image.pool({ min: 0, max: 1 });
    pools.push(base);
    const big = await image.pool({ min: 0, max: 1, memoryMib: 512 });
    pools.push(big);
    const a = await memTotalMib(base);
    const b = await memTotalMib(big);
    expect(a).toBeLessThan(256);
    expect(b).toBeGreaterThan(400);
    expect(b).toBeLessThan(512);
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
