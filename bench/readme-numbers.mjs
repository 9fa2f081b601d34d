// Regenerates the "Measured numbers" section of the root README.md from bench/results/*.json.
// The numbers are never typed by hand: run the benches (each writes its JSON), then
//   node bench/readme-numbers.mjs
// Missing result files are listed as "not measured" rather than invented.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const load = (name) => {
  const p = join(root, "bench", "results", `${name}.json`);
  return existsSync(p) ? JSON.parse(readFileSync(p, "utf8")) : undefined;
};
const f = (n, d = 1) => (typeof n === "number" && Number.isFinite(n) ? n.toFixed(d) : "?");
const x = (a, b) => (typeof a === "number" && typeof b === "number" && b > 0 ? `${(a / b).toFixed(2)}×` : "");

const rows = [];
const row = (area, metric, ours, baseline, ratio, goal, bench) =>
  rows.push(`| ${area} | ${metric} | ${ours} | ${baseline} | ${ratio} | ${goal} | \`${bench}\` |`);
const missing = [];

const core = load("core");
if (core) {
  const b = core.build ?? {};
  const p = core.pool ?? {};
  if (b.cacheHitMs)
    row(
      "core",
      "cache-hit `Image.build` p50",
      `${f(b.cacheHitMs.p50, 2)} ms`,
      "",
      "",
      "≤ 5 ms",
      "bench/core-build.mjs",
    );
  if (b.coldBakeMs)
    row("core", "cold bake (busybox)", `${f(b.coldBakeMs / 1000)} s`, "", "", "", "bench/core-build.mjs");
  if (p.acquireIdleUs)
    row(
      "core",
      "acquire from idle p50",
      `${f(p.acquireIdleUs.p50)} µs`,
      "",
      "",
      "≤ 50 µs",
      "bench/core-pool.mjs",
    );
  if (p.cycleRestoreMs && p.rawRestoreMs)
    row(
      "core",
      "cycle-restore p50",
      `${f(p.cycleRestoreMs.p50)} ms`,
      `raw QEMU restore ${f(p.rawRestoreMs.p50)} ms`,
      x(p.cycleRestoreMs.p50, p.rawRestoreMs.p50),
      "≤ 1.2×",
      "bench/core-pool.mjs",
    );
  if (p.cycleRestoreMs && p.rawPreparedToResumedMs)
    row(
      "core",
      "cycle-restore p50 vs the same raw steps",
      `${f(p.cycleRestoreMs.p50)} ms`,
      `raw pre-started restore + hello + resume ${f(p.rawPreparedToResumedMs.p50)} ms`,
      x(p.cycleRestoreMs.p50, p.rawPreparedToResumedMs.p50),
      "≤ 1.2×",
      "bench/core-pool.mjs",
    );
  if (p.cycleWithFirstExecMs && p.rawResumedFirstExecMs)
    row(
      "core",
      'acquire of a fresh VM + first `exec(["true"])` p50',
      `${f(p.cycleWithFirstExecMs.p50)} ms`,
      `raw pre-started restore + hello + resume + exec ${f(p.rawResumedFirstExecMs.p50)} ms`,
      x(p.cycleWithFirstExecMs.p50, p.rawResumedFirstExecMs.p50),
      "",
      "bench/core-pool.mjs",
    );
  if (p.execTrueUs && p.agentPingUs)
    row(
      "core",
      '`exec(["true"])` round trip p50',
      `${f(p.execTrueUs.p50 / 1000, 2)} ms`,
      `agent ping ${f(p.agentPingUs.p50 / 1000, 2)} ms`,
      x(p.execTrueUs.p50, p.agentPingUs.p50),
      "≤ 1.5×",
      "bench/core-pool.mjs",
    );
  if (p.idlePssMiB)
    row(
      "core",
      "PSS per acquired VM doing nothing (awake)",
      `${f(p.idlePssMiB)} MiB`,
      p.rawIdlePssMiB ? `raw QEMU restore ${f(p.rawIdlePssMiB)} MiB` : "",
      x(p.idlePssMiB, p.rawIdlePssMiB),
      "≤ 1.05×",
      "bench/core-pool.mjs",
    );
  if (p.idlePssMiB && p.rawResumedPssMiB)
    row(
      "core",
      "PSS per acquired VM doing nothing vs raw VM after hello + resume",
      `${f(p.idlePssMiB)} MiB`,
      `raw ${f(p.rawResumedPssMiB)} MiB`,
      x(p.idlePssMiB, p.rawResumedPssMiB),
      "≤ 1.05×",
      "bench/core-pool.mjs",
    );
  if (p.density)
    row(
      "core",
      `density: ${p.density.requested} idle VMs`,
      `${p.density.answering}/${p.density.requested} answering, ${f(p.density.totalPssMiB, 0)} MiB PSS total`,
      "",
      "",
      "64 fit in 24 GiB",
      "bench/core-pool.mjs",
    );
  const idle = core.idle;
  if (idle?.pauseOn && idle.pauseOff) {
    const on = idle.pauseOn;
    const off = idle.pauseOff;
    row(
      "core idle (issue 20)",
      `idle CPU per pooled VM (${idle.n} VMs, 10 s): frozen vs not (\`SM_POOL_IDLE_PAUSE=0\`)`,
      `${f(on.cpuPercentPerVm, 3)} % of a core`,
      `not frozen ${f(off.cpuPercentPerVm, 2)} %`,
      x(on.cpuPercentPerVm, off.cpuPercentPerVm),
      "0",
      "bench/core-idle.mjs",
    );
    row(
      "core idle (issue 20)",
      "per idle VM: PSS / USS (private) / shared resident / MemAvailable drop",
      `${f(on.pssMiB)} / ${f(on.ussMiB)} / ${f(on.sharedMiB)} / ${f(on.memAvailableDropPerVmMiB)} MiB`,
      `not frozen ${f(off.pssMiB)} / ${f(off.ussMiB)} / ${f(off.sharedMiB)} / ${f(off.memAvailableDropPerVmMiB)} MiB`,
      x(on.pssMiB, off.pssMiB),
      "",
      "bench/core-idle.mjs",
    );
    row(
      "core idle (issue 20)",
      "acquire of a frozen VM → handle p50 (after this process slept 20 ms) / tight acquire-release loop p50",
      `${f(on.acquireIdleUs.p50)} / ${f(on.acquireLoopUs.p50)} µs`,
      `not frozen ${f(off.acquireIdleUs.p50)} / ${f(off.acquireLoopUs.p50)} µs${on.firstSyscallAfterSleepUs ? `; host: one syscall after a 20 ms sleep ${f(on.firstSyscallAfterSleepUs.p50)} µs` : ""}`,
      x(on.acquireIdleUs.p50, off.acquireIdleUs.p50),
      "≤ 50 µs",
      "bench/core-idle.mjs",
    );
    if (on.acquireBusyUs)
      row(
        "core idle (issue 20)",
        `acquire of a frozen VM → handle p50, this process busy for the 20 ms (${on.frozenBeforeBusyAcquire} of ${on.acquireBusyUs.n} frozen at the acquire)`,
        `${f(on.acquireBusyUs.p50)} µs`,
        `not frozen ${f(off.acquireBusyUs.p50)} µs`,
        x(on.acquireBusyUs.p50, off.acquireBusyUs.p50),
        "≤ 50 µs",
        "bench/core-idle.mjs",
      );
    row(
      "core idle (issue 20)",
      "first exec after acquire − second exec (the wake) p50",
      `${f(on.firstMinusSecondUs / 1000, 2)} ms`,
      `not frozen ${f(off.firstMinusSecondUs / 1000, 2)} ms; agent ping ${f(off.agentPingUs.p50 / 1000, 2)} ms`,
      "",
      "≤ 1 agent round trip more",
      "bench/core-idle.mjs",
    );
  }
  if (idle?.wake) {
    const w = idle.wake;
    const rtt = (x) => f((x - w.execAfterRunningUs.p50) / w.agentPingUs.p50, 2);
    row(
      "core idle (issue 20)",
      "the wake on one raw VM: exec(['true']) p50 after 20 ms idle — thawed (SIGCONT) / QMP `cont` + agent `resume` (before)",
      `${f(w.execAfterThawUs.p50 / 1000, 2)} ms (${rtt(w.execAfterThawUs.p50)} RTT more) / ${f(w.execAfterQmpContResumeUs.p50 / 1000, 2)} ms (${rtt(w.execAfterQmpContResumeUs.p50)} RTT more)`,
      `running ${f(w.execAfterRunningUs.p50 / 1000, 2)} ms; agent ping ${f(w.agentPingUs.p50 / 1000, 2)} ms`,
      "",
      "≤ 1 agent round trip more",
      "bench/core-idle.mjs",
    );
  }
  for (const t of idle?.tbSize ?? [])
    row(
      "core idle (issue 20)",
      `TCG \`tb-size\` ${t.tbMiB || "QEMU default (1 GiB)"}: PSS / USS / TCG cache per idle VM; \`sh -c\` exec p50`,
      `${f(t.pssMiB)} / ${f(t.ussMiB)} / ${f(t.tcgCacheMiB)} MiB; ${f(t.shExecMs.p50)} ms`,
      "",
      "",
      "",
      "bench/core-idle.mjs",
    );
  if (idle?.density) {
    const d = idle.density;
    row(
      "core idle (issue 20)",
      `density: ${d.requested} idle frozen VMs`,
      `${d.running} running, filled in ${f(d.fillSeconds)} s; ${d.answering} answer exec, ${d.within1s} within 1 s of acquire (p50 ${f(d.acquireToExecMs?.p50, 0)} ms, max ${f(d.acquireToExecMs?.max, 0)} ms)`,
      `PSS ${f(d.totalPssMiB, 0)} MiB, USS ${f(d.totalUssMiB, 0)} MiB, MemAvailable −${f(d.memAvailableDropMiB, 0)} MiB`,
      "",
      "256, each ≤ 1 s",
      "bench/core-idle.mjs",
    );
  }
  for (const l of core.throughput?.levels ?? [])
    row(
      "core throughput (issue 20)",
      `fresh-sandbox cycles/s (acquire → exec → release, restoreOnRelease), ${l.callers} caller${l.callers > 1 ? "s" : ""}`,
      `${f(l.core.perSecond, 2)}/s (not frozen ${f(l.coreNoPause.perSecond, 2)}/s)${l.core.vmmCpuMsPerCycle ? `; VMM CPU ${l.core.vmmCpuMsPerCycle} ms/cycle` : ""}`,
      `raw QEMU restore ${f(l.raw.perSecond, 2)}/s${l.raw.vmmCpuMsPerCycle ? `; VMM CPU ${l.raw.vmmCpuMsPerCycle} ms/cycle` : ""}`,
      x(l.core.perSecond, l.raw.perSecond),
      "≥ 0.8×",
      "bench/core-throughput.mjs",
    );
  const bake = core.bake;
  if (bake?.phasesMs) {
    /** One row: the p50 of each phase of `phases` (ms summaries), in seconds. */
    const phasesRow = (what, phases) =>
      row(
        "core bake (issue 20)",
        `${what}, phases p50 (${Object.keys(phases).join(" / ")})`,
        `${Object.values(phases)
          .map((v) => f(v.p50 / 1000, 2))
          .join(" / ")} s`,
        "",
        "",
        "",
        "bench/core-bake.mjs",
      );
    phasesRow("cold bake", bake.phasesMs);
    if (bake.coldPullPhasesMs && Object.keys(bake.coldPullPhasesMs).length)
      phasesRow("bake with an empty cache root", bake.coldPullPhasesMs);
    row(
      "core bake (issue 20)",
      `boot → ready → capture p50 (${bake.rounds} rounds)`,
      `${f(bake.coreBootToCaptureMs.p50 / 1000, 2)} s`,
      `raw hypervisor ${f(bake.rawBootToCaptureMs.p50 / 1000, 2)} s`,
      bake.perRoundRatios
        ? `${f(bake.ratio, 2)}× (median of per-round ratios ${bake.perRoundRatios.map((r) => f(r, 2)).join(", ")})`
        : x(bake.coreBootToCaptureMs.p50, bake.rawBootToCaptureMs.p50),
      "≤ 1.1×",
      "bench/core-bake.mjs",
    );
  }
} else missing.push("core");

