// Regenerates the "Numbers" table of packages/core/README.md from bench/results/core.json.
//   node bench/core-readme.mjs
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { RESULTS, ROOT } from "./core-lib.mjs";

const r = JSON.parse(readFileSync(RESULTS, "utf8"));
const b = r.build ?? {};
const p = r.pool ?? {};
const m = (p.machine ?? b.machine) || {};
const ratio = (a, c) => (a && c ? `${(a / c).toFixed(2)}x` : "");
const lines = [
  `Accelerator: **${p.accel ?? b.accel ?? "?"}**; machine: ${m.cores ?? "?"} cores (${m.cpu ?? "?"}), ${m.memGiB ?? "?"} GiB, ${m.qemu ?? ""}, Node ${m.node ?? ""}. Measured ${p.measuredAt ?? b.measuredAt ?? ""}.`,
  "",
  "| metric | supermachine | raw / peer (same run) | ratio | goal |",
  "|---|---|---|---|---|",
];
if (b.cacheHitMs)
  lines.push(
    `| cache-hit \`Image.build\` p50 / p99 | ${b.cacheHitMs.p50} / ${b.cacheHitMs.p99} ms | | | ≤ 5 ms |`,
  );
if (b.coldBakeMs) lines.push(`| cold bake (busybox) | ${(b.coldBakeMs / 1000).toFixed(1)} s | | | |`);
if (p.acquireIdleUs) lines.push(`| acquire from idle p50 | ${p.acquireIdleUs.p50} µs | | | ≤ 50 µs |`);
if (p.cycleRestoreMs)
  lines.push(
    `| cycle-restore (acquire of a fresh VM) p50 | ${p.cycleRestoreMs.p50} ms | raw QEMU restore ${p.rawRestoreMs.p50} ms, pre-started ${p.rawPreparedRestoreMs.p50} ms | ${ratio(p.cycleRestoreMs.p50, p.rawRestoreMs.p50)} | ≤ 1.2× |`,
  );
if (p.restoreBreakdownMs) {
  const b2 = p.restoreBreakdownMs;
  lines.push(
    `| ↳ restore breakdown p50: VMM start / agent hello / resume RPC | ${b2.start.p50} / ${b2.hello.p50} / ${b2.resume.p50} ms | | | |`,
  );
}
if (p.rawPreparedToResumedMs)
  lines.push(
    `| cycle-restore vs the same steps done raw (pre-started start + agent hello + resume) | ${p.cycleRestoreMs.p50} ms | ${p.rawPreparedToResumedMs.p50} ms | ${ratio(p.cycleRestoreMs.p50, p.rawPreparedToResumedMs.p50)} | ≤ 1.2× |`,
  );
if (p.cycleWithFirstExecMs)
  lines.push(
    `| acquire of a fresh VM + its first \`exec(["true"])\` p50 | ${p.cycleWithFirstExecMs.p50} ms (exec ${p.firstExecMs.p50} ms) | raw pre-started start + hello + resume + exec ${p.rawResumedFirstExecMs.p50} ms (exec ${p.rawFirstExecMs.p50} ms) | ${ratio(p.cycleWithFirstExecMs.p50, p.rawResumedFirstExecMs.p50)} | |`,
  );
if (p.execTrueUs)
  lines.push(
    `| \`exec(["true"])\` round trip p50 | ${p.execTrueUs.p50} µs | agent ping ${p.agentPingUs.p50} µs | ${ratio(p.execTrueUs.p50, p.agentPingUs.p50)} | ≤ 1.5× |`,
  );
if (p.guestTrueLoopMs)
  lines.push(
    `| ↳ guest floor, no agent: one \`/bin/true\` run by \`sh\` in the guest / one \`(:)\` fork + exit | ${p.guestTrueLoopMs} / ${p.guestForkLoopMs} ms | agent ping ${p.agentPingUs.p50} µs | ${ratio(p.guestTrueLoopMs * 1000, p.agentPingUs.p50)} / ${ratio(p.guestForkLoopMs * 1000, p.agentPingUs.p50)} | |`,
  );
if (p.idleCpuPercent !== undefined)
  lines.push(
    `| idle CPU per acquired VM doing nothing (awake; 10 s; idle pooled VMs are frozen: see issue 20 rows) | ${p.idleCpuPercent} % of a core | raw restore after hello + resume ${p.rawResumedIdleCpuPercent} % | ${ratio(p.idleCpuPercent, p.rawResumedIdleCpuPercent)} | |`,
  );
if (p.idlePssMiB)
  lines.push(
    `| PSS per acquired VM doing nothing | ${p.idlePssMiB} MiB | raw restore, idle ${p.rawIdlePssMiB} MiB; raw restore after hello + resume ${p.rawResumedPssMiB ?? "?"} MiB | ${ratio(p.idlePssMiB, p.rawIdlePssMiB)} / ${ratio(p.idlePssMiB, p.rawResumedPssMiB)} | ≤ 1.05× |`,
  );
if (p.tcgCacheMiB)
  lines.push(
    `| ↳ of which QEMU's TCG translation cache | ${p.tcgCacheMiB.core} MiB | raw idle ${p.tcgCacheMiB.rawIdle} MiB; raw after hello + resume ${p.tcgCacheMiB.rawResumed} MiB | | |`,
  );
