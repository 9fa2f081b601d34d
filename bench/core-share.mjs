// Bench: the @supermachine/core share server (host-side FUSE file server) measured through the
// HOST kernel's FUSE client (a test relay pipes /dev/fuse over stdio to the server) — NOT a VM;
// the in-VM numbers come from the core VM bench. Baseline in the same run: the same workload on
// the plain tmpfs directory that backs the share. Needs root and /dev/fuse (gcc builds the relay).
//
//   node bench/core-share.mjs            (writes bench/results/core-share.json)
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { mountShare } from "./core-lib.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SIZE_MIB = Number(process.env.SM_BENCH_MIB ?? 100);
const FILES = Number(process.env.SM_BENCH_FILES ?? 10_000);
// Shared 2-core machine: each variant runs ROUNDS times, interleaved; the best time per metric counts.
const ROUNDS = Number(process.env.SM_BENCH_ROUNDS ?? 2);

async function loadShareServer(work) {
  const dist = join(ROOT, "packages", "core", "dist", "index.js");
  if (existsSync(dist)) {
    const m = await import(pathToFileURL(dist).href);
    if (m.ShareServer) return { ShareServer: m.ShareServer, from: "packages/core/dist" };
  }
  // Not exported from the built package yet: bundle the share module from source with esbuild.
  const out = join(work, "share.mjs");
  execFileSync(
    join(ROOT, "node_modules", ".bin", "esbuild"),
    [
      join(ROOT, "packages/core/src/share/index.ts"),
      "--bundle",
      "--platform=node",
      "--format=esm",
      `--outfile=${out}`,
    ],
    { stdio: "inherit" },
  );
  const m = await import(pathToFileURL(out).href);
  return { ShareServer: m.ShareServer, from: "packages/core/src/share (esbuild bundle)" };
}

// The workload runs in a child process: the server shares this process's libuv thread pool.
const WORKLOAD = `
import fs from "node:fs/promises";
import { performance } from "node:perf_hooks";
const [dir, sizeMib, files] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const MIB = 1024 * 1024;
const res = {};
// Around each timed phase the parent notes the server's request count (stdout "mark", stdin "ok").
const lines = (async function* () { let b = ""; for await (const c of process.stdin) { b += c; let i; while ((i = b.indexOf("\\n")) >= 0) { yield b.slice(0, i); b = b.slice(i + 1); } } })();
const mark = async (name) => { process.stdout.write("mark " + name + "\\n"); await lines.next(); };
const t = async (name, fn) => { await mark(name); const s = performance.now(); await fn(); res[name] = performance.now() - s; await mark(name); };
const buf = Buffer.alloc(MIB, 0x5a);
await t("write", async () => {
  const h = await fs.open(dir + "/big.bin", "w");
  for (let i = 0; i < sizeMib; i++) await h.write(buf, 0, MIB, i * MIB);
  await h.close();
});
await t("read", async () => {
  const h = await fs.open(dir + "/big.bin", "r");
  const rb = Buffer.alloc(MIB);
  let total = 0;
  for (;;) { const { bytesRead } = await h.read(rb, 0, MIB, total); if (!bytesRead) break; total += bytesRead; }
  await h.close();
  if (total !== sizeMib * MIB) throw new Error("short read " + total);
});
// 10k files in 100 directories (setup, untimed).
const dirs = 100, per = Math.ceil(files / dirs);
const paths = [];
for (let d = 0; d < dirs; d++) {
  await fs.mkdir(dir + "/tree/d" + d, { recursive: true });
  await Promise.all(Array.from({ length: per }, (_, i) => {
    const p = dir + "/tree/d" + d + "/f" + i + ".txt"; paths.push(p); return fs.writeFile(p, "x");
  }));
}
await t("stat", async () => { for (const p of paths) await fs.lstat(p); });
await t("walk", async () => {
  let n = 0;
  const walk = async (d) => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = d + "/" + e.name; await fs.lstat(p); n++;
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir + "/tree");
  res.walkEntries = n;
});
// Listing only (names and types, no stat): what READDIRPLUS costs when attributes are not needed.
await t("ls", async () => {
  let n = 0;
  for (const d of await fs.readdir(dir + "/tree")) n += (await fs.readdir(dir + "/tree/" + d)).length;
  res.lsEntries = n;
});
process.stdout.write("result " + JSON.stringify(res) + "\\n", () => process.exit(0));
`;

