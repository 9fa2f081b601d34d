// bench: pool paths vs the raw hypervisor backend, same run, same snapshot.
//   acquire from idle, cycle-restore (core: resume of a spare restored + greeted in the background;
//   also with the first exec) vs raw QEMU restore and vs the same steps done raw in the foreground,
//   exec(["true"]) vs agent ping on the same VM, idle PSS per VM (core vs raw restore), density.
//   npx lerna run build && node bench/core-pool.mjs [densityN=64]
import { join } from "node:path";
import {
  hypervisorResults,
  INTERNAL,
  idleCpuPercent,
  loadCore,
  memAvailable,
  pssOf,
  ROOT,
  registry,
  round,
  saveResults,
  summary,
  table,
  tcgCachePssOf,
} from "./core-lib.mjs";

const densityN = Number(process.argv[2] ?? process.env.DENSITY_N ?? 64);
setInterval(() => {}, 1 << 30); // raw agent calls are not core operations: keep the loop alive
const { Image } = await loadCore();
const { createKvmBackend } = await import(join(ROOT, "packages", "hypervisor-kvm", "dist", "index.js"));
const { connectAgent } = await import(join(ROOT, "packages", "agent-protocol", "dist", "index.js"));
const ref = `${registry()}/busybox:latest`;
const image = await Image.build({ ref });
await image.takeHandoff?.()?.stop();
const accel = image.meta.accel;
const snapVm = join(image.snapshotPath, "vm");
const overrides = {
  rootfs: join(image.snapshotPath, "rootfs.sqfs"),
  initrd: join(image.snapshotPath, "initramfs.cpio.gz"),
};
const out = { accel };
const rows = [["metric", "supermachine", "raw / peer", "ratio", "goal"]];
const ratio = (a, b) => (b ? round(a / b, 2) : null);

// 1. acquire from idle (dirty reuse: nothing to restore)
{
  const pool = await image.pool({ min: 1, max: 1, restoreOnRelease: false });
  const warm = await pool.acquire();
  await warm.release();
  const t = [];
  for (let i = 0; i < 2000; i++) {
    const s = performance.now();
    const vm = await pool.acquire();
    t.push((performance.now() - s) * 1000);
    await vm.release();
  }
  out.acquireIdleUs = summary(t);
  rows.push(["acquire from idle p50", `${out.acquireIdleUs.p50} µs`, "", "", "<= 50 µs"]);

  // 2. exec(["true"]) vs agent ping on the same VM
  const vm = await pool.acquire();
  const h = vm[INTERNAL]();
  const ping = [];
  const exec = [];
  for (let i = 0; i < 20; i++) {
    await h.agent.ping();
    await vm.exec({ argv: ["true"] });
  }
  for (let i = 0; i < 300; i++) {
    let s = performance.now();
    await h.agent.ping();
    ping.push((performance.now() - s) * 1000);
    s = performance.now();
    await vm.exec({ argv: ["true"] });
    exec.push((performance.now() - s) * 1000);
  }
  out.execTrueUs = summary(exec);
  out.agentPingUs = summary(ping);
  rows.push([
    "exec(['true']) round trip p50",
    `${out.execTrueUs.p50} µs`,
    `ping ${out.agentPingUs.p50} µs`,
    ratio(out.execTrueUs.p50, out.agentPingUs.p50),
    "<= 1.5x ping",
  ]);

  // The guest's own floor for one process, no agent involved: busybox sh in the guest runs a loop of
  // 100 `/bin/true` (fork + execve + exit + wait) and of 100 `(:)` subshells (fork + exit + wait),
  // timed with the guest's /proc/uptime (10 ms resolution over ~1 s loops). Median of 3 rounds.
  const guestLoopMs = async (body) => {
    const per = [];
    for (let r = 0; r < 3; r++) {
      const script = `i=0; s=$(cat /proc/uptime); while [ $i -lt 100 ]; do ${body}; i=$((i+1)); done; e=$(cat /proc/uptime); echo "$s $e"`;
      const o = await vm.exec({ argv: ["sh", "-c", script] });
      const [a, , b] = o.stdout.toString().trim().split(/\s+/).map(Number);
      per.push(((b - a) * 1000) / 100);
    }
    return round(per.sort((x, y) => x - y)[1], 2);
  };
  out.guestTrueLoopMs = await guestLoopMs("/bin/true");
  out.guestForkLoopMs = await guestLoopMs("(:)");
  rows.push([
    "guest floor: one /bin/true from sh in the guest (no agent) / one fork+exit",
    `${out.guestTrueLoopMs} ms / ${out.guestForkLoopMs} ms`,
    `ping ${out.agentPingUs.p50} µs`,
    ratio(out.guestTrueLoopMs * 1000, out.agentPingUs.p50),
    "",
  ]);
  await vm.release();
  await pool.shutdown();
}

