// volume: a raw block volume backed by a sparse host file (/dev/vdb in the guest); the warmup formats it
// (first use only) and mounts it, every VM restored from the snapshot has it mounted, and its contents
// outlive every VM.
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
    warmup: async (vm) => {
      const r = await vm.exec({
        argv: [
          "sh",
          "-c",
          "mkdir -p /data && { mount /dev/vdb /data 2>/dev/null || { mke2fs /dev/vdb >/dev/null && mount /dev/vdb /data; }; }",
        ],
      });
      if (r.exitCode !== 0) throw new Error(`warmup: ${r.stderr}`);
    },
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
