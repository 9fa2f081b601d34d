// The original @supermachine/core README quick start, verbatim apart from where the image ref comes
// from. No pool.shutdown(): the program must exit by itself when its work is done.
import { Image } from "@supermachine/core";

const ref = process.env.SM_SEED_REF;

const image = await Image.build({ ref });
const pool = await image.pool();
const vm = await pool.acquire();
const out = await vm.exec({ argv: ["echo", "hello"] });
console.log(out.stdout.toString());
await vm.release();
