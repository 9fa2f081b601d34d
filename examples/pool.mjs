// pool: 8 tasks on a pool of 2..4 VMs; every task gets a clean VM (restoreOnRelease: true, the default).
//   node examples/pool.mjs
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({ log = console.log } = {}) {
  const image = await Image.build({ ref: `${registry()}/busybox:latest` });
  const pool = await image.pool({ min: 2, max: 4 });
  let maxWaiting = 0;
  try {
    const results = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const vm = await pool.acquire();
        maxWaiting = Math.max(maxWaiting, pool.stats().waiting);
        try {
          // A clean guest every time: the marker file from an earlier task is never there.
          const r = await vm.exec({
            argv: ["sh", "-c", `test -e /tmp/marker && echo dirty || echo clean; echo ${i} > /tmp/marker`],
          });
          return r.stdout.toString().trim();
        } finally {
          await vm.release();
        }
      }),
    );
    log(`tasks: ${results.length}, clean: ${results.filter((r) => r === "clean").length}`);
    log(`stats: ${JSON.stringify(pool.stats())} (max waiting seen: ${maxWaiting})`);
  } finally {
    await pool.shutdown();
  }
}

runIfMain(import.meta, main);
