// Test child: start a pool of `min` VMs, print the QEMU pids, then wait to be killed.
// argv: ref snapshotsDir min
import { execFileSync } from "node:child_process";
import { Image } from "@supermachine/core";

const [ref, snapshotsDir, min] = process.argv.slice(2);
const img = await Image.build({ ref: ref!, snapshotsDir: snapshotsDir! });
const n = Number(min);
const pool = await img.pool({ min: n, max: n });
const vms = await Promise.all(Array.from({ length: n }, () => pool.acquire()));
for (const vm of vms) await vm.exec({ argv: ["true"] });
const pids = execFileSync("pgrep", ["-P", String(process.pid)], { encoding: "utf8" })
  .split("\n")
  .filter(Boolean)
  .map(Number);
// QEMU may run under setpriv (same pid after exec); collect children and grandchildren.
const all = new Set<number>(pids);
for (const p of pids) {
  try {
    for (const c of execFileSync("pgrep", ["-P", String(p)], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean))
      all.add(Number(c));
  } catch {
    /* no children */
  }
}
const qemu = [...all].filter((p) => {
  try {
    return execFileSync("cat", [`/proc/${p}/comm`], { encoding: "utf8" }).startsWith("qemu");
  } catch {
    return false;
  }
});
process.stdout.write(`${JSON.stringify({ ready: true, qemu, stats: pool.stats() })}\n`);
setInterval(() => {}, 1000);
