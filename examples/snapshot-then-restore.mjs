// snapshot-then-restore: change a running VM, snapshot it, and start a new pool from that snapshot.
//   node examples/snapshot-then-restore.mjs
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({ log = console.log } = {}) {
  const image = await Image.build({ ref: `${registry()}/busybox:latest` });
  const dir = await mkdtemp(join(tmpdir(), "sm-example-snap-"));
  const pool = await image.pool();
  try {
    const vm = await pool.acquire();
    await vm.writeFile("/root/state.txt", "captured mid-flight\n");
    const snap = await vm.snapshot(join(dir, "after-write"));
    log(`snapshot: ${snap.snapshotPath}`);
    await vm.release();

    const restored = await Image.fromSnapshot(snap.snapshotPath);
    const pool2 = await restored.pool();
    try {
      const vm2 = await pool2.acquire();
      log(`restored VM reads: ${(await vm2.readFile("/root/state.txt")).toString().trim()}`);
      await vm2.release();
    } finally {
      await pool2.shutdown();
    }
  } finally {
    await pool.shutdown();
    await rm(dir, { recursive: true, force: true });
  }
}

runIfMain(import.meta, main);
