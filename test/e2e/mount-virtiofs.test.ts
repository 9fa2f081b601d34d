/**
 * `mount -t virtiofs TAG DIR` in the guest (the original's documented command, issue 17 item 4), end to
 * end: real registry, QEMU (TCG here), kernel, the C agent and core's ShareServer. The command runs in
 * the warmup (bake VM) and in a VM restored from the snapshot, and the warmup's mount is still there
 * after the restore; `smfs` stays an alias; an unknown tag fails with "No such device" and changes
 * nothing on the host; other mounts are untouched.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Image, type Pool, type Vm } from "@supermachine/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtureRefs, sharedSnapshotsDir } from "./_shared";

let root = "";
let image: Image;
let pool: Pool;
let vm: Vm;
let warm: { exitCode: number; stdout: string; stderr: string } | undefined;

async function sh(script: string): Promise<{ code: number; out: string; err: string }> {
  const r = await vm.exec({ argv: ["sh", "-c", script], timeoutMs: 60_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

const listing = () => readdirSync(root).sort();

beforeAll(async () => {
  sharedSnapshotsDir();
  const refs = await fixtureRefs();
  root = await mkdtemp(join(tmpdir(), "sm-virtiofs-e2e-"));
  writeFileSync(join(root, "hello.txt"), "hello from the host\n");
  mkdirSync(join(root, "src"));
  image = await Image.build({
    ref: refs.busybox,
    name: "virtiofs-e2e",
    mounts: [{ hostPath: root, guestTag: "workspace" }],
    warmupTag: `virtiofs-${Date.now()}`,
    warmup: async (w) => {
      const r = await w.exec({
        argv: [
          "sh",
          "-c",
          "mkdir -p /warm && mount -t virtiofs workspace /warm && cat /warm/hello.txt > /etc/warm-copy && echo written in warmup > /warm/from-warmup.txt && ls /warm && mkdir -p /warm/src/inner && mount -t virtiofs workspace /warm/src/inner",
        ],
        timeoutMs: 60_000,
      });
      warm = { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
    },
  });
  // Stop the bake VM (warm handoff) so the pool's VM is restored from the snapshot.
  await image.takeHandoff?.()?.stop();
  pool = await image.pool();
  vm = await pool.acquire();
}, 600_000);

afterAll(async () => {
  await pool?.shutdown();
  if (root) rmSync(root, { recursive: true, force: true });
}, 120_000);

describe("mount -t virtiofs in the guest", () => {
  it("works in the warmup (bake VM): reads host files and writes to the host", () => {
    expect(warm).toEqual({ exitCode: 0, stdout: "from-warmup.txt\nhello.txt\nsrc\n", stderr: "" });
    expect(readFileSync(join(root, "from-warmup.txt"), "utf8")).toBe("written in warmup\n");
  });

  it("runs the original's example 06 command verbatim in a restored VM", async () => {
    // what the warmup copied out of the share is in the snapshot
    expect((await sh("cat /etc/warm-copy")).out).toBe("hello from the host\n");
    writeFileSync(join(root, "after-restore.txt"), "live\n");
    const r = await sh("mkdir -p /work && mount -t virtiofs workspace /work && ls /work");
    expect(r).toEqual({ code: 0, out: "after-restore.txt\nfrom-warmup.txt\nhello.txt\nsrc\n", err: "" });
    const w = await sh("echo from the guest > /work/src/g.txt && cat /work/after-restore.txt");
    expect(w).toMatchObject({ code: 0, out: "live\n" });
    expect(readFileSync(join(root, "src", "g.txt"), "utf8")).toBe("from the guest\n");
  });

  it("the warmup's mount is still mounted in the restored VM, live", async () => {
    writeFileSync(join(root, "seen-through-warm.txt"), "yes\n");
    const r = await sh("cat /warm/seen-through-warm.txt && grep ' /warm ' /proc/mounts | cut -d' ' -f1-3");
    expect(r).toEqual({ code: 0, out: "yes\nworkspace /warm fuse.smfs\n", err: "" });
    // a bind inside the share (/warm/src/inner) is not made again: reaching its mount point needs the
    // share itself while the agent is still attaching it
    expect((await sh("grep -c ' /warm/src/inner ' /proc/mounts")).out).toBe("0\n");
  });

  it("keeps smfs as an alias", async () => {
    const r = await sh("mkdir -p /alias && mount -t smfs workspace /alias && cat /alias/hello.txt");
    expect(r).toEqual({ code: 0, out: "hello from the host\n", err: "" });
    const m = await sh("grep ' fuse.smfs ' /proc/mounts | cut -d' ' -f1-3 | sort");
    expect(m.out).toContain("workspace /work fuse.smfs\n");
    expect(m.out).toContain("workspace /alias fuse.smfs\n");
  });

  it("an unknown tag fails with No such device and changes nothing on the host", async () => {
    const before = listing();
    const r = await sh("mkdir -p /nope && mount -t virtiofs nope /nope");
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/No such device/);
    const bad = await sh("mount -t virtiofs ../.. /nope");
    expect(bad.code).not.toBe(0);
    expect(bad.err).toMatch(/No such device/);
    expect((await sh("grep -c ' /nope ' /proc/mounts")).out).toBe("0\n");
    expect(listing()).toEqual(before);
    expect(existsSync(join(root, "nope"))).toBe(false);
  });

  it("other mounts still work for root (tmpfs)", async () => {
    const r = await sh(
      "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo x > /mnt/t/f && grep ' /mnt/t ' /proc/mounts",
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^none \/mnt\/t tmpfs rw/);
  });

  it("a released and re-acquired VM mounts again", async () => {
    await vm.release();
    vm = await pool.acquire();
    const r = await sh("mkdir -p /again && mount -t virtiofs workspace /again && cat /again/hello.txt");
    expect(r).toEqual({ code: 0, out: "hello from the host\n", err: "" });
    expect((await sh("cat /warm/hello.txt")).out).toBe("hello from the host\n");
  });
});
