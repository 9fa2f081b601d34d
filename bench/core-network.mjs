// bench: the host-enforced guest network (README "Networking"). A test host in a network namespace
// this bench creates (198.18.0.0/15, removed at the end) serves bytes over TCP; measured in the same
// run: TCP download/upload throughput and connect latency from the guest (busybox nc, through the
// agent relay and the host's dial) vs the same transfer done by a host process to the same test host,
// plus the guest's own loopback (the ceiling of the guest itself under this accelerator).
// Accelerator stated: under TCG every guest number includes emulated guest time.
//   needs root (ip netns); npx lerna run build && node bench/core-network.mjs
import { execFileSync, spawn } from "node:child_process";
import { connect } from "node:net";
import { loadCore, registry, round, saveResults, table } from "./core-lib.mjs";

const MIB = Number(process.env.SM_BENCH_MIB ?? 64);
const CONNECTS = Number(process.env.SM_BENCH_CONNECTS ?? 50);
const ROUNDS = Number(process.env.SM_BENCH_ROUNDS ?? 3);
const NS = `smbench-${process.pid % 100000}`;
const VH = `sbh${process.pid % 100000}`;
const VN = `sbn${process.pid % 100000}`;
const HOST_SIDE = "198.19.254.1";
const TEST_HOST = "198.19.254.2";

