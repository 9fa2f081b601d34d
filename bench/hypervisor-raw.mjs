// Raw VMM numbers of @supermachine/hypervisor(-kvm|-hvf): the baseline core's bench compares against.
//
//   npx lerna run build --scope @supermachine/rootfs --scope @supermachine/hypervisor --scope @supermachine/hypervisor-kvm --scope @supermachine/hypervisor-hvf
//   node bench/hypervisor-raw.mjs [x86_64|aarch64] [iterations]
//
// Guest (default "agent" when guest-agent/out/<arch>/sm-agent and packages/agent-protocol/dist exist): the real C agent
// as /init (initramfs in the team layout, busybox-free squashfs rootfs), "agent ready" = AgentClient hello answered,
// and for restores hello + `resume {time, entropy}` done (what core does on acquire). `--guest=fixture`: the hypervisor
// package's TEST FIXTURE /init (packages/hypervisor/test/fixtures/fixture-init.c), "ready" = it answered a ping.
// Measured: cold boot → agent ready, snapshot of a booted VM, restore (spawn + incoming + cont → agent answers),
// pre-started restore (prepareRestore done beforehand; start() → agent answers), snapshot of a restored VM
// (full-RAM migration), idle PSS per VM (booted vs restored). Peer/floor measured in the same run: a bare QEMU
// process start to its QMP greeting with no guest (the spawn floor every restore pays unless pre-started).
// Writes bench/results/hypervisor.json.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const arch = positional[0] ?? "x86_64";
const iterations = Number(positional[1] ?? 5);
const agentBin = join(here, "../guest-agent/out", arch, "sm-agent");
const protoDist = join(here, "../packages/agent-protocol/dist/index.js");
const guestFlag = process.argv.find((a) => a.startsWith("--guest="))?.slice(8);
const guestMode = guestFlag ?? (existsSync(agentBin) && existsSync(protoDist) ? "agent" : "fixture");
const proto = guestMode === "agent" ? await import(protoDist) : undefined;
const hv = await import(join(here, "../packages/hypervisor/dist/index.js"));
const rootfsPkg = await import(join(here, "../packages/rootfs/dist/index.js"));
const backend =
  arch === "x86_64"
    ? (await import(join(here, "../packages/hypervisor-kvm/dist/index.js"))).createKvmBackend({
        arch: "x86_64",
      })
    : (await import(join(here, "../packages/hypervisor-hvf/dist/index.js"))).createHvfBackend();
const qemuBinary = arch === "x86_64" ? "qemu-system-x86_64" : "qemu-system-aarch64";
const work = mkdtempSync(join(os.tmpdir(), "sm-bench-hv-"));
const runtimeRoot = join(work, "rt");

// ---------------------------------------------------------------- guest initramfs
async function buildInitrd() {
  let init = agentBin;
  if (guestMode !== "agent") {
    init = join(work, "fixture-init");
    const cc = arch === "x86_64" ? "musl-gcc" : "aarch64-linux-gnu-gcc";
    execFileSync(cc, [
      "-static",
      "-O2",
      "-o",
      init,
      join(here, "../packages/hypervisor/test/fixtures/fixture-init.c"),
    ]);
  }
  const out = join(work, "initrd.cpio");
  // The team layout (/init, /sm/modules/<name>.ko, /sm/modules.order, /sm/config.cbor), modules with their
  // dependencies in load order: built the way core builds it.
  await rootfsPkg.buildInitramfs({
    init,
    modulesDir: hv.resolveKernelBundle({ arch }).modulesDir,
    modules: guestMode === "agent" ? hv.BASE_GUEST_MODULES : ["virtio_mmio", "virtio_console"],
    config:
      guestMode === "agent"
        ? proto.encodeBootConfig({
            hostname: "bench",
            rootDevice: "/dev/vda",
            tmpfsMib: 32,
            workload: null,
            startWorkload: "never",
          })
        : new Uint8Array(), // the fixture reads no boot config
    out,
    gzip: false,
  });
  if (guestMode !== "agent") return { initrd: out };
  const tree = join(work, "rootfs-tree");
  for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev"]) mkdirSync(join(tree, d), { recursive: true });
  writeFileSync(join(tree, "etc/passwd"), "root:x:0:0:root:/:/bin/false\n");
  writeFileSync(join(tree, "etc/group"), "root:x:0:\n");
  const rootfs = join(work, "rootfs.sqfs");
  execFileSync("mksquashfs", [tree, rootfs, "-noappend", "-quiet", "-no-progress", "-all-root"], {
    stdio: "ignore",
  });
  return { initrd: out, rootfs };
}

/** Guest ready: the real agent's hello (+ resume on restored VMs), or the fixture's pong. Returns a closer. */
async function guestReady(vm) {
  if (guestMode === "agent") {
    const client = await proto.connectAgent(await vm.agentStream(), { helloTimeoutMs: 300_000 });
    if (vm.restoredFrom) await client.resume({});
    return { destroy: () => client.close(), client };
  }
  return agentReady(vm);
}

