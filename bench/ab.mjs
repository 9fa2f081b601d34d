// A/B run: the same benches from two checkouts (A = before a change, B = after), interleaved in one
// run so machine load and drift hit both alike. Each bench writes its own JSON into its checkout's
// bench/results/; after every run this script reads the files that run changed and keeps every numeric
// leaf as one sample. At the end: per metric the median of A and of B, B/A, and the spread of each side
// across rounds (the run's own noise). A metric is flagged when B/A lies outside the larger side's
// spread — the reader decides whether higher or lower is better (the bench's README row says).
//   node bench/ab.mjs --a ../old-checkout --b . [--rounds 2] [--out bench/results/ab.json] bench-name...
// Both checkouts must be built (npx lerna run build) and provisioned; benches that need root or a
// registry need them in both. Nothing is compared across machines: A and B run here, now.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const dirA = resolve(opt("--a", ""));
const dirB = resolve(opt("--b", "."));
const rounds = Number(opt("--rounds", "2"));
const out = resolve(opt("--out", join(dirB, "bench", "results", "ab.json")));
const benches = args;
if (!existsSync(join(dirA, "bench")) || !existsSync(join(dirB, "bench")) || benches.length === 0) {
  console.error("usage: node bench/ab.mjs --a DIR --b DIR [--rounds N] [--out FILE] bench-name...");
  process.exit(2);
}

const git = (dir, ...a) => spawnSync("git", ["-C", dir, ...a], { encoding: "utf8" }).stdout.trim();
const resultsDir = (dir) => join(dir, "bench", "results");
const mtimes = (dir) =>
  Object.fromEntries(
    existsSync(resultsDir(dir))
      ? readdirSync(resultsDir(dir))
          .filter((f) => f.endsWith(".json"))
          .map((f) => [f, statSync(join(resultsDir(dir), f)).mtimeMs])
      : [],
  );
/** Numeric leaves of a JSON value as path → number; metadata (timestamps, machine) left out. */
function leaves(v, path, acc) {
  if (typeof v === "number" && Number.isFinite(v)) acc[path] = v;
  else if (Array.isArray(v))
    return acc; // raw sample arrays: their summary fields are compared instead
  else if (v && typeof v === "object")
    for (const [k, x] of Object.entries(v)) {
      if (k === "machine" || k === "measuredAt") continue;
      leaves(x, path ? `${path}.${k}` : k, acc);
    }
  return acc;
}

const samples = {}; // bench → side → metric → number[]
const failures = [];
for (let r = 0; r < rounds; r++) {
  for (const bench of benches) {
    const order = r % 2 ? ["B", "A"] : ["A", "B"];
    for (const side of order) {
      const dir = side === "A" ? dirA : dirB;
      const script = join(dir, "bench", `${bench}.mjs`);
      if (!existsSync(script)) {
        failures.push(`${side}: no bench/${bench}.mjs`);
        continue;
      }
      const before = mtimes(dir);
      const t0 = performance.now();
      console.log(`[ab] round ${r + 1}/${rounds} ${bench} ${side} (${dir})`);
      const res = spawnSync(process.execPath, [script], {
        cwd: dir,
        stdio: ["ignore", "inherit", "inherit"],
      });
      const secs = (performance.now() - t0) / 1000;
      if (res.status !== 0) {
        failures.push(`${side}: ${bench} exited ${res.status ?? res.signal} (round ${r + 1})`);
        continue;
      }
      const after = mtimes(dir);
      const changed = Object.keys(after).filter((f) => after[f] !== before[f] && f !== "ab.json");
      const got = {};
      for (const f of changed)
        leaves(JSON.parse(readFileSync(join(resultsDir(dir), f), "utf8")), f.replace(/\.json$/, ""), got);
      got.wallSeconds = secs;
      samples[bench] ??= {};
      samples[bench][side] ??= {};
      const s = samples[bench][side];
      for (const [k, v] of Object.entries(got)) {
        s[k] ??= [];
        s[k].push(v);
      }
    }
  }
}

const median = (v) => {
  const s = [...v].sort((x, y) => x - y);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
};
const spread = (v) => {
  const m = median(v);
  return m === 0 ? 0 : (Math.max(...v) - Math.min(...v)) / Math.abs(m);
};
const report = {
  a: { dir: dirA, commit: git(dirA, "rev-parse", "HEAD") },
  b: { dir: dirB, commit: git(dirB, "rev-parse", "HEAD") },
  rounds,
  rule: "per metric: median of A and B over the rounds, ratio B/A; flagged when |B/A - 1| exceeds the larger within-side spread ((max-min)/median) and 10%",
  benches: {},
  failures,
  measuredAt: new Date().toISOString(),
};
for (const [bench, sides] of Object.entries(samples)) {
  const A = sides.A ?? {};
  const B = sides.B ?? {};
  const rows = {};
  for (const k of Object.keys(A).filter((k) => k in B)) {
    const ma = median(A[k]);
    const mb = median(B[k]);
    if (ma === 0 && mb === 0) continue;
    const ratio = ma === 0 ? null : mb / ma;
    const noise = Math.max(spread(A[k]), spread(B[k]), 0.1);
    rows[k] = {
      a: Number(ma.toPrecision(4)),
      b: Number(mb.toPrecision(4)),
      ratio: ratio === null ? null : Number(ratio.toFixed(3)),
      noise: Number(noise.toFixed(3)),
      flag: ratio !== null && Math.abs(ratio - 1) > noise,
    };
  }
  report.benches[bench] = rows;
}
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
for (const [bench, rows] of Object.entries(report.benches)) {
  const flagged = Object.entries(rows).filter(([, r]) => r.flag);
  console.log(`\n${bench}: ${Object.keys(rows).length} metrics, ${flagged.length} outside noise`);
  for (const [k, r] of flagged)
    console.log(`  ${k}: A ${r.a}  B ${r.b}  B/A ${r.ratio}  (noise ±${r.noise})`);
}
if (failures.length) console.log(`\nfailures:\n  ${failures.join("\n  ")}`);
console.log(`\nwritten ${out}`);
process.exit(failures.length ? 1 : 0);