const hv = load("hypervisor");
if (hv) {
  row(
    "hypervisor (x86_64)",
    "cold boot to agent ready (median)",
    `${f(hv.coldBootToAgentReadyMsMedian / 1000)} s`,
    "",
    "",
    "",
    "bench/hypervisor-raw.mjs",
  );
  row(
    "hypervisor (x86_64)",
    "restore to agent ready (median)",
    `${f(hv.restoreToAgentReadyMsMedian)} ms`,
    "",
    "",
    "",
    "bench/hypervisor-raw.mjs",
  );
  row(
    "hypervisor (x86_64)",
    "pre-started restore to agent ready",
    `${f(hv.preStartedRestoreToAgentReadyMsMedian)} ms`,
    "",
    "",
    "",
    "bench/hypervisor-raw.mjs",
  );
  if (hv.idleRestoredPssMiBMedian)
    row(
      "hypervisor (x86_64)",
      "idle PSS per restored VM",
      `${f(hv.idleRestoredPssMiBMedian)} MiB`,
      "",
      "",
      "",
      "bench/hypervisor-raw.mjs",
    );
} else missing.push("hypervisor");
// Live host shares in a VM (core.json "mounts"): share vs the guest's own tmpfs, same VM, same run.
const mnt = core?.mounts;
if (mnt?.ms) {
  const label = {
    read: `read ${mnt.mib} MiB`,
    write: `write ${mnt.mib} MiB`,
    stat: `\`ls -l\` of ${mnt.files} files`,
    walk: "tree walk (5000 files, 100 dirs)",
  };
  for (const k of ["read", "write", "stat", "walk"]) {
    const m = mnt.ms[k];
    if (!m) continue;
    row(
      "core mounts (in VM)",
      `${label[k]}: share / share with \`cacheTtlMs: 1000\``,
      `${f(m.share / 1000, 2)} s / ${f(m.shareTtl1s / 1000, 2)} s`,
      `guest tmpfs ${f(m.tmpfs / 1000, 2)} s`,
      `${x(m.share, m.tmpfs)} / ${x(m.shareTtl1s, m.tmpfs)}`,
      "",
      "bench/core-mounts.mjs",
    );
  }
} else missing.push("core mounts");