const ip = (...a) => execFileSync("ip", a, { stdio: "pipe" });
const server = `
import socket, threading, sys
MIB = ${MIB}
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((${JSON.stringify(TEST_HOST)}, port)); s.listen(256)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
def source(c):
    buf = b"x" * (1 << 20)
    try:
        for _ in range(MIB): c.sendall(buf)
    finally: c.close()
def sink(c):
    try:
        while c.recv(1 << 20): pass
    finally: c.close()
def close(c): c.close()
for p, f in ((9000, source), (9001, sink), (9002, close)):
    threading.Thread(target=serve, args=(p, f), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

let srv;
function setup() {
  ip("netns", "add", NS);
  ip("link", "add", VH, "type", "veth", "peer", "name", VN);
  ip("link", "set", VN, "netns", NS);
  ip("addr", "add", `${HOST_SIDE}/30`, "dev", VH);
  ip("link", "set", VH, "up");
  ip("netns", "exec", NS, "ip", "addr", "add", `${TEST_HOST}/30`, "dev", VN);
  ip("netns", "exec", NS, "ip", "link", "set", VN, "up");
  ip("netns", "exec", NS, "ip", "link", "set", "lo", "up");
  srv = spawn("ip", ["netns", "exec", NS, "python3", "-c", server], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((r) => srv.stdout.once("data", r));
}
function teardown() {
  srv?.kill("SIGKILL");
  for (const a of [
    ["link", "del", VH],
    ["netns", "del", NS],
  ]) {
    try {
      ip(...a);
    } catch {}
  }
}

/** Host process: download MIB from the test host, ms. */
function hostDownload() {
  return new Promise((res, rej) => {
    const s = performance.now();
    let n = 0;
    const c = connect({ host: TEST_HOST, port: 9000 });
    c.on("data", (d) => {
      n += d.length;
    });
    c.on("end", () => (n === MIB << 20 ? res(performance.now() - s) : rej(new Error(`got ${n}`))));
    c.on("error", rej);
  });
}
function hostUpload() {
  return new Promise((res, rej) => {
    const s = performance.now();
    const c = connect({ host: TEST_HOST, port: 9001 });
    const buf = Buffer.alloc(1 << 20, 120);
    let i = 0;
    const pump = () => {
      while (i < MIB) {
        i++;
        if (!c.write(buf)) return c.once("drain", pump);
      }
      c.end();
    };
    c.on("connect", pump);
    c.on("close", () => res(performance.now() - s));
    c.on("error", rej);
  });
}
async function hostConnect() {
  const s = performance.now();
  for (let i = 0; i < CONNECTS; i++) {
    await new Promise((res, rej) => {
      const c = connect({ host: TEST_HOST, port: 9002 }, () => {
        c.destroy();
        res();
      });
      c.on("error", rej);
    });
  }
  return (performance.now() - s) / CONNECTS;
}

process.on("SIGINT", () => {
  teardown();
  process.exit(130);
});
await setup();
const { Image } = await loadCore();
const image = await Image.build({
  ref: `${registry()}/busybox:latest`,
  name: "bench-network",
  memoryMib: 512,
});
const pool = await image.pool({ min: 1, max: 1 });
const vm = await pool.acquire();
// Time measured inside the guest (/proc/uptime around the command, 10 ms resolution: busybox date has
// no %N), so the exec round trip is not counted.
const guestMs = async (cmd) => {
  const r = await vm.exec({
    argv: [
      "sh",
      "-c",
      `s=$(cut -d' ' -f1 /proc/uptime); ${cmd}; rc=$?; echo "$s $(cut -d' ' -f1 /proc/uptime)"; exit $rc`,
    ],
    timeoutMs: 600_000,
  });
  if (r.exitCode !== 0) throw new Error(`${cmd}: exit ${r.exitCode}: ${r.stderr}`);
  const [s, e] = r.stdout.toString().trim().split("\n").pop().split(" ").map(Number);
  return (e - s) * 1000;
};
try {
  await vm.exec({
    argv: ["sh", "-c", "(while true; do nc -l -p 9102 </dev/null >/dev/null; done) >/dev/null 2>&1 &"],
  });
  await vm.exec({ argv: ["sleep", "0.5"] });
  const best = {};
  const keep = (k, v) => {
    best[k] = Math.min(best[k] ?? Number.POSITIVE_INFINITY, v);
  };
  for (let r = 0; r < ROUNDS; r++) {
    keep("guestDown", await guestMs(`nc ${TEST_HOST} 9000 </dev/null >/dev/null`));
    keep("guestUp", await guestMs(`dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null | nc ${TEST_HOST} 9001`));
    // busybox nc -l ends the connection at EOF of its own stdin: a fresh listener per round, with an
    // stdin that never ends (started before the clock)
    await vm.exec({
      argv: ["sh", "-c", `(tail -f /dev/null | nc -l -p ${9110 + r} >/dev/null) >/dev/null 2>&1 & sleep 0.5`],
    });
    keep(
      "guestLoopUp",
      await guestMs(`dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null | nc 127.0.0.1 ${9110 + r}`),
    );
    keep(
      "guestConnect",
      (await guestMs(
        `i=0; while [ $i -lt ${CONNECTS} ]; do nc ${TEST_HOST} 9002 </dev/null; i=$((i+1)); done`,
      )) / CONNECTS,
    );
    keep(
      "guestLoopConnect",
      (await guestMs(
        `i=0; while [ $i -lt ${CONNECTS} ]; do nc 127.0.0.1 9102 </dev/null; i=$((i+1)); done`,
      )) / CONNECTS,
    );
    keep("hostDown", await hostDownload());
    keep("hostUp", await hostUpload());
    keep("hostConnect", await hostConnect());
  }
  const mbps = (ms) => round(MIB / (ms / 1000), 1);
  const out = {
    accel: image.meta.accel,
    mib: MIB,
    connects: CONNECTS,
    rounds: ROUNDS,
    throughputMiBps: {
      guestDownload: mbps(best.guestDown),
      guestUpload: mbps(best.guestUp),
      guestLoopbackUpload: mbps(best.guestLoopUp),
      hostDownload: mbps(best.hostDown),
      hostUpload: mbps(best.hostUp),
    },
    connectMs: {
      guest: round(best.guestConnect, 2),
      guestLoopback: round(best.guestLoopConnect, 2),
      host: round(best.hostConnect, 3),
    },
  };
  out.ratio = {
    downloadVsHost: round(out.throughputMiBps.guestDownload / out.throughputMiBps.hostDownload, 3),
    uploadVsHost: round(out.throughputMiBps.guestUpload / out.throughputMiBps.hostUpload, 3),
    uploadVsGuestLoopback: round(
      out.throughputMiBps.guestUpload / out.throughputMiBps.guestLoopbackUpload,
      3,
    ),
  };
  console.log(`accelerator: ${out.accel}; ${MIB} MiB transfers, ${CONNECTS} connects, best of ${ROUNDS}`);
  table([
    ["metric", "guest (relayed)", "guest loopback", "host process", "guest/host"],
    [
      "download MiB/s",
      out.throughputMiBps.guestDownload,
      "",
      out.throughputMiBps.hostDownload,
      out.ratio.downloadVsHost,
    ],
    [
      "upload MiB/s",
      out.throughputMiBps.guestUpload,
      out.throughputMiBps.guestLoopbackUpload,
      out.throughputMiBps.hostUpload,
      out.ratio.uploadVsHost,
    ],
    ["connect ms", out.connectMs.guest, out.connectMs.guestLoopback, out.connectMs.host, ""],
  ]);
  saveResults("network", out);
} finally {
  await vm.release().catch(() => undefined);
  await pool.shutdown();
  teardown();
}
