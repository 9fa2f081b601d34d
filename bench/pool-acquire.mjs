// Hot path of @supermachine/pool: acquire + release of an idle resource, against tarn and generic-pool
// measured in the same process, interleaved in rounds so that CPU-frequency and GC drift hit all three alike.
// A second scenario times the hand-off to a queued waiter (release() until the waiting acquire() resolves).
//
//   npx lerna run build --scope @supermachine/pool && node bench/pool-acquire.mjs [iterationsPerRound]
//
// Prints a table (p50/p99/mean per acquire+release, ratio to each peer), writes bench/results/pool.json and
// regenerates the table in packages/pool/README.md (between the bench:pool-acquire markers).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import genericPool from "generic-pool";
import { Pool as TarnPool } from "tarn";
import { createPool } from "../packages/pool/dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const ITERATIONS = Number(process.argv[2] ?? 50_000); // per round and library
const ROUNDS = 6;
const WARMUP = 30_000;

const makeResource = () => ({ id: Math.random() });

/** Each subject: setup() → { acquire(): Promise<R>, release(r), close(): Promise<void> } with one idle resource. */
const subjects = [
  {
    name: "@supermachine/pool",
    async setup() {
      const pool = createPool({
        create: async () => makeResource(),
        destroy: () => {},
        min: 1,
        max: 1,
      });
      await pool.release(await pool.acquire()); // resource created and idle
      return {
        acquire: () => pool.acquire(),
        release: (r) => pool.release(r),
        close: () => pool.shutdown(),
      };
    },
  },
  {
    name: "tarn",
    async setup() {
      const pool = new TarnPool({
        create: async () => makeResource(),
        destroy: () => {},
        min: 1,
        max: 1,
      });
      pool.release(await pool.acquire().promise);
      return {
        acquire: () => pool.acquire().promise,
        release: (r) => pool.release(r),
        close: () => pool.destroy(),
      };
    },
  },
  {
    name: "generic-pool",
    async setup() {
      const pool = genericPool.createPool(
        { create: async () => makeResource(), destroy: async () => {} },
        { min: 1, max: 1 },
      );
      await pool.release(await pool.acquire());
      return {
        acquire: () => pool.acquire(),
        release: (r) => pool.release(r),
        close: async () => {
          await pool.drain();
          await pool.clear();
        },
      };
    },
  },
];

/** Scenario "idle": acquire + release of the one idle resource. */
async function measureIdle(s, n, out) {
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const r = await s.acquire();
    s.release(r);
    const t1 = process.hrtime.bigint();
    if (out !== undefined) out.push(Number(t1 - t0));
  }
}

/** Scenario "handoff": the resource is held, an acquire() waits; time from release() to that acquire resolving. */
async function measureHandoff(s, n, out) {
  let held = await s.acquire();
  for (let i = 0; i < n; i++) {
    const waiting = s.acquire();
    const t0 = process.hrtime.bigint();
    s.release(held);
    held = await waiting;
    const t1 = process.hrtime.bigint();
    if (out !== undefined) out.push(Number(t1 - t0));
  }
  s.release(held);
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function run(measure, iterations) {
  const live = [];
  for (const subject of subjects) {
    const s = await subject.setup();
    await measure(s, WARMUP);
    live.push({ subject, s, samples: [] });
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const l of round % 2 === 0 ? live : [...live].reverse()) await measure(l.s, iterations, l.samples);
  }
  for (const l of live) await l.s.close();
  return live.map(({ subject, samples }) => {
    samples.sort((a, b) => a - b);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    return {
      name: subject.name,
      iterations: samples.length,
      p50Us: percentile(samples, 50) / 1000,
      p99Us: percentile(samples, 99) / 1000,
      meanUs: mean / 1000,
      opsPerSec: Math.round(1e9 / mean),
    };
  });
}

const scenarios = [
  {
    name: "idle",
    what: "acquire + release of one idle resource (min=max=1)",
    results: await run(measureIdle, ITERATIONS),
  },
  {
    name: "handoff",
    what: "release() of the only resource until the queued acquire() resolves (max=1)",
    results: await run(measureHandoff, Math.round(ITERATIONS / 2)),
  },
];

const machine = {
  cpu: os.cpus()[0]?.model ?? "unknown",
  cores: os.cpus().length,
  memGiB: Math.round(os.totalmem() / 2 ** 30),
  platform: `${os.platform()} ${os.release()} ${os.arch()}`,
  node: process.version,
  // No VM is involved in this bench; guests on this host run under QEMU TCG.
  accelerator: "none (host-only; VMs here use tcg)",
};

const fmt = (x) => x.toFixed(2).padStart(8);
const lines = [];
const say = (line) => {
  lines.push(line);
  console.log(line);
};
say(
  `pool bench — per-iteration wall time (process.hrtime.bigint), ${ROUNDS} interleaved rounds, ${WARMUP} warmup`,
);
say(
  `machine: ${machine.cpu} x${machine.cores}, ${machine.memGiB} GiB, ${machine.platform}, node ${machine.node}, accelerator: ${machine.accelerator}`,
);
for (const sc of scenarios) {
  const ours = sc.results[0];
  say("");
  say(`${sc.name}: ${sc.what}, ${ours.iterations} iterations each`);
  say(
    `${"library".padEnd(20)} ${"p50 µs".padStart(8)} ${"p99 µs".padStart(8)} ${"mean µs".padStart(8)} ${"ops/s".padStart(10)}  p50 vs ours`,
  );
  for (const r of sc.results) {
    const ratio = r === ours ? "1.00x" : `${(r.p50Us / ours.p50Us).toFixed(2)}x`;
    say(
      `${r.name.padEnd(20)} ${fmt(r.p50Us)} ${fmt(r.p99Us)} ${fmt(r.meanUs)} ${String(r.opsPerSec).padStart(10)}  ${ratio}`,
    );
  }
  sc.ratios = Object.fromEntries(
    sc.results
      .filter((r) => r !== ours)
      .map((r) => [r.name, { p50: r.p50Us / ours.p50Us, p99: r.p99Us / ours.p99Us }]),
  );
}
const idle = scenarios[0].results;
const goalP50 = idle[0].p50Us <= 50;
const notSlower = idle.every((r) => r === idle[0] || idle[0].p50Us <= r.p50Us);
say("");
say(
  `goal (idle) p50 <= 50 µs: ${goalP50 ? "met" : "MISSED"}; not slower than either peer (p50): ${notSlower ? "met" : "MISSED"}`,
);

const out = join(here, "results", "pool.json");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  `${JSON.stringify(
    {
      bench: "pool-acquire",
      date: new Date().toISOString(),
      machine,
      rounds: ROUNDS,
      warmup: WARMUP,
      scenarios,
      goals: { p50AtMost50Us: goalP50, notSlowerThanPeers: notSlower },
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${out}`);

const readme = join(here, "..", "packages", "pool", "README.md");
const text = readFileSync(readme, "utf8");
const start = "<!-- bench:pool-acquire:start -->";
const end = "<!-- bench:pool-acquire:end -->";
const i = text.indexOf(start);
const j = text.indexOf(end);
if (i !== -1 && j > i) {
  const block = `${start}\n\`\`\`text\n${lines.join("\n")}\n\`\`\`\n(generated by bench/pool-acquire.mjs on ${new Date().toISOString().slice(0, 10)})\n${end}`;
  writeFileSync(readme, text.slice(0, i) + block + text.slice(j + end.length));
  console.log(`updated ${readme}`);
}