// 3. cycle-restore: a fresh VM per acquire (core) vs raw backend restore of the same snapshot
{
  const backend = createKvmBackend({ warn: () => {} });
  const raw = [];
  const rawPrepared = [];
  for (let i = 0; i < 10; i++) {
    let s = performance.now();
    const v = await backend.restore(snapVm, overrides);
    raw.push(performance.now() - s);
    await v.stop();
    const prep = await backend.prepareRestore(snapVm, overrides);
    s = performance.now();
    const v2 = await prep.start();
    rawPrepared.push(performance.now() - s);
    await v2.stop();
  }
  // Where the time of a restore goes (same steps as core's pool create, with the public packages):
  // pre-started VMM start → agent hello answered → resume (clock + RNG reseed) answered.
  const bStart = [];
  const bHello = [];
  const bResume = [];
  const bFirstExec = [];
  for (let i = 0; i < 6; i++) {
    const prep = await backend.prepareRestore(snapVm, overrides);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    const v = await prep.start();
    const t1 = performance.now();
    const client = await connectAgent(await v.agentStream(), { helloTimeoutMs: 30_000 });
    const t2 = performance.now();
    await client.resume({});
    const t3 = performance.now();
    await client.exec({ argv: ["true"] });
    const t4 = performance.now();
    bStart.push(t1 - t0);
    bHello.push(t2 - t1);
    bResume.push(t3 - t2);
    bFirstExec.push(t4 - t3);
    client.close();
    await v.stop();
  }
  out.restoreBreakdownMs = { start: summary(bStart), hello: summary(bHello), resume: summary(bResume) };
  out.rawPreparedToResumedMs = summary(bStart.map((x, i) => x + bHello[i] + bResume[i]));
  out.rawFirstExecMs = summary(bFirstExec);
  out.rawResumedFirstExecMs = summary(bStart.map((x, i) => x + bHello[i] + bResume[i] + bFirstExec[i]));
  rows.push([
    "  breakdown p50: start / hello / resume",
    `${out.restoreBreakdownMs.start.p50} / ${out.restoreBreakdownMs.hello.p50} / ${out.restoreBreakdownMs.resume.p50} ms`,
    "",
    "",
    "",
  ]);

  const pool = await image.pool({ min: 0, max: 1, restoreOnRelease: true });
  const core = [];
  const coreWithExec = [];
  const coreFirstExec = [];
  for (let i = 0; i < 12; i++) {
    const s = performance.now();
    const vm = await pool.acquire();
    const d = performance.now() - s;
    await vm.exec({ argv: ["true"] });
    const e = performance.now() - s - d;
    if (i >= 2) {
      // the first acquires have no spare yet
      core.push(d);
      coreFirstExec.push(e);
      coreWithExec.push(d + e);
    }
    await vm.release();
    await new Promise((r) => setTimeout(r, 300)); // let the spare VMM pre-start, like an idle pool would
  }
  await pool.shutdown();
  out.cycleRestoreMs = summary(core);
  out.firstExecMs = summary(coreFirstExec);
  out.cycleWithFirstExecMs = summary(coreWithExec);
  out.rawRestoreMs = summary(raw);
  out.rawPreparedRestoreMs = summary(rawPrepared);
  rows.push([
    "cycle-restore vs raw pre-started + hello + resume",
    `${out.cycleRestoreMs.p50} ms`,
    `${out.rawPreparedToResumedMs.p50} ms`,
    ratio(out.cycleRestoreMs.p50, out.rawPreparedToResumedMs.p50),
    "<= 1.2x raw",
  ]);
  rows.push([
    "acquire + first exec(['true']) of a fresh VM vs raw pre-started + hello + resume + exec",
    `${out.cycleWithFirstExecMs.p50} ms (exec ${out.firstExecMs.p50})`,
    `${out.rawResumedFirstExecMs.p50} ms (exec ${out.rawFirstExecMs.p50})`,
    ratio(out.cycleWithFirstExecMs.p50, out.rawResumedFirstExecMs.p50),
    "",
  ]);
  rows.push([
    "cycle-restore (acquire, fresh VM) p50",
    `${out.cycleRestoreMs.p50} ms`,
    `raw restore ${out.rawRestoreMs.p50} ms / pre-started ${out.rawPreparedRestoreMs.p50} ms`,
    ratio(out.cycleRestoreMs.p50, out.rawRestoreMs.p50),
    "<= 1.2x raw",
  ]);

  // 4. idle PSS per VM: 4 pooled VMs vs 4 raw restores of the same snapshot
  const n = 4;
  const rawVms = [];
  for (let i = 0; i < n; i++) rawVms.push(await backend.restore(snapVm, overrides));
  await new Promise((r) => setTimeout(r, 2000));
  const rawPss = rawVms.map((v) => pssOf(v.pid)).filter((x) => x !== null);
  const rawTcg = rawVms.map((v) => tcgCachePssOf(v.pid)).filter((x) => x !== null);
  // The same raw VMs after the work every pooled VM does before hand-out (agent hello + resume, which
  // starts the image's workload): guest pages written and TCG code translated show up in PSS.
  const clients = [];
  for (const v of rawVms) {
    const c = await connectAgent(await v.agentStream(), { helloTimeoutMs: 30_000 });
    await c.resume({});
    clients.push(c);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const rawResumedPss = rawVms.map((v) => pssOf(v.pid)).filter((x) => x !== null);
  const rawResumedTcg = rawVms.map((v) => tcgCachePssOf(v.pid)).filter((x) => x !== null);
  const rawIdleCpu = await idleCpuPercent(
    rawVms.map((v) => v.pid),
    10_000,
  );
  for (const c of clients) c.close();
  for (const v of rawVms) await v.stop();
  const p2 = await image.pool({ min: n, max: n });
  const vms = [];
  for (let i = 0; i < n; i++) vms.push(await p2.acquire());
  await new Promise((r) => setTimeout(r, 2000));
  const corePss = vms.map((vm) => pssOf(vm[INTERNAL]().live.pid)).filter((x) => x !== null);
  const coreTcg = vms.map((vm) => tcgCachePssOf(vm[INTERNAL]().live.pid)).filter((x) => x !== null);
  const coreIdleCpu = await idleCpuPercent(
    vms.map((vm) => vm[INTERNAL]().live.pid),
    10_000,
  );
  for (const vm of vms) await vm.release();
  await p2.shutdown();
  const avg = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  out.idlePssMiB = round(avg(corePss) / 2 ** 20, 1);
  out.rawIdlePssMiB = round(avg(rawPss) / 2 ** 20, 1);
  out.rawResumedPssMiB = round(avg(rawResumedPss) / 2 ** 20, 1);
  // the part of each that is QEMU's TCG translation cache (no such cache under KVM/HVF)
  out.tcgCacheMiB = {
    core: round(avg(coreTcg) / 2 ** 20, 1),
    rawIdle: round(avg(rawTcg) / 2 ** 20, 1),
    rawResumed: round(avg(rawResumedTcg) / 2 ** 20, 1),
  };
  out.idleCpuPercent = round(coreIdleCpu, 2);
  out.rawResumedIdleCpuPercent = round(rawIdleCpu, 2);
  rows.push([
    "idle PSS per VM",
    `${out.idlePssMiB} MiB`,
    `raw idle ${out.rawIdlePssMiB} MiB / raw after hello+resume ${out.rawResumedPssMiB} MiB`,
    `${ratio(out.idlePssMiB, out.rawIdlePssMiB)} / ${ratio(out.idlePssMiB, out.rawResumedPssMiB)}`,
    "<= 1.05x raw",
  ]);
  rows.push([
    "idle CPU per VM (10 s, % of one core)",
    `${out.idleCpuPercent} %`,
    `raw restore after hello+resume ${out.rawResumedIdleCpuPercent} %`,
    ratio(out.idleCpuPercent, out.rawResumedIdleCpuPercent),
    "",
  ]);
}

// 5. density: N idle VMs
if (densityN > 0) {
  const before = memAvailable();
  const s = performance.now();
  const pool = await image.pool({ min: 0, max: densityN, restoreTimeoutMs: 120_000, acquireTimeoutMs: 0 });
  const vms = [];
  let failed = null;
  try {
    for (let i = 0; i < densityN; i++) vms.push(await pool.acquire());
  } catch (err) {
    failed = `${err.code ?? ""} ${err.message}`;
  }
  const fillMs = performance.now() - s;
  await new Promise((r) => setTimeout(r, 3000));
  const pss = vms.map((vm) => pssOf(vm[INTERNAL]().live.pid) ?? 0).reduce((a, b) => a + b, 0);
  const after = memAvailable();
  const alive = await Promise.all(
    vms.map((vm) =>
      vm.exec({ argv: ["true"] }).then(
        (r) => r.exitCode === 0,
        () => false,
      ),
    ),
  );
  out.density = {
    requested: densityN,
    running: vms.length,
    answering: alive.filter(Boolean).length,
    fillSeconds: round(fillMs / 1000, 1),
    totalPssMiB: round(pss / 2 ** 20, 0),
    memAvailableDropMiB: before && after ? round((before - after) / 2 ** 20, 0) : null,
    failed,
  };
  rows.push([
    `density: ${densityN} idle VMs`,
    `${vms.length} running, ${out.density.answering} answer exec`,
    `PSS total ${out.density.totalPssMiB} MiB, MemAvailable -${out.density.memAvailableDropMiB} MiB`,
    "",
    "64 fit in 24 GiB",
  ]);
  await Promise.all(vms.map((vm) => vm.release()));
  await pool.shutdown();
}

const hv = hypervisorResults();
if (hv) out.hypervisorBenchFile = hv;
console.log(`accelerator: ${accel}`);
table(rows);
if (!out.density) {
  // A run without the density part keeps the last measured density (it takes minutes on TCG).
  const { existsSync, readFileSync } = await import("node:fs");
  const { RESULTS } = await import("./core-lib.mjs");
  const prev = existsSync(RESULTS) ? JSON.parse(readFileSync(RESULTS, "utf8")).pool : undefined;
  if (prev?.density)
    out.density = { ...prev.density, measuredAt: prev.density.measuredAt ?? prev.measuredAt };
}
saveResults("pool", out);
process.exit(0);