/** Ping the fixture until it answers; resolves with the open socket. */
async function agentReady(vm) {
  const sock = await vm.agentStream();
  await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setInterval(() => sock.write("ping\n"), 100);
    sock.on("data", (d) => {
      buf += d;
      if (buf.includes("pong\n")) {
        clearInterval(timer);
        resolve();
      }
    });
    sock.once("close", () => {
      clearInterval(timer);
      reject(new Error("agent stream closed"));
    });
    sock.write("ping\n");
  });
  return sock;
}

async function request(sock, line) {
  return new Promise((resolve) => {
    let buf = "";
    const on = (d) => {
      buf += d;
      const nl = buf.lastIndexOf("\n");
      if (
        nl >= 0 &&
        buf
          .slice(0, nl + 1)
          .split("\n")
          .includes("ok")
      ) {
        sock.off("data", on);
        resolve();
      }
    };
    sock.on("data", on);
    sock.write(`${line}\n`);
  });
}

/** Floor: bare QEMU (same machine, no kernel, -S) start → QMP greeting + capabilities (same client as the driver). */
async function qemuSpawnFloorMs() {
  const dir = mkdtempSync(join(work, "floor-"));
  const sockPath = join(dir, "q.sock");
  const machine = arch === "x86_64" ? "microvm,rtc=off" : "virt";
  const t0 = performance.now();
  const child = spawn(
    qemuBinary,
    [
      "-M",
      machine,
      "-accel",
      "tcg",
      "-m",
      "256M",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-S",
      "-qmp",
      `unix:${sockPath},server=on,wait=off`,
    ],
    { stdio: "ignore" },
  );
  const qmp = await hv.QmpClient.connect(sockPath);
  const ms = performance.now() - t0;
  qmp.close();
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  return ms;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mib = (b) => (b == null ? null : b / 1048576);

const results = {
  bench: "hypervisor-raw",
  arch,
  accel: "tcg",
  machine: `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model ?? "?"}`,
  qemu: execFileSync(qemuBinary, ["--version"], { encoding: "utf8" }).split("\n")[0],
  iterations,
  loadavg1AtStart: os.loadavg()[0],
  guest:
    guestMode === "agent"
      ? "real agent (guest-agent sm-agent; ready = hello answered, restores: hello + resume)"
      : "test fixture /init (C, line protocol on virtio-serial)",
  date: new Date().toISOString(),
};
const live = [];
try {
  const guestFiles = await buildInitrd();
  // floor
  const floor = [];
  for (let i = 0; i < iterations; i++) floor.push(await qemuSpawnFloorMs());
  results.qemuSpawnToQmpMsMedian = median(floor);

  // cold boots
  const cold = [];
  let booted;
  for (let i = 0; i < 2; i++) {
    const t0 = performance.now();
    const vm = await backend.boot({ ...guestFiles, accel: "tcg", memoryMib: 256, runtimeRoot });
    const sock = await guestReady(vm);
    cold.push(performance.now() - t0);
    if (i === 0) {
      booted = { vm, sock };
      live.push(vm);
    } else await vm.stop();
  }
  results.coldBootToAgentReadyMs = cold;
  results.coldBootToAgentReadyMsMedian = median(cold);

  // snapshot of the booted VM
  if (guestMode !== "agent") await request(booted.sock, "set bench");
  const snaps = [];
  for (let i = 0; i < 3; i++) {
    const r = await booted.vm.snapshot(join(work, `snap-${i}`));
    snaps.push(r.timings);
  }
  results.snapshotBooted = {
    pausedMsMedian: median(snaps.map((t) => t.pausedMs)),
    stateMsMedian: median(snaps.map((t) => t.stateMs)),
    memoryCopyMsMedian: median(snaps.map((t) => t.memoryMs)),
    totalMsMedian: median(snaps.map((t) => t.totalMs)),
  };
  const snap = join(work, "snap-0");

  // restore: spawn + incoming + cont → agent answers
  const restore = [];
  const restoreOnly = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    const vm = await backend.restore(snap, { runtimeRoot });
    const t1 = performance.now();
    const s = await guestReady(vm);
    restore.push(performance.now() - t0);
    restoreOnly.push(t1 - t0);
    s.destroy();
    await vm.stop();
  }
  results.restoreToAgentReadyMsMedian = median(restore);
  results.restoreCallMsMedian = median(restoreOnly);

  // pre-started restore
  const pre = [];
  const preOnly = [];
  for (let i = 0; i < iterations; i++) {
    const prepared = await backend.prepareRestore(snap, { runtimeRoot });
    await new Promise((r) => setTimeout(r, 200)); // the pool would have done this long before
    const t0 = performance.now();
    const vm = await prepared.start();
    const t1 = performance.now();
    const s = await guestReady(vm);
    pre.push(performance.now() - t0);
    preOnly.push(t1 - t0);
    s.destroy();
    await vm.stop();
  }
  results.preStartedRestoreToAgentReadyMsMedian = median(pre);
  results.preStartedStartCallMsMedian = median(preOnly);

  // snapshot of a restored VM (full-RAM migration while paused, then offline compaction by a helper VMM)
  const r1 = await backend.restore(snap, { runtimeRoot });
  live.push(r1);
  await guestReady(r1);
  const sr = await r1.snapshot(join(work, "snap-of-restored"));
  await r1.stop();
  const t2 = performance.now();
  const r2 = await backend.restore(join(work, "snap-of-restored"), { runtimeRoot });
  live.push(r2);
  const s2 = await guestReady(r2);
  const restoreFromIt = performance.now() - t2;
  s2.destroy();
  await r2.stop();
  results.snapshotRestored = {
    pausedMs: sr.timings.pausedMs,
    totalMs: sr.timings.totalMs,
    ramInState: sr.manifest.ramInState,
    stateBytes: sr.manifest.stateBytes,
    restoreFromItToAgentReadyMs: restoreFromIt,
  };

  // idle PSS: the booted VM vs N restored VMs from one snapshot
  const restored = [];
  for (let i = 0; i < 4; i++) {
    const vm = await backend.restore(snap, { runtimeRoot });
    live.push(vm);
    await guestReady(vm);
    restored.push(vm);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const bootedStats = await booted.vm.memoryStats();
  const rs = await Promise.all(restored.map((v) => v.memoryStats()));
  results.idleBootedVm = { rssMiB: mib(bootedStats.rssBytes), pssMiB: mib(bootedStats.pssBytes) };
  results.idleRestoredVms = rs.map((s) => ({
    rssMiB: mib(s.rssBytes),
    pssMiB: mib(s.pssBytes),
    pssAnonMiB: mib(s.pssAnonBytes),
    pssFileMiB: mib(s.pssFileBytes),
  }));
  results.idleRestoredPssMiBMedian = median(rs.map((s) => mib(s.pssBytes)));
} finally {
  await Promise.all(live.map((v) => v.stop()));
  rmSync(work, { recursive: true, force: true });
}

const f = (x) => (x == null ? "-" : x.toFixed(1));
const rows = [
  ["bare QEMU start → QMP greeting (floor)", f(results.qemuSpawnToQmpMsMedian), "1.00"],
  [
    "cold boot → agent ready",
    f(results.coldBootToAgentReadyMsMedian),
    (results.coldBootToAgentReadyMsMedian / results.qemuSpawnToQmpMsMedian).toFixed(1),
  ],
  ["snapshot booted VM (paused total)", f(results.snapshotBooted.pausedMsMedian), ""],
  ["  of which device state", f(results.snapshotBooted.stateMsMedian), ""],
  ["  of which RAM file copy", f(results.snapshotBooted.memoryCopyMsMedian), ""],
  [
    "restore() call (spawn+incoming+cont)",
    f(results.restoreCallMsMedian),
    (results.restoreCallMsMedian / results.qemuSpawnToQmpMsMedian).toFixed(2),
  ],
  [
    "restore → agent ready (+resume)",
    f(results.restoreToAgentReadyMsMedian),
    (results.restoreToAgentReadyMsMedian / results.qemuSpawnToQmpMsMedian).toFixed(2),
  ],
  [
    "pre-started start() call",
    f(results.preStartedStartCallMsMedian),
    (results.preStartedStartCallMsMedian / results.qemuSpawnToQmpMsMedian).toFixed(2),
  ],
  [
    "pre-started → agent ready (+resume)",
    f(results.preStartedRestoreToAgentReadyMsMedian),
    (results.preStartedRestoreToAgentReadyMsMedian / results.qemuSpawnToQmpMsMedian).toFixed(2),
  ],
  ["snapshot restored VM: paused (full RAM)", f(results.snapshotRestored.pausedMs), ""],
  ["snapshot restored VM: total (+compaction)", f(results.snapshotRestored.totalMs), ""],
  ["restore from that snapshot → agent ready", f(results.snapshotRestored.restoreFromItToAgentReadyMs), ""],
];
console.log(
  `hypervisor-raw  arch=${arch} accel=tcg guest=${guestMode}  ${results.machine}  ${results.qemu}  load1=${results.loadavg1AtStart.toFixed(1)}`,
);
console.log("metric".padEnd(42), "ms (median)".padStart(12), "x floor".padStart(9));
for (const [a, b, c] of rows) console.log(a.padEnd(42), String(b).padStart(12), String(c).padStart(9));
console.log(
  `idle PSS (${guestMode}): booted VM ${f(results.idleBootedVm.pssMiB)} MiB; restored VMs (median of ${results.idleRestoredVms.length}) ${f(results.idleRestoredPssMiBMedian)} MiB`,
);
const outDir = join(here, "results");
mkdirSync(outDir, { recursive: true });
const file = join(outDir, arch === "x86_64" ? "hypervisor.json" : `hypervisor-${arch}.json`);
writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
console.log(`wrote ${file}`);
