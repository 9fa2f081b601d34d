// bench/oci-pull.mjs — pull the Debian fixture image into an empty store with @supermachine/oci
// vs `skopeo copy docker://… oci:DIR` from the same local registry, in the same run.
// Build first: npx lerna run build --scope @supermachine/oci
// Usage: node bench/oci-pull.mjs [--runs N]
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, "packages/oci/dist/index.js");
if (!existsSync(DIST)) {
  console.error("packages/oci/dist is missing: run `npx lerna run build --scope @supermachine/oci` first");
  process.exit(1);
}
const { pull, writeLayout, OciStore } = await import(DIST);

const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;

async function fixtureRef() {
  const mod = join(ROOT, "scripts/lib/fixtures.mjs");
  if (!existsSync(mod)) throw new Error("scripts/lib/fixtures.mjs is missing; run npm run setup");
  const fx = await import(mod);
  fx.quietSetup?.(true);
  const f = await fx.fixtures();
  return f.images["debian-python"];
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

async function timeIt(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const fx = await fixtureRef();
const ref = fx.ref;
const work = mkdtempSync(join(tmpdir(), "sm-oci-bench-"));
const ours = [];
const oursLayout = [];
const peer = [];
let bytes = 0;
let layers = 0;
try {
  // Warm-up (not measured): fills the registry's page cache equally for both tools.
  await pull(ref, { store: new OciStore(join(work, "warm")), pullPolicy: "always" });
  await run("skopeo", [
    "copy",
    "-q",
    "--src-tls-verify=false",
    `docker://${ref}`,
    `oci:${join(work, "warm-sk")}:latest`,
  ]);
  for (let i = 0; i < RUNS; i++) {
    // Alternate the order so neither tool always runs second.
    const order = i % 2 === 0 ? ["ours", "peer"] : ["peer", "ours"];
    for (const who of order) {
      if (who === "ours") {
        const dir = join(work, `ours-${i}`);
        let image;
        const tPull = await timeIt(async () => {
          image = await pull(ref, { store: new OciStore(dir), pullPolicy: "always" });
        });
        const tLayout = await timeIt(() =>
          writeLayout(image, join(work, `ours-layout-${i}`), { tag: "latest" }),
        );
        ours.push(tPull);
        oursLayout.push(tPull + tLayout);
        bytes = image.layers.reduce((a, l) => a + l.size, 0) + image.manifest.config.size;
        layers = image.layers.length;
        rmSync(dir, { recursive: true, force: true });
        rmSync(join(work, `ours-layout-${i}`), { recursive: true, force: true });
      } else {
        const dir = join(work, `skopeo-${i}`);
        peer.push(
          await timeIt(() =>
            run("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${ref}`, `oci:${dir}:latest`]),
          ),
        );
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const skopeoVersion = (await run("skopeo", ["--version"])).stdout.trim();
const result = {
  bench: "oci-pull",
  image: ref,
  digest: fx.digest,
  compressedBytes: bytes,
  layers,
  runs: RUNS,
  medianMs: {
    supermachineOciPull: Math.round(median(ours)),
    supermachineOciPullPlusLayout: Math.round(median(oursLayout)),
    skopeoCopyToOciLayout: Math.round(median(peer)),
  },
  samplesMs: {
    ours: ours.map(Math.round),
    oursLayout: oursLayout.map(Math.round),
    skopeo: peer.map(Math.round),
  },
  ratio: Number((median(ours) / median(peer)).toFixed(3)),
  // Per-iteration ratios (same iteration = same machine load): robust when the load drifts.
  pairedRatioMedian: Number(median(ours.map((t, i) => t / peer[i])).toFixed(3)),
  ratioWithLayout: Number((median(oursLayout) / median(peer)).toFixed(3)),
  goal: "ratio <= 1.0",
  peer: skopeoVersion,
  accelerator: "none (no VM involved; network + hashing + disk only)",
  loadAverage1m: Number(loadavg()[0].toFixed(2)),
  machine: {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
  },
  date: new Date().toISOString(),
};

const mib = (bytes / 2 ** 20).toFixed(1);
console.log(
  `oci-pull: ${ref} (${layers} layers, ${mib} MiB compressed), median of ${RUNS} runs, empty store each run`,
);
console.log("| tool                                   | median ms | ratio vs skopeo |");
console.log("|----------------------------------------|-----------|-----------------|");
console.log(
  `| @supermachine/oci pull → store         | ${String(result.medianMs.supermachineOciPull).padStart(9)} | ${result.ratio.toFixed(3).padStart(15)} |`,
);
console.log(
  `| @supermachine/oci pull + write layout  | ${String(result.medianMs.supermachineOciPullPlusLayout).padStart(9)} | ${result.ratioWithLayout.toFixed(3).padStart(15)} |`,
);
console.log(
  `| ${skopeoVersion.padEnd(38)} | ${String(result.medianMs.skopeoCopyToOciLayout).padStart(9)} | ${"1.000".padStart(15)} |`,
);
console.log(`median of per-run ratios (ours / skopeo, same run): ${result.pairedRatioMedian.toFixed(3)}`);
console.log(
  `accelerator: ${result.accelerator}; machine: ${result.machine.cores} × ${result.machine.cpu}, ${result.machine.memGiB} GiB, node ${process.version}, load ${result.loadAverage1m}`,
);
mkdirSync(join(ROOT, "bench/results"), { recursive: true });
writeFileSync(join(ROOT, "bench/results/oci.json"), `${JSON.stringify(result, null, 2)}\n`);
console.log("wrote bench/results/oci.json");
