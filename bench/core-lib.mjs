// Shared helpers of the core benches: results file, machine description, stats, the fixture registry.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, homedir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { Duplex } from "node:stream";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const RESULTS = join(ROOT, "bench", "results", "core.json");
export const INTERNAL = Symbol.for("supermachine.core.internal");

export async function loadCore() {
  const dist = join(ROOT, "packages", "core", "dist", "index.js");
  if (!existsSync(dist)) throw new Error("build first: npx lerna run build");
  return import(dist);
}

export function machine() {
  return {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    qemu: (() => {
      try {
        return execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0];
      } catch {
        return "unknown";
      }
    })(),
  };
}

export function registry() {
  if (process.env.SUPERMACHINE_REGISTRY) return process.env.SUPERMACHINE_REGISTRY;
  const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "supermachine");
  return JSON.parse(readFileSync(join(cache, "registry", "state.json"), "utf8")).host;
}

export function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

export function summary(values) {
  return {
    n: values.length,
    p50: round(pct(values, 50)),
    p99: round(pct(values, 99)),
    min: round(Math.min(...values)),
  };
}

export const round = (x, d = 3) => (Number.isFinite(x) ? Number(x.toFixed(d)) : null);

/** Merge `section` into bench/results/core.json. */
export function saveResults(section, data) {
  mkdirSync(dirname(RESULTS), { recursive: true });
  const all = existsSync(RESULTS) ? JSON.parse(readFileSync(RESULTS, "utf8")) : {};
  all[section] = { ...data, measuredAt: new Date().toISOString(), machine: machine() };
  writeFileSync(RESULTS, `${JSON.stringify(all, null, 2)}\n`);
}

/** Raw numbers of the hypervisor package's own bench, if it has run on this machine. */
export function hypervisorResults() {
  const p = join(ROOT, "bench", "results", "hypervisor.json");
  return existsSync(p) ? JSON.parse(readFileSync(p, "utf8")) : null;
}

export function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? "").length)));
  for (const r of rows)
    console.log(
      r
        .map((c, i) => String(c ?? "").padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    );
}

export function pssOf(pid) {
  try {
    const txt = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const m = /^Pss:\s+(\d+) kB/m.exec(txt);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * PSS (bytes) of a QEMU process's TCG translation cache: its anonymous writable + executable mappings
 * (the code buffer, sized by `tb-size`; guest RAM is file-backed here). 0 under KVM/HVF, null if gone.
 */
export function tcgCachePssOf(pid) {
  let txt;
  try {
    txt = readFileSync(`/proc/${pid}/smaps`, "utf8");
  } catch {
    return null;
  }
  let inCache = false;
  let kib = 0;
  for (const line of txt.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const size = Number.parseInt(head[2], 16) - Number.parseInt(head[1], 16);
      inCache = head[4] === "" && head[3].startsWith("rwx") && size >= 2 ** 20;
      continue;
    }
    const m = inCache && /^Pss:\s+(\d+) kB/.exec(line);
    if (m) kib += Number(m[1]);
  }
  return kib * 1024;
}

/** CPU time (user + system, seconds) a process has used so far, or null when it is gone. */
export function cpuSecondsOf(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in USER_HZ (100 on Linux)
  } catch {
    return null;
  }
}

/** Average share of one core each process used over `ms` of wall time (percent). */
export async function idleCpuPercent(pids, ms) {
  const before = pids.map(cpuSecondsOf);
  await new Promise((r) => setTimeout(r, ms));
  const used = pids.map((p, i) => (cpuSecondsOf(p) ?? 0) - (before[i] ?? 0));
  return (used.reduce((a, b) => a + b, 0) / pids.length / (ms / 1000)) * 100;
}

export function memAvailable() {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"));
  return m ? Number(m[1]) * 1024 : null;
}

/**
 * Mounts `mnt` through the host kernel's FUSE client: the test relay (packages/core/test/share/fuse-relay.c,
 * built by the caller) pipes /dev/fuse over its stdio to a ShareServer serving `root`.
 */
export async function mountShare(relay, ShareServer, root, mnt, opts) {
  const child = spawn(relay, [mnt], { stdio: ["pipe", "pipe", "pipe"] });
  await new Promise((resolve, reject) => {
    let err = "";
    child.stderr.on("data", (d) => {
      err += d;
      if (err.includes("mounted\n")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`relay exited ${code}: ${err}`)));
  });
  const server = new ShareServer({ root, tag: "bench", policy: "opaque", ...opts });
  const serving = server.serve(Duplex.from({ readable: child.stdout, writable: child.stdin }));
  return {
    server,
    async stop() {
      const exited = new Promise((r) => child.once("exit", r));
      child.stdin.end();
      await exited;
      await serving;
      await server.close();
    },
  };
}
