// The original's example 06 (a live host directory shared into the VM), verbatim apart from where the
// image ref comes from. The shared directory is ./workspace under the current directory. In the guest
// the share is mounted by its tag with `mount -t virtiofs`. No pool.shutdown(): the program must exit by
// itself when its work is done.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Image } from "@supermachine/core";

const ref = process.env.SM_SEED_REF;

const workspace = resolve("workspace");
mkdirSync(workspace, { recursive: true });
writeFileSync(join(workspace, "from-host.txt"), "written on the host\n");

const image = await Image.build({
  ref,
  mounts: [{ hostPath: workspace, guestTag: "workspace" }],
});
const pool = await image.pool();
const vm = await pool.acquire();
const out = await vm.exec({
  argv: [
    "sh",
    "-c",
    "mkdir -p /work && mount -t virtiofs workspace /work && ls /work && echo from-guest > /work/out.txt",
  ],
});
console.log(out.stdout.toString().trim());
if (out.exitCode !== 0) console.error(out.stderr.toString());

const outTxt = join(workspace, "out.txt");
console.log(
  existsSync(outTxt) ? `host sees out.txt: ${readFileSync(outTxt, "utf8").trim()}` : "host: no out.txt",
);
await vm.release();
