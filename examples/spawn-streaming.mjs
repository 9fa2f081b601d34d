// spawn-streaming: stream a process's output as it is produced, and talk to one over stdin.
//   node examples/spawn-streaming.mjs
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({ log = console.log } = {}) {
  const image = await Image.build({ ref: `${registry()}/busybox:latest` });
  const pool = await image.pool();
  try {
    const vm = await pool.acquire();
    // Node streams / async iteration.
    const ticker = await vm.spawn({ argv: ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.2; done"] });
    for await (const chunk of ticker.stdout) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) log(`streamed: ${line}`);
    }
    log(`ticker exit: ${(await ticker.wait()).exitCode}`);
    // Pull-style methods of the original API.
    const cat = await vm.spawn({ argv: ["cat"] });
    await cat.writeStdin("echoed through cat\n");
    await cat.closeStdin();
    let echoed = "";
    for (let b = await cat.readStdout(); b.length > 0; b = await cat.readStdout()) echoed += b.toString();
    log(`cat says: ${echoed.trim()}`);
    log(`cat exit: ${(await cat.wait()).exitCode}`);
    await vm.release();
  } finally {
    await pool.shutdown();
  }
}

runIfMain(import.meta, main);
