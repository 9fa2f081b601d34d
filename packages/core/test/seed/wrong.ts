// Must NOT compile against ours: the compatibility test expects an error on each marked line, so the
// check can fail. Every call below is wrong for the original too.
import { Image, Pool } from "@supermachine/core";

export async function wrong(): Promise<void> {
  const image = await Image.build({}); // WRONG: ref is required
  new Pool(); // WRONG: no public constructor
  const pool = await image.pool({ min: "1" }); // WRONG: min is a number
  const vm = await pool.acquire();
  await vm.exec({ argv: "echo hello" }); // WRONG: argv is a string[]
  await vm.exec({ argv: ["x"], chain: "echo" }); // WRONG: chain is a string[]
  await vm.writeFile("/x"); // WRONG: bytes missing
  const stats: { busy: number } = pool.stats(); // WRONG: no such field
  console.log(stats);
}