if (p.density)
  lines.push(
    `| density | ${p.density.running}/${p.density.requested} idle VMs running (${p.density.answering} answer exec), filled in ${p.density.fillSeconds} s | PSS total ${p.density.totalPssMiB} MiB; MemAvailable dropped ${p.density.memAvailableDropMiB} MiB | | 64 fit in 24 GiB |`,
  );
const mnt = r.mounts;
if (mnt?.ms) {
  lines.push(
    "",
    `Live host shares (\`bench/core-mounts.mjs\`, one VM, best of ${mnt.rounds} rounds, accelerator ${mnt.accel}):`,
    "",
  );
  lines.push(
    "| workload | share (cacheTtlMs 0, default) | share (cacheTtlMs 1000) | guest tmpfs | ratios |",
    "|---|---|---|---|---|",
  );
  const label = {
    read: `read ${mnt.mib} MiB (dd bs=1M)`,
    write: `write ${mnt.mib} MiB (dd bs=1M + sync)`,
    stat: `\`ls -l\` of ${mnt.files} files`,
    walk: "tree walk: `find -newer` over 5000 files in 100 dirs",
  };
  for (const k of ["read", "write", "stat", "walk"]) {
    const m = mnt.ms[k];
    if (m)
      lines.push(
        `| ${label[k]} | ${m.share} ms | ${m.shareTtl1s} ms | ${m.tmpfs} ms | ${ratio(m.share, m.tmpfs)} / ${ratio(m.shareTtl1s, m.tmpfs)} |`,
      );
  }
}
const net = r.network;
if (net?.throughputMiBps?.guestNoPolicyDownload) {
  const t = net.throughputMiBps;
  const c = net.connectMs;
  const q = net.ratio;
  const pm = net.ratioPairedMedian ?? {};
  const cs = net.cpuShare ?? {};
  lines.push(
    "",
    `Guest network (\`bench/core-network.mjs\`, accelerator ${net.accel}, one 1-vCPU busybox VM per column, ${net.mib} MiB per transfer, ${net.connects} connects, best of ${net.rounds} interleaved rounds; busybox \`nc\` in the guest to a test host in a network namespace the bench creates). Policy: \`"public"\` (connect trapped, dialled by the host, bytes relayed over the agent channel). No policy: the same image built with \`network: "nat"\` (QEMU user-mode networking, unfiltered), same transfer, same run. Ratios are policy / no policy; in parentheses the median of each round's own pair:`,
    "",
    '| metric | policy (`"public"`) | no policy (`"nat"`) | ratio | goal | context: guest loopback / host process |',
    "|---|---|---|---|---|---|",
    `| download | ${t.guestDownload} MiB/s | ${t.guestNoPolicyDownload} MiB/s | ${q.downloadVsNoPolicy}× (${pm.downloadVsNoPolicy}×) | ≥ 0.7× | — / ${t.hostDownload} MiB/s |`,
    `| upload | ${t.guestUpload} MiB/s | ${t.guestNoPolicyUpload} MiB/s | ${q.uploadVsNoPolicy}× (${pm.uploadVsNoPolicy}×) | ≥ 0.7× | ${t.guestLoopbackUpload} / ${t.hostUpload} MiB/s |`,
    `| connect latency | ${c.guest} ms | ${c.guestNoPolicy} ms | ${q.connectVsNoPolicy}× (${pm.connectVsNoPolicy}×) the time | | ${c.guestLoopback} / ${c.host} ms |`,
  );
  const sm = net.samplesMs ?? {};
  const spread = (k) =>
    sm[k]?.length
      ? `${(Math.min(...sm[k]) / 1000).toFixed(1)}–${(Math.max(...sm[k]) / 1000).toFixed(1)} s`
      : "?";
  lines.push(
    "",
    `Spread across rounds (shared machine): download policy ${spread("policyDown")}, no policy ${spread("nopolicyDown")}; upload policy ${spread("policyUp")}, no policy ${spread("nopolicyUp")} — trust the medians more than the best-of ratios.`,
  );
  const pc = (v) => Math.round(v * 100);
  if (cs.policyDown && cs.nopolicyDown && Math.min(cs.policyDown.guestBusy, cs.nopolicyDown.guestBusy) >= 0.9)
    lines.push(
      "",
      `Where the time goes (guest vCPU shares during the best download, from /proc/stat and the agent's /proc/1/stat): the guest vCPU is busy ${pc(cs.policyDown.guestBusy)}% with the policy and ${pc(cs.nopolicyDown.guestBusy)}% without, so under ${net.accel} the guest CPU is the bottleneck of both; with the policy the agent (PID 1, the relay) takes ${pc(cs.policyDown.agentUser + cs.policyDown.agentKernel)}% of it (${pc(cs.policyDown.agentKernel)}% in the kernel: its reads of the agent channel (virtio-serial) and writes to the relayed loopback socket; ${pc(cs.policyDown.agentUser)}% in its own code, framing and protocol), on top of \`nc\` reading a loopback TCP socket. Without policy the bytes cross the guest kernel once (virtio-net, TCP).`,
    );
}
const readme = join(ROOT, "packages", "core", "README.md");
const text = readFileSync(readme, "utf8");
const start = text.indexOf("<!-- bench:start -->");
const end = text.indexOf("<!-- bench:end -->");
if (start < 0 || end < 0) throw new Error("README markers missing");
writeFileSync(readme, `${text.slice(0, start)}<!-- bench:start -->\n${lines.join("\n")}\n${text.slice(end)}`);
console.log(lines.join("\n"));
