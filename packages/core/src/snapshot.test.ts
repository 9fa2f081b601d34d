import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  INITRAMFS_FILE,
  loadSnapshot,
  makeTempSnapshotDir,
  publishSnapshot,
  ROOTFS_FILE,
  type SnapshotMetadata,
  VM_DIR,
} from "./snapshot";

const root = await mkdtemp(join(tmpdir(), "sm-core-snap-"));
afterAll(() => rm(root, { recursive: true, force: true }));

const meta = (name: string): Omit<SnapshotMetadata, "files"> => ({
  format: "supermachine-snapshot",
  version: 1,
  name,
  fingerprint: "f".repeat(64),
  inputs: {},
  ref: "busybox",
  imageDigest: "sha256:00",
  createdAt: new Date().toISOString(),
  memoryMib: 256,
  vcpus: 1,
  arch: "x86_64",
  accel: "tcg",
  backend: { name: "kvm", version: "1" },
  kernel: { release: "6.1", dir: "/k" },
  agent: { version: "1", sha256: "00" },
  guestPort: 80,
  listenerRequired: false,
  network: "none",
  extraKernelArgs: [],
  volumes: [],
  mounts: [],
  startWorkload: "resume",
  backendState: {},
});

async function makeSnapshot(name: string): Promise<string> {
  const tmp = await makeTempSnapshotDir(root, name);
  await writeFile(join(tmp, ROOTFS_FILE), "rootfs-bytes");
  await writeFile(join(tmp, INITRAMFS_FILE), "initramfs");
  await mkdir(join(tmp, VM_DIR));
  await writeFile(join(tmp, VM_DIR, "state"), "st");
  await writeFile(join(tmp, VM_DIR, "memory"), Buffer.alloc(8192));
  const final = join(root, name);
  await publishSnapshot(tmp, final, meta(name));
  return final;
}

function snapshotError(p: Promise<unknown>) {
  return p.then(
    () => {
      throw new Error("expected failure");
    },
    (err) => {
      expect(err.code).toBe("SM_SNAPSHOT_INVALID");
      return err as { details: { file: string }; message: string };
    },
  );
}

describe("snapshot directory", () => {
  it("publishes atomically and loads (dir, metadata.json or a file inside vm/)", async () => {
    const dir = await makeSnapshot("ok");
    const { meta: m } = await loadSnapshot(dir);
    expect(m.files).toEqual({
      [ROOTFS_FILE]: { size: 12 },
      [INITRAMFS_FILE]: { size: 9 },
      "vm/memory": { size: 8192 },
      "vm/state": { size: 2 },
    });
    expect((await loadSnapshot(join(dir, "metadata.json"))).dir).toBe(dir);
    expect((await loadSnapshot(join(dir, "vm", "state"))).dir).toBe(dir);
    expect((await readdir(root)).filter((n) => n.startsWith(".tmp"))).toEqual([]);
  });

  it("replaces an older snapshot of the same name", async () => {
    const dir = await makeSnapshot("again");
    await makeSnapshot("again");
    expect((await loadSnapshot(dir)).meta.name).toBe("again");
    expect((await readdir(root)).filter((n) => n.includes(".old-"))).toEqual([]);
  });

  it("names the broken file", async () => {
    const dir = await makeSnapshot("broken");
    await truncate(join(dir, VM_DIR, "memory"), 100);
    expect((await snapshotError(loadSnapshot(dir))).details.file).toBe("vm/memory");
    await rm(join(dir, ROOTFS_FILE));
    const e = await snapshotError(loadSnapshot(dir));
    expect(["vm/memory", ROOTFS_FILE]).toContain(e.details.file);
    expect((await snapshotError(loadSnapshot(join(root, "missing")))).details.file).toBe("metadata.json");
  });

  it("rejects unknown format versions and bad JSON", async () => {
    const dir = await makeSnapshot("ver");
    const m = JSON.parse(await readFile(join(dir, "metadata.json"), "utf8"));
    await writeFile(join(dir, "metadata.json"), JSON.stringify({ ...m, version: 99 }));
    expect((await snapshotError(loadSnapshot(dir))).message).toMatch(/version 99/);
    await writeFile(join(dir, "metadata.json"), "{");
    expect((await snapshotError(loadSnapshot(dir))).message).toMatch(/not valid JSON/);
  });
});
