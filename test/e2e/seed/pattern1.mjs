// The original README's pattern 1 (run untrusted Python on clean VMs from a warm pool), apart from the
// image ref and the pool size (SM_SEED_POOL; the original uses 8). No pool.shutdown(): the program
// must exit by itself when its work is done.
import { Image } from "@supermachine/core";

const ref = process.env.SM_SEED_REF;
const size = Number(process.env.SM_SEED_POOL ?? 8);

const image = await Image.build({ ref });
const pool = await image.pool({ min: size, max: size });

async function runPython(code) {
  const vm = await pool.acquire();
  try {
    return await vm.exec({
      argv: ["python3", "/tmp/main.py"],
      stageFiles: { "/tmp/main.py": Buffer.from(code) },
      timeoutMs: 30_000,
    });
  } finally {
    await vm.release();
  }
}

const results = await Promise.all(Array.from({ length: size }, (_, i) => runPython(`print(${i} * ${i})`)));
for (const r of results) console.log(r.exitCode, r.stdout.toString().trim());
