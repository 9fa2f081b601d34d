// bench: idle pooled VMs (issue 20), everything measured in one run on one snapshot (busybox fixture).
//   1. idle freezing before/after: the same pool with SM_POOL_IDLE_PAUSE=0 (VMs idle running) and with
//      freezing (the default: the VMM process SIGSTOPped): idle CPU per VM, PSS/USS/shared per VM, MemAvailable drop per VM,
//      acquire from idle (to the handle) and acquire + first exec(["true"]).
//   2. TCG translation cache size (SUPERMACHINE_TCG_TB_MIB): PSS/USS per idle VM and exec latency for
//      a few sizes.
//   3. density: N idle (frozen) VMs: fill time, memory, each acquired VM answering exec within 1 s.
//   4. the wake on one raw VM: exec after a thaw vs after QMP cont + resume vs on a running VM.
//   npx lerna run build && node bench/core-idle.mjs [densityN=256] [n=8] [tbSizes=0,16,32,64]
//   (densityN 0 skips the density part). Counting rules: PSS = /proc/<pid>/smaps_rollup Pss (shared pages
//   split among the processes mapping them); USS = Private_Clean + Private_Dirty (freed if the VM stops);
//   shared = Shared_Clean + Shared_Dirty (resident pages also mapped by another process, e.g. the
//   snapshot's memory file); MemAvailable drop = /proc/meminfo MemAvailable before − after, ÷ VMs.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  cpuSecondsOf,
  INTERNAL,
  loadCore,
  memAvailable,
  pct,
  RESULTS,
  ROOT,
  registry,
  round,
  saveResults,
  summary,
  table,
  tcgCachePssOf,
} from "./core-lib.mjs";

const densityN = Number(process.argv[2] ?? process.env.DENSITY_N ?? 256);
const n = Number(process.argv[3] ?? process.env.IDLE_N ?? 8);
const tbSizes = String(process.argv[4] ?? process.env.TB_SIZES ?? "0,16,32,64")
  .split(",")
  .map(Number);