// Guest network (core.json "network"): policy "public" vs the same guest/image/transfer with network
// "nat" (no policy), same run, interleaved rounds.
const net = core?.network;
if (net?.throughputMiBps?.guestNoPolicyDownload) {
  const t = net.throughputMiBps;
  const pm = net.ratioPairedMedian ?? {};
  const how = `busybox nc, ${net.mib} MiB, best of ${net.rounds}`;
  row(
    "core network (in VM)",
    `TCP download / upload from the guest to a netns test host, policy \`"public"\` (${how})`,
    `${f(t.guestDownload)} / ${f(t.guestUpload)} MiB/s`,
    `same guest, no policy (\`"nat"\`) ${f(t.guestNoPolicyDownload)} / ${f(t.guestNoPolicyUpload)} MiB/s`,
    `${x(t.guestDownload, t.guestNoPolicyDownload)} / ${x(t.guestUpload, t.guestNoPolicyUpload)} (median of rounds ${f(pm.downloadVsNoPolicy, 2)}× / ${f(pm.uploadVsNoPolicy, 2)}×)`,
    "≥ 0.7×",
    "bench/core-network.mjs",
  );
  row(
    "core network (in VM)",
    `TCP connect latency, policy \`"public"\` (${net.connects} connects)`,
    `${f(net.connectMs.guest, 1)} ms`,
    `no policy (\`"nat"\`) ${f(net.connectMs.guestNoPolicy, 1)} ms`,
    x(net.connectMs.guest, net.connectMs.guestNoPolicy),
    "",
    "bench/core-network.mjs",
  );
} else missing.push("core network");

