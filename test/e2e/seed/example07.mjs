// The original's example 07 (a persistent volume filled by npm in the warmup), verbatim apart from the
// image ref and the package: the image (the `node` fixture) has node, npm and mkfs.ext4, and sm-greet is
// the package its own npm cache serves (guests have no network by default). The volume's host file is ./data.img under the current
// directory. The warmup formats the raw device, mounts it at /data and installs into it; every VM then
// finds /data mounted with the package. No pool.shutdown(): the program must exit by itself.
import { resolve } from "node:path";
import { Image } from "@supermachine/core";

const ref = process.env.SM_SEED_REF;

const image = await Image.build({
  ref,
  volumes: [{ hostPath: resolve("data.img"), guestPath: "/data", sizeMib: 256 }],
  warmup: async (vm) => {
    console.log("warmup: formatting /dev/vdb and installing into /data");
    const r = await vm.exec({
      argv: [
        "sh",
        "-c",
        `mkfs.ext4 -F /dev/vdb && mkdir -p /data && mount /dev/vdb /data && cd /data && npm init -y && npm install sm-greet`,
      ],
    });
    if (r.exitCode !== 0) throw new Error(`warmup failed (${r.exitCode}): ${r.stderr}`);
  },
});
const pool = await image.pool();
const vm = await pool.acquire();
const out = await vm.exec({
  argv: [
    "node",
    "-e",
    `const m = require('/data/node_modules/sm-greet'); console.log(m.greet('from /data'), m.version)`,
  ],
});
console.log(out.stdout.toString().trim());
if (out.exitCode !== 0) console.error(out.stderr.toString());
await vm.release();