/** Runs the workload on `dir`; with `server`, also counts the FUSE requests of each timed phase. */
function runWorkload(work, dir, server) {
  const script = join(work, "workload.mjs");
  writeFileSync(script, WORKLOAD);
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [script, dir, String(SIZE_MIB), String(FILES)], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    let out = "";
    let result = null;
    const marks = {};
    c.stdout.on("data", (d) => {
      out += d;
      let i = out.indexOf("\n");
      while (i >= 0) {
        const line = out.slice(0, i);
        out = out.slice(i + 1);
        if (line.startsWith("mark ")) {
          const name = line.slice(5);
          const now = server ? server.stats().requests : 0;
          if (name in marks) marks[name] = now - marks[name];
          else marks[name] = now;
          c.stdin.write("ok\n");
        } else if (line.startsWith("result ")) {
          result = JSON.parse(line.slice(7));
          c.stdin.end();
        }
        i = out.indexOf("\n");
      }
    });
    c.on("exit", (code) => {
      c.stdin.destroy();
      if (code !== 0 || !result) return reject(new Error(`workload exited ${code}`));
      if (server) result.phaseRequests = marks;
      resolve(result);
    });
  });
}

async function main() {
  if (process.getuid?.() !== 0 || !existsSync("/dev/fuse")) {
    console.log("skip: needs root and /dev/fuse (host kernel FUSE)");
    return;
  }
  const work = mkdtempSync(join(tmpdir(), "sm-bench-share-"));
  const shm = mkdtempSync(join("/dev/shm", "sm-bench-share-"));
  try {
    const { ShareServer, from } = await loadShareServer(work);
    const relay = join(work, "fuse-relay");
    execFileSync("gcc", [
      "-O2",
      "-pthread",
      "-o",
      relay,
      join(ROOT, "packages/core/test/share/fuse-relay.c"),
    ]);

    const rows = {};
    const keep = (name, r) => {
      const prev = rows[name];
      if (!prev) rows[name] = r;
      else for (const k of ["read", "write", "stat", "walk", "ls"]) prev[k] = Math.min(prev[k], r[k]);
    };
    for (let round = 0; round < ROUNDS; round++) {
      const plain = join(shm, `plain-${round}`);
      mkdirSync(plain);
      keep("tmpfs", await runWorkload(work, plain));
      rmSync(plain, { recursive: true, force: true });
      // Defaults: READDIRPLUS off at TTL 0, "auto" above. The other rows measure that decision.
      for (const [name, opts] of [
        ["share (ttl 0)", { cacheTtlMs: 0 }],
        ["share (ttl 0, readdirplus auto)", { cacheTtlMs: 0, readdirPlus: "auto" }],
        ["share (ttl 1s, no readdirplus)", { cacheTtlMs: 1000, readdirPlus: "off" }],
        ["share (ttl 1s)", { cacheTtlMs: 1000 }],
        ["share (ttl 1s, readdirplus always)", { cacheTtlMs: 1000, readdirPlus: "always" }],
      ]) {
        const backing = join(shm, `${name.replace(/\W+/g, "_")}-${round}`);
        const mnt = mkdtempSync(join(work, "mnt-"));
        mkdirSync(backing);
        const m = await mountShare(relay, ShareServer, backing, mnt, opts);
        try {
          const r = await runWorkload(work, mnt, m.server);
          r.requests = m.server.stats().requests;
          keep(name, r);
        } finally {
          await m.stop();
        }
        rmSync(backing, { recursive: true, force: true });
      }
    }

    const base = rows.tmpfs;
    const table = [];
    for (const [name, r] of Object.entries(rows)) {
      table.push({
        variant: name,
        "read MiB/s": +(SIZE_MIB / (r.read / 1000)).toFixed(0),
        "write MiB/s": +(SIZE_MIB / (r.write / 1000)).toFixed(0),
        [`stat ${FILES} ms`]: +r.stat.toFixed(0),
        "walk ms": +r.walk.toFixed(0),
        "ls ms": +r.ls.toFixed(0),
        "walk reqs": r.phaseRequests?.walk ?? null,
        "read x": +(r.read / base.read).toFixed(1),
        "write x": +(r.write / base.write).toFixed(1),
        "stat x": +(r.stat / base.stat).toFixed(1),
        "walk x": +(r.walk / base.walk).toFixed(1),
        "ls x": +(r.ls / base.ls).toFixed(1),
      });
    }
    console.log(`core-share: host kernel FUSE (NOT a VM), relay over pipes, server ${from}`);
    console.log(
      `machine: ${cpus()[0]?.model} x${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}, accelerator: none (no guest)`,
    );
    console.table(table);
    console.log("x = time relative to the plain tmpfs directory backing the share (lower is better)");
    const results = {
      bench: "core-share",
      date: new Date().toISOString(),
      kind: "host kernel FUSE client + ShareServer over a stdio relay (not a VM)",
      accelerator: "none",
      machine: {
        cpu: cpus()[0]?.model,
        cores: cpus().length,
        memGiB: Math.round(totalmem() / 2 ** 30),
        node: process.version,
      },
      sizeMib: SIZE_MIB,
      files: FILES,
      rounds: ROUNDS,
      rawMs: rows,
      table,
    };
    mkdirSync(join(ROOT, "bench", "results"), { recursive: true });
    writeFileSync(join(ROOT, "bench", "results", "core-share.json"), `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(shm, { recursive: true, force: true });
  }
}

await main();
