// volume: a writable ext4 volume backed by a sparse host file; its contents outlive every VM.
//   node examples/volume.mjs [path-to-volume-file]
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({
  log = console.log,
  volumePath = process.argv[2] ?? join(tmpdir(), "sm-example-volume.img"),
} = {}) {
  const image = await Image.build({
    ref: `${registry()}/busybox:latest`,
    volumes: [{ hostPath: volumePath, guestPath: "/data", sizeMib: 64 }],
  });
  const pool = await image.pool(); // restoreOnRelease: every acquire is a fresh VM
  try {
    for (let run = 1; run <= 2; run++) {
      const vm = await pool.acquire();
      const r = await vm.exec({ argv: ["sh", "-c", "echo visit >> /data/visits; wc -l < /data/visits"] });
      log(`VM ${run}: /data/visits has ${r.stdout.toString().trim()} line(s)`);
      await vm.release();
    }
  } finally {
    await pool.shutdown();
  }
  log(`volume file: ${volumePath}`);
}

runIfMain(import.meta, main);
