// hello: bake an image (cached after the first run), take a VM from a pool, run a command.
//   node examples/hello.mjs
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({ log = console.log } = {}) {
  const image = await Image.build({ ref: `${registry()}/busybox:latest` });
  const pool = await image.pool({ min: 1, max: 1 });
  try {
    const vm = await pool.acquire();
    const out = await vm.exec({ argv: ["echo", "hello from a microVM"] });
    log(out.stdout.toString().trim());
    const uname = await vm.exec({ argv: ["uname", "-sr"] });
    log(`kernel: ${uname.stdout.toString().trim()} (exit ${uname.exitCode})`);
    await vm.release();
  } finally {
    await pool.shutdown();
  }
}

runIfMain(import.meta, main);