const cs = load("core-share");
if (cs?.rawMs) {
  const t = cs.rawMs.tmpfs;
  const z = cs.rawMs["share (ttl 0)"];
  if (t && z)
    row(
      "core share server (host kernel FUSE, no VM)",
      `stat ${cs.files} files / tree walk`,
      `${f(z.stat / 1000, 2)} s / ${f(z.walk / 1000, 2)} s`,
      `host tmpfs ${f(t.stat / 1000, 2)} s / ${f(t.walk / 1000, 2)} s`,
      `${x(z.stat, t.stat)} / ${x(z.walk, t.walk)}`,
      "",
      "bench/core-share.mjs",
    );
} else missing.push("core-share");

const hva = load("hypervisor-aarch64");
if (hva)
  row(
    "hypervisor (aarch64, hvf machine model)",
    "cold boot to agent ready (median)",
    `${f(hva.coldBootToAgentReadyMsMedian / 1000)} s`,
    "",
    "",
    "",
    "bench/hypervisor-raw.mjs",
  );

const ap = load("agent-protocol");
if (ap) {
  row(
    "agent-protocol",
    "ping p50 over a Unix socket (TS peer)",
    `${f(ap.protocol?.ping?.p50us)} µs`,
    `raw socket echo ${f(ap.raw?.ping?.p50us)} µs`,
    x(ap.protocol?.ping?.p50us, ap.raw?.ping?.p50us),
    "",
    "bench/agent-protocol-rtt.mjs",
  );
  row(
    "agent-protocol",
    "1 GiB stream",
    `${f(ap.protocol?.stream?.mibps, 0)} MiB/s`,
    `raw relay ${f(ap.raw?.relay?.mibps, 0)} MiB/s`,
    x(ap.protocol?.stream?.mibps, ap.raw?.relay?.mibps),
    "",
    "bench/agent-protocol-rtt.mjs",
  );
} else missing.push("agent-protocol");

