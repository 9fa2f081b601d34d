import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  INITRAMFS_FILE,
  loadSnapshot,
  makeTempSnapshotDir,
  publishSnapshot,
  ROOTFS_FILE,
  removeTempSnapshotDir,
  type SnapshotMetadata,
  sweepDeadTempDirs,
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

  it("temp dirs left by a dead process of this host are swept by the next writer; live, foreign and unknown ones stay", async () => {
    const dir = join(root, "sweep");
    await mkdir(dir, { recursive: true });
    const tag = createHash("sha256").update(hostname()).digest("hex").slice(0, 8);
    const deadPid = spawnSync(process.execPath, ["-e", "0"]).pid; // exited: its pid is free (barring reuse)
    const names = {
      dead: `.tmp-img-x-${tag}-${deadPid}-0badc0de`,
      alive: `.tmp-img-x-${tag}-1-0badc0de`, // pid 1 is always alive
      otherHost: `.tmp-img-x-${tag === "00000000" ? "11111111" : "00000000"}-${deadPid}-0badc0de`,
      legacy: ".tmp-img-x-0badc0de",
      snapshot: "img-x",
    };
    for (const n of Object.values(names)) await mkdir(join(dir, n));
    await writeFile(join(dir, names.dead, "memory"), Buffer.alloc(4096));
    expect(await sweepDeadTempDirs(dir)).toEqual([names.dead]);
    expect((await readdir(dir)).sort()).toEqual(
      [names.alive, names.otherHost, names.legacy, names.snapshot].sort(),
    );
    // a new temp dir sweeps too, and names this process
    await mkdir(join(dir, names.dead));
    const mine = await makeTempSnapshotDir(dir, "img-y");
    expect(mine).toMatch(new RegExp(`\\.tmp-img-y-${tag}-${process.pid}-[0-9a-f]{8}$`));
    expect(await readdir(dir)).not.toContain(names.dead);
    expect(await sweepDeadTempDirs(dir)).toEqual([]); // our own live one is kept
    await removeTempSnapshotDir(mine);
    expect((await readdir(dir)).filter((n) => n.includes("img-y"))).toEqual([]);
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