const parts = new Set(String(process.env.IDLE_PARTS ?? "pause,tb,density,wake").split(","));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const note = (m) => process.stderr.write(`[core-idle ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
// direct agent calls (ping) are not user operations: nothing else keeps the event loop alive for them
setInterval(() => {}, 1 << 30);
const { Image } = await loadCore();
const ref = `${registry()}/busybox:latest`;
const image = await Image.build({ ref });
await image.takeHandoff?.()?.stop();
const accel = image.meta.accel;
// Parts not run this time (IDLE_PARTS) keep their last results.
const prev = existsSync(RESULTS) ? (JSON.parse(readFileSync(RESULTS, "utf8")).idle ?? {}) : {};
const out = {
  ...prev,
  accel,
  n,
  loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
};
const rows = [["metric", "frozen (this change)", "not frozen (SM_POOL_IDLE_PAUSE=0)", "ratio", "goal"]];
const MiB = 2 ** 20;
const avg = (a) => (a.length ? a.reduce((x, y) => x + y, 0) / a.length : Number.NaN);
const ratio = (a, b) => (b ? round(a / b, 2) : null);

/** smaps_rollup of a pid, in bytes: pss, uss (private), shared, rss. */
function smaps(pid) {
  try {
    const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(t)?.[1] ?? 0) * 1024;
    return {
      pss: kb("Pss"),
      uss: kb("Private_Clean") + kb("Private_Dirty"),
      shared: kb("Shared_Clean") + kb("Shared_Dirty"),
      rss: kb("Rss"),
    };
  } catch {
    return null;
  }
}

/** Fill a pool of `count` idle VMs; returns the pool, its fill time and MemAvailable before it. */
async function idlePool(count, extra = {}) {
  const before = memAvailable();
  const t0 = performance.now();
  const pool = await image.pool({
    min: count,
    max: count,
    restoreTimeoutMs: 180_000,
    acquireTimeoutMs: 0,
    ...extra,
  });
  while (pool.stats().idle < count) await sleep(100);
  const fillS = (performance.now() - t0) / 1000;
  await sleep(3000); // settle: freezes done, background work of the guests over
  return { pool, fillS, before };
}

/** Memory + CPU of the VMM processes `pids` over `ms`. */
async function measureIdle(pids, ms, before) {
  const mem = pids.map(smaps).filter(Boolean);
  const after = memAvailable();
  const cpu0 = pids.map(cpuSecondsOf);
  await sleep(ms);
  const cpu = pids.map((p, i) => (cpuSecondsOf(p) ?? 0) - (cpu0[i] ?? 0));
  return {
    cpuPercentPerVm: round((avg(cpu) / (ms / 1000)) * 100, 3),
    pssMiB: round(avg(mem.map((m) => m.pss)) / MiB, 1),
    ussMiB: round(avg(mem.map((m) => m.uss)) / MiB, 1),
    sharedMiB: round(avg(mem.map((m) => m.shared)) / MiB, 1),
    tcgCacheMiB: round(avg(pids.map((p) => tcgCachePssOf(p) ?? 0)) / MiB, 1),
    memAvailableDropPerVmMiB: before && after ? round((before - after) / pids.length / MiB, 1) : null,
  };
}

/** The pids of the QEMU processes this process started (the VMs of the one pool alive at a time). */
function qemuChildren() {
  const pids = [];
  const me = process.pid;
  for (const d of readFileSync(`/proc/${me}/task/${me}/children`, "utf8").trim().split(/\s+/)) {
    if (!d) continue;
    try {
      const comm = readFileSync(`/proc/${d}/comm`, "utf8").trim();
      if (comm.startsWith("qemu")) pids.push(Number(d));
    } catch {}
  }
  return pids;
}

/** Idle CPU and memory of `n` idle VMs for one pause setting. */
async function idleScenario(pause) {
  process.env.SM_POOL_IDLE_PAUSE = pause ? "1" : "0";
  note(`pause ${pause}: ${n} idle VMs`);
  const { pool, fillS, before } = await idlePool(n, { restoreOnRelease: false });
  const pids = qemuChildren();
  const r = { fillSeconds: round(fillS, 1), vms: pids.length, ...(await measureIdle(pids, 10_000, before)) };
  await pool.shutdown();
  return r;
}

/** Keep this process busy (its event loop turning, never sleeping) for `ms`: a server under load. */
async function busy(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end) await new Promise((r) => setImmediate(r));
}

/**
 * Acquire from idle, both settings in one loop (a pool of each alive at once, used alternately, so the
 * machine's load hits both alike). Dirty reuse: the same VM goes idle (frozen) again after each release.
 * Two ways to wait before each acquire: this process asleep for 20 ms (nothing else to do: the first
 * syscall and the first touch of code after the sleep pay what the host charges for waking a process),
 * and this process busy for 20 ms (its event loop turning: a server under load). Also the host's
 * floor: one syscall (kill(pid, 0)) right after a 20 ms sleep.
 */
async function acquireScenarios(rounds) {
  note("acquire from idle: frozen and not frozen, alternating");
  const pools = [];
  for (const pause of [false, true]) {
    process.env.SM_POOL_IDLE_PAUSE = pause ? "1" : "0";
    const pool = await image.pool({ min: 1, max: 1, restoreOnRelease: false });
    const vm0 = await pool.acquire();
    await vm0.exec({ argv: ["true"] });
    await vm0.release();
    pools.push({
      pool,
      acq: [],
      acqBusy: [],
      first: [],
      second: [],
      ping: [],
      fast: [],
      alive: [],
      frozen: 0,
    });
  }
  const h = (vm) => vm[INTERNAL]();
  const floor = [];
  const stateOf = (pid) => readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0];
  for (let i = 0; i < rounds; i++) {
    await sleep(20);
    let t = performance.now();
    process.kill(process.pid, 0);
    floor.push((performance.now() - t) * 1000);
    for (const p of pools) {
      await sleep(20); // the released VM is frozen (freezing starts one turn after release)
      const s = performance.now();
      const vm = await p.pool.acquire();
      const a = performance.now();
      await vm.exec({ argv: ["true"] });
      const e = performance.now();
      await vm.exec({ argv: ["true"] });
      const w = performance.now();
      await h(vm).agent.ping();
      p.ping.push((performance.now() - w) * 1000);
      p.second.push((w - e) * 1000);
      p.acq.push((a - s) * 1000);
      p.first.push((e - s) * 1000);
      // the liveness check a frozen VM gets at acquire (one read of /proc/<pid>/task/<pid>/stat)
      const live = h(vm).live;
      t = performance.now();
      live.alive?.();
      p.alive.push((performance.now() - t) * 1000);
      await vm.release();
      // the same with this process busy meanwhile (the VM frozen all the same: checked)
      await busy(20);
      if (stateOf(live.pid) === "T") p.frozen++;
      t = performance.now();
      const vm2 = await p.pool.acquire();
      p.acqBusy.push((performance.now() - t) * 1000);
      await vm2.exec({ argv: ["true"] });
      await vm2.release();
    }
  }
  // pure acquire → release loop (no exec, no wait: the VM is released before its freeze starts)
  for (const p of pools) {
    for (let i = 0; i < 500; i++) {
      const s = performance.now();
      const vm = await p.pool.acquire();
      p.fast.push((performance.now() - s) * 1000);
      await vm.release();
    }
    await p.pool.shutdown();
  }
  return pools.map((p) => ({
    acquireIdleUs: summary(p.acq),
    acquireBusyUs: summary(p.acqBusy),
    frozenBeforeBusyAcquire: p.frozen,
    firstSyscallAfterSleepUs: summary(floor),
    acquireLoopUs: summary(p.fast),
    acquireFirstExecUs: summary(p.first),
    execAwakeUs: summary(p.second),
    agentPingUs: summary(p.ping),
    aliveCheckUs: summary(p.alive),
    // what the first exec after acquire costs more than the next one on the same VM (the wake)
    firstMinusSecondUs: round(
      pct(
        p.first.map((x, i) => x - p.second[i]),
        50,
      ),
      0,
    ),
  }));
}

// 1. before/after, same run: not frozen first, then frozen
if (parts.has("pause")) {
  const off = await idleScenario(false);
  const on = await idleScenario(true);
  const [offAcq, onAcq] = await acquireScenarios(Number(process.env.ACQUIRE_ROUNDS ?? 100));
  Object.assign(off, offAcq);
  Object.assign(on, onAcq);
  out.pauseOff = off;
  out.pauseOn = on;
  /** A row comparing the p50 of one µs summary of both settings. */
  const p50Row = (label, key, goal = "", withRatio = true) => [
    label,
    `${on[key].p50} µs`,
    `${off[key].p50} µs`,
    withRatio ? ratio(on[key].p50, off[key].p50) : "",
    goal,
  ];
  rows.push(
    [
      "idle CPU per VM (10 s, % of a core)",
      `${on.cpuPercentPerVm} %`,
      `${off.cpuPercentPerVm} %`,
      ratio(on.cpuPercentPerVm, off.cpuPercentPerVm),
      "0",
    ],
    ["PSS per idle VM", `${on.pssMiB} MiB`, `${off.pssMiB} MiB`, ratio(on.pssMiB, off.pssMiB), ""],
    ["USS (private) per idle VM", `${on.ussMiB} MiB`, `${off.ussMiB} MiB`, ratio(on.ussMiB, off.ussMiB), ""],
    ["shared (resident, mapped by others) per VM", `${on.sharedMiB} MiB`, `${off.sharedMiB} MiB`, "", ""],
    ["  of which TCG translation cache (PSS)", `${on.tcgCacheMiB} MiB`, `${off.tcgCacheMiB} MiB`, "", ""],
    [
      "MemAvailable drop per VM",
      `${on.memAvailableDropPerVmMiB} MiB`,
      `${off.memAvailableDropPerVmMiB} MiB`,
      "",
      "",
    ],
    p50Row("acquire from idle → handle p50", "acquireIdleUs", "≤ 50 µs"),
    p50Row(
      `acquire from idle → handle p50, this process busy meanwhile (${on.frozenBeforeBusyAcquire} of ${on.acquireBusyUs.n} VMs frozen at the acquire)`,
      "acquireBusyUs",
      "≤ 50 µs",
    ),
    [
      "host floor: one syscall (kill(pid, 0)) right after a 20 ms sleep p50",
      `${on.firstSyscallAfterSleepUs.p50} µs`,
      "",
      "",
      "",
    ],
    p50Row("acquire → release loop p50 (handle path)", "acquireLoopUs", "≤ 50 µs", false),
    p50Row("acquire + first exec(['true']) p50", "acquireFirstExecUs"),
    p50Row("second exec(['true']) on the same VM p50", "execAwakeUs", "", false),
    [
      "first − second exec p50 (the wake), in agent round trips (ping p50)",
      `${on.firstMinusSecondUs} µs`,
      `${off.firstMinusSecondUs} µs (ping ${off.agentPingUs.p50} µs)`,
      round((on.firstMinusSecondUs - off.firstMinusSecondUs) / off.agentPingUs.p50, 2),
      "≤ 1 RTT more",
    ],
    [
      "liveness check at acquire (/proc/<pid>/task/<pid>/stat read) p50",
      `${on.aliveCheckUs.p50} µs`,
      "",
      "",
      "",
    ],
  );
  delete process.env.SM_POOL_IDLE_PAUSE;
  saveResults("idle", out); // saved after each part: a density run can take minutes
}

// 2. TCG translation cache size: memory per idle (frozen) VM, and exec latency
if (accel === "tcg" && parts.has("tb")) {
  out.tbSize = [];
  for (const tb of tbSizes) {
    process.env.SUPERMACHINE_TCG_TB_MIB = String(tb);
    note(`tb-size ${tb}`);
    const k = Math.min(n, 4);
    const { pool, before } = await idlePool(k, { restoreOnRelease: false });
    const pids = qemuChildren();
    const m = await measureIdle(pids, 2000, before);
    // exec latency on one woken VM: first exec (wake + exec), then a mixed command set
    const vm = await pool.acquire();
    const s = performance.now();
    await vm.exec({ argv: ["true"] });
    const firstMs = performance.now() - s;
    const ex = [];
    for (let i = 0; i < 40; i++) {
      const t = performance.now();
      await vm.exec({ argv: ["sh", "-c", "ls / >/dev/null; echo $((1+2))"] });
      ex.push(performance.now() - t);
    }
    await vm.release();
    await pool.shutdown();
    const r = { tbMiB: tb, ...m, firstExecMs: round(firstMs, 1), shExecMs: summary(ex) };
    out.tbSize.push(r);
    rows.push([
      `tb-size ${tb || "QEMU default"}: PSS / USS / TCG cache per idle VM; sh exec p50`,
      `${m.pssMiB} / ${m.ussMiB} / ${m.tcgCacheMiB} MiB; ${r.shExecMs.p50} ms`,
      "",
      "",
      "",
    ]);
  }
  delete process.env.SUPERMACHINE_TCG_TB_MIB;
  saveResults("idle", out);
}

// 3. density: N idle (frozen) VMs, then each acquired and exec'd (time from acquire to the answer)
if (densityN > 0 && parts.has("density")) {
  const before = memAvailable();
  const t0 = performance.now();
  let pool;
  let failed = null;
  try {
    pool = await image.pool({
      min: densityN,
      max: densityN,
      restoreTimeoutMs: 300_000,
      acquireTimeoutMs: 0,
      restoreOnRelease: false,
    });
    let last = -1;
    let lastChange = performance.now();
    while (pool.stats().idle < densityN) {
      await sleep(250);
      const s = pool.stats();
      if (s.idle !== last) {
        last = s.idle;
        lastChange = performance.now();
      } else if (performance.now() - lastChange > 120_000) throw new Error(`stuck at ${s.idle} idle VMs`);
    }
  } catch (err) {
    failed = `${err.code ?? ""} ${err.message}`;
  }
  const fillS = (performance.now() - t0) / 1000;
  await sleep(5000);
  const pids = qemuChildren();
  const mem = pids.map(smaps).filter(Boolean);
  const after = memAvailable();
  const cpu0 = pids.map(cpuSecondsOf);
  await sleep(5000);
  const cpuTotal = pids.reduce((a, p, i) => a + ((cpuSecondsOf(p) ?? 0) - (cpu0[i] ?? 0)), 0);
  const lat = [];
  let answering = 0;
  if (pool && !failed) {
    // Each VM in turn (FIFO: the oldest idle first): acquire, exec, release (it is frozen again), so
    // every one answers while the others stay idle — as in a pool serving one request at a time.
    const seen = new Set();
    for (let i = 0; i < densityN; i++) {
      const s = performance.now();
      const vm = await pool.acquire();
      const r = await vm.exec({ argv: ["true"] }).catch(() => null);
      lat.push(performance.now() - s);
      if (r?.exitCode === 0) answering++;
      seen.add(vm[INTERNAL]()?.live.pid);
      await vm.release();
    }
    out.densityDistinctVms = seen.size;
  }
  const within1s = lat.filter((x) => x <= 1000).length;
  out.density = {
    requested: densityN,
    running: pids.length,
    fillSeconds: round(fillS, 1),
    totalPssMiB: round(mem.reduce((a, m) => a + m.pss, 0) / MiB, 0),
    totalUssMiB: round(mem.reduce((a, m) => a + m.uss, 0) / MiB, 0),
    perVmPssMiB: round(avg(mem.map((m) => m.pss)) / MiB, 1),
    perVmUssMiB: round(avg(mem.map((m) => m.uss)) / MiB, 1),
    memAvailableDropMiB: before && after ? round((before - after) / MiB, 0) : null,
    idleCpuPercentTotal: round((cpuTotal / 5) * 100, 2),
    answering,
    acquireToExecMs: lat.length
      ? { ...summary(lat), max: round(Math.max(...lat)), p99: round(pct(lat, 99)) }
      : null,
    within1s,
    failed,
  };
  rows.push([
    `density: ${densityN} idle frozen VMs`,
    `${pids.length} running in ${out.density.fillSeconds} s; ${answering} answer, ${within1s} within 1 s of acquire`,
    `PSS ${out.density.totalPssMiB} MiB, USS ${out.density.totalUssMiB} MiB, MemAvailable −${out.density.memAvailableDropMiB} MiB, CPU ${out.density.idleCpuPercentTotal} % total`,
    "",
    "256, each ≤ 1 s",
  ]);
  await pool?.shutdown();
}

// 4. the wake itself, before/after this change on one raw VM (the public hypervisor and agent-protocol
// packages, the same snapshot): each round waits 20 ms, then times one exec(["true"]) on a VM that ran
// all along, on one thawed from a freeze (SIGCONT, then the exec: this change), and on one continued
// from a QMP stop (cont + agent resume {time, entropy} + the exec pipelined: the wake before).
if (parts.has("wake")) {
  note("wake: running vs freeze/thaw vs QMP stop/cont + resume, one raw VM");
  const { createKvmBackend } = await import(join(ROOT, "packages", "hypervisor-kvm", "dist", "index.js"));
  const { connectAgent } = await import(join(ROOT, "packages", "agent-protocol", "dist", "index.js"));
  const backend = createKvmBackend({ warn: () => {} });
  const v = await backend.restore(join(image.snapshotPath, "vm"), {
    rootfs: join(image.snapshotPath, "rootfs.sqfs"),
    initrd: join(image.snapshotPath, "initramfs.cpio.gz"),
  });
  const client = await connectAgent(await v.agentStream(), { helloTimeoutMs: 30_000 });
  await client.resume({});
  await client.exec({ argv: ["true"] });
  const w = { running: [], thawed: [], qmp: [], ping: [] };
  const execUs = async (before) => {
    const t = performance.now();
    await Promise.all([before?.(), client.exec({ argv: ["true"] })]);
    return (performance.now() - t) * 1000;
  };
  const rounds = Number(process.env.WAKE_ROUNDS ?? 60);
  for (let i = 0; i < rounds; i++) {
    await sleep(20);
    w.running.push(await execUs());
    v.freeze();
    await sleep(20);
    w.thawed.push(await execUs(() => v.thaw()));
    await v.pause();
    await sleep(20);
    w.qmp.push(await execUs(() => Promise.all([v.resume(), client.resume({})])));
    await sleep(20);
    const t = performance.now();
    await client.ping();
    w.ping.push((performance.now() - t) * 1000);
  }
  client.close();
  await v.stop();
  out.wake = {
    rounds,
    execAfterRunningUs: summary(w.running),
    execAfterThawUs: summary(w.thawed),
    execAfterQmpContResumeUs: summary(w.qmp),
    agentPingUs: summary(w.ping),
  };
  const wk = out.wake;
  const rtt = (x) => round((x - wk.execAfterRunningUs.p50) / wk.agentPingUs.p50, 2);
  rows.push(
    [
      "wake (raw VM): exec p50 after 20 ms idle — thawed (this change) / running",
      `${wk.execAfterThawUs.p50} µs`,
      `running ${wk.execAfterRunningUs.p50} µs; ping ${wk.agentPingUs.p50} µs`,
      `${rtt(wk.execAfterThawUs.p50)} RTT more`,
      "≤ 1 RTT more",
    ],
    [
      "wake (raw VM): exec p50 after 20 ms idle — QMP stop, then cont + resume (before)",
      `${wk.execAfterQmpContResumeUs.p50} µs`,
      "",
      `${rtt(wk.execAfterQmpContResumeUs.p50)} RTT more`,
      "",
    ],
  );
  saveResults("idle", out);
}

console.log(`accelerator: ${accel}; load average at start ${out.loadavg} (shared machine)`);
table(rows);
saveResults("idle", out);
process.exit(0);