const ga = load("guest-agent-size");
if (ga) {
  row(
    "guest-agent",
    "static binary x86_64 / aarch64",
    `${f(ga.sizes?.x86_64 / 1024)} / ${f(ga.sizes?.aarch64 / 1024)} KiB`,
    `busybox-static ${f(ga.busyboxBytes / 1024)} KiB`,
    x(ga.sizes?.x86_64, ga.busyboxBytes),
    "< 300 KiB",
    "bench/guest-agent-size.mjs",
  );
  row(
    "guest-agent",
    "idle RSS of PID 1 in the guest",
    `${ga.agentRssKib} KiB`,
    "",
    "",
    "< 1 MiB",
    "bench/guest-agent-size.mjs",
  );
} else missing.push("guest-agent-size");

const pool = load("pool");
if (pool) {
  const idle = pool.scenarios?.find((s) => s.name === "idle");
  const by = (n) => idle?.results?.find((r) => r.name === n);
  const ours = by("@supermachine/pool");
  if (ours)
    row(
      "pool",
      "acquire+release of an idle resource p50",
      `${f(ours.p50Us, 2)} µs`,
      `tarn ${f(by("tarn")?.p50Us, 2)} µs, generic-pool ${f(by("generic-pool")?.p50Us, 2)} µs`,
      x(ours.p50Us, by("generic-pool")?.p50Us),
      "≤ 50 µs, not slower than either",
      "bench/pool-acquire.mjs",
    );
} else missing.push("pool");

const oci = load("oci");
if (oci) {
  const ours = oci.medianMs?.supermachineOciPull;
  const peer = oci.medianMs?.skopeoCopyToOciLayout;
  row(
    "oci",
    "pull debian-python into an empty store (median)",
    ours ? `${f(ours, 0)} ms` : "see JSON",
    peer ? `skopeo copy ${f(peer, 0)} ms` : "",
    x(ours, peer),
    "≤ 1.0×",
    "bench/oci-pull.mjs",
  );
} else missing.push("oci");

const rf = load("rootfs");
if (rf) {
  const best = (a) => (Array.isArray(a) ? Math.min(...a) : a);
  row(
    "rootfs",
    "squashfs of the debian-python tree, gzip, 128 KiB (best run)",
    `${f(best(rf.oursMs) / 1000)} s`,
    `mksquashfs ${f(best(rf.mksquashfsMs) / 1000)} s`,
    `${f(rf.timeRatio, 3)}× time, ${f(rf.sizeRatio, 4)}× size`,
    "≤ 1.0× time, ≤ 1.02× size",
    "bench/rootfs-mksquashfs.mjs",
  );
} else missing.push("rootfs");

const machine = core?.pool?.machine ?? core?.build?.machine;
const lines = [
  `Generated by \`node bench/readme-numbers.mjs\` from \`bench/results/*.json\` (each bench writes its own file; the`,
  "peer or raw baseline is always measured in the same run). Accelerator: **TCG** (software emulation — the",
  "project's machines have no usable KVM), so VM timings are TCG timings, not KVM ones.",
  machine
    ? `Machine: ${machine.cores} cores (${machine.cpu}), ${machine.memGiB} GiB, Node ${machine.node}, ${machine.qemu ?? ""}.`
    : "",
  "The machine was shared by other work while these ran; treat single numbers as ±50%.",
  "",
  "| area | metric | supermachine | baseline (same run) | ratio | goal | bench |",
  "|---|---|---|---|---|---|---|",
  ...rows,
];
if (missing.length) lines.push("", `Not measured yet: ${missing.join(", ")}.`);

const readme = join(root, "README.md");
const text = readFileSync(readme, "utf8");
const start = text.indexOf("<!-- bench:start -->");
const end = text.indexOf("<!-- bench:end -->");
if (start < 0 || end < 0)
  throw new Error("README.md lacks the <!-- bench:start --> / <!-- bench:end --> markers");
writeFileSync(readme, `${text.slice(0, start)}<!-- bench:start -->\n${lines.join("\n")}\n${text.slice(end)}`);
console.log(
  `README.md numbers regenerated (${rows.length} rows${missing.length ? `, missing: ${missing.join(", ")}` : ""})`,
);
