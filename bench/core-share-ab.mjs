// A/B of the share server alone: the ShareServer of two checkouts (esbuild bundles of each one's
// packages/core/src/share) in ONE process, mounted through the host kernel's FUSE client by the test
// relay, the same write + read of SM_BENCH_MIB MiB (child process) run alternately A, B / B, A for
// SM_BENCH_ROUNDS rounds. Medians of the workload's wall time and of this process's CPU time (the
// server's) per side. Less noisy than running bench/core-share.mjs per checkout (bench/ab.mjs),
// whose data-op rows move 20-60 % between runs on this 2-core machine. Needs root, /dev/fuse, gcc.
//   node bench/core-share-ab.mjs --a ../old-checkout --b .   (section "shareAb" of bench/results/core.json)
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { mountShare, round, saveResults } from "./core-lib.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const MIB = Number(process.env.SM_BENCH_MIB ?? 32);
const ROUNDS = Number(process.env.SM_BENCH_ROUNDS ?? 12);
const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? resolve(process.argv[i + 1]) : undefined;
};
const dirs = { a: arg("--a"), b: arg("--b") ?? ROOT };
if (!dirs.a || !existsSync(join(dirs.a, "packages/core/src/share/index.ts"))) {
  console.error("usage: node bench/core-share-ab.mjs --a OLD_CHECKOUT [--b NEW_CHECKOUT]");
  process.exit(2);
}
if (process.getuid?.() !== 0 || !existsSync("/dev/fuse")) {
  console.log("skip: needs root and /dev/fuse (host kernel FUSE)");
  process.exit(0);
}
const work = mkdtempSync(join(tmpdir(), "sm-bench-share-ab-"));
const servers = {};
for (const side of ["a", "b"]) {
  const out = join(work, `share-${side}.mjs`);
  execFileSync(join(ROOT, "node_modules/.bin/esbuild"), [
    join(dirs[side], "packages/core/src/share/index.ts"),
    "--bundle",
    "--platform=node",
    "--format=esm",
    "--log-level=warning",
    `--outfile=${out}`,
  ]);
  servers[side] = (await import(pathToFileURL(out).href)).ShareServer;
}
const relay = join(work, "fuse-relay");
execFileSync("gcc", ["-O2", "-pthread", "-o", relay, join(ROOT, "packages/core/test/share/fuse-relay.c")]);
const workload = join(work, "workload.mjs");
writeFileSync(
  workload,
  `import fs from "node:fs/promises";
import { performance } from "node:perf_hooks";
const dir = process.argv[2];
const buf = Buffer.alloc(1 << 20, 0x5a);
const r = {};
let t = performance.now();
const w = await fs.open(dir + "/big.bin", "w");
for (let i = 0; i < ${MIB}; i++) await w.write(buf, 0, buf.length, i * buf.length);
await w.close();
r.write = performance.now() - t;
t = performance.now();
const f = await fs.open(dir + "/big.bin", "r");
for (let i = 0; i < ${MIB}; i++) await f.read(buf, 0, buf.length, i * buf.length);
await f.close();
r.read = performance.now() - t;
console.log(JSON.stringify(r));
`,
);

async function once(Server) {
  const root = mkdtempSync(join("/dev/shm", "sm-bench-share-ab-"));
  const mnt = mkdtempSync(join(work, "mnt-"));
  const m = await mountShare(relay, Server, root, mnt, { cacheTtlMs: 0 });
  try {
    const cpu0 = process.cpuUsage();
    const r = await new Promise((res, rej) => {
      let out = "";
      const c = spawn(process.execPath, [workload, mnt], { stdio: ["ignore", "pipe", "inherit"] });
      c.stdout.on("data", (d) => {
        out += d;
      });
      c.on("exit", (code) => (code === 0 ? res(JSON.parse(out)) : rej(new Error(`workload exited ${code}`))));
    });
    const cpu = process.cpuUsage(cpu0);
    return { ...r, serverCpu: (cpu.user + cpu.system) / 1000 };
  } finally {
    await m.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(mnt, { recursive: true, force: true });
  }
}

const median = (v) => {
  const s = [...v].sort((x, y) => x - y);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
};
const samples = { a: [], b: [] };
try {
  for (let i = 0; i < ROUNDS; i++)
    for (const side of i % 2 ? ["b", "a"] : ["a", "b"]) samples[side].push(await once(servers[side]));
} finally {
  rmSync(work, { recursive: true, force: true });
}
const out = {
  a: dirs.a,
  b: dirs.b,
  mib: MIB,
  rounds: ROUNDS,
  rule: "median per side over the rounds (A, B / B, A alternating); spread = (max - min) / median",
  metrics: {},
};
for (const k of ["write", "read", "serverCpu"]) {
  const [a, b] = [samples.a.map((s) => s[k]), samples.b.map((s) => s[k])];
  const spread = (v) => round((Math.max(...v) - Math.min(...v)) / median(v), 2);
  out.metrics[`${k}Ms`] = {
    a: round(median(a), 1),
    b: round(median(b), 1),
    ratio: round(median(b) / median(a), 3),
    spreadA: spread(a),
    spreadB: spread(b),
  };
  console.log(
    `${k.padEnd(10)} A ${median(a).toFixed(1)} ms  B ${median(b).toFixed(1)} ms  B/A ${(median(b) / median(a)).toFixed(3)}`,
  );
}
saveResults("shareAb", out);
