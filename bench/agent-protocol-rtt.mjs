// Agent protocol hot paths over a Unix socket pair: ping round trip and 1 GiB streaming, through the
// TypeScript reference agent (a test double standing in for the C agent) in a separate process, against
// the raw socket (echo RTT, plain byte stream) measured in the same run.
//
//   npx lerna run build --scope @supermachine/agent-protocol && node bench/agent-protocol-rtt.mjs [pings] [MiB]
//
// Prints a table, writes bench/results/agent-protocol.json and regenerates the table in
// packages/agent-protocol/README.md (between the bench:agent-protocol-rtt markers).
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "../packages/agent-protocol/dist");

// ---------------------------------------------------------------- peer process (second event loop)
if (process.argv[2] === "--peer") {
  const [, , , mode, sockPath, arg] = process.argv;
  const sock = connect(sockPath);
  await new Promise((r) => sock.once("connect", r));
  if (mode === "echo") {
    sock.pipe(sock);
  } else if (mode === "blast") {
    const block = Buffer.alloc(1 << 20, 0x5a);
    let left = Number(arg);
    const pump = () => {
      while (left > 0) {
        left--;
        if (!sock.write(block)) return void sock.once("drain", pump);
      }
      sock.end();
    };
    pump();
  } else if (mode === "relay") {
    // the same hops as the protocol path (TCP source → relay process → Unix socket), without framing
    const block = Buffer.alloc(1 << 20, 0x5a);
    const src = createServer((s) => {
      let left = Number(arg);
      const pump = () => {
        while (left > 0) {
          left--;
          if (!s.write(block)) return void s.once("drain", pump);
        }
        s.end();
      };
      s.on("error", () => {});
      pump();
    });
    await new Promise((r) => src.listen(0, "127.0.0.1", r));
    const up = connect(src.address().port, "127.0.0.1");
    up.pipe(sock);
    up.on("end", () => src.close());
    sock.on("close", () => {
      up.destroy();
      src.close();
    });
  } else if (mode === "agent") {
    const { ReferenceAgent } = await import(join(dist, "testing/index.js"));
    // a TCP source inside the "guest": tcp-connect to it streams `arg` MiB from memory
    const block = Buffer.alloc(1 << 20, 0x5a);
    const src = createServer((s) => {
      let left = Number(arg);
      const pump = () => {
        while (left > 0) {
          left--;
          if (!s.write(block)) return void s.once("drain", pump);
        }
        s.end();
      };
      s.on("error", () => {});
      pump();
    });
    await new Promise((r) => src.listen(0, "127.0.0.1", r));
    process.send?.({ port: src.address().port });
    const agent = new ReferenceAgent(sock);
    sock.on("close", () => {
      agent.close();
      src.close();
    });
  }
  sock.on("error", () => {});
} else {
  await main();
}

async function withPeer(mode, arg, fn) {
  const sockPath = join(os.tmpdir(), `sm-ap-bench-${process.pid}-${mode}.sock`);
  rmSync(sockPath, { force: true });
  const server = createServer();
  await new Promise((r) => server.listen(sockPath, r));
  const accepted = new Promise((r) => server.once("connection", r));
  const child = spawn(
    process.execPath,
    [
      ...(process.env.SM_BENCH_PEER_PROF
        ? ["--cpu-prof", "--cpu-prof-dir=" + process.env.SM_BENCH_PEER_PROF]
        : []),
      fileURLToPath(import.meta.url),
      "--peer",
      mode,
      sockPath,
      String(arg),
    ],
    {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    },
  );
  const info = mode === "agent" ? await new Promise((r) => child.once("message", r)) : {};
  const sock = await accepted;
  try {
    return await fn(sock, info);
  } finally {
    sock.destroy();
    // the peer exits by itself once its socket closes (the reference agent removes its temp root);
    // kill it only if it does not
    const exited = new Promise((r) => child.once("exit", r));
    const timer = setTimeout(() => child.kill(), 3000);
    await exited;
    clearTimeout(timer);
    server.close();
    rmSync(sockPath, { force: true });
  }
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
function stats(samplesNs) {
  const s = [...samplesNs].sort((a, b) => a - b);
  return { p50us: percentile(s, 50) / 1000, p99us: percentile(s, 99) / 1000, n: s.length };
}

async function main() {
  const { connectAgent } = await import(join(dist, "index.js"));
  const PINGS = Number(process.argv[2] ?? 5000);
  const MIB = Number(process.argv[3] ?? 1024);
  const WARM = 500;
  const WINDOW = Number(process.env.SM_BENCH_WINDOW ?? 262144);

  // raw echo RTT: 16 bytes out, 16 bytes back
  const raw = await withPeer("echo", 0, async (sock) => {
    const msg = Buffer.alloc(16, 1);
    const samples = [];
    for (let i = 0; i < WARM + PINGS; i++) {
      const t0 = process.hrtime.bigint();
      await new Promise((resolve) => {
        let got = 0;
        const on = (c) => {
          got += c.length;
          if (got >= 16) {
            sock.off("data", on);
            resolve();
          }
        };
        sock.on("data", on);
        sock.write(msg);
      });
      if (i >= WARM) samples.push(Number(process.hrtime.bigint() - t0));
    }
    return stats(samples);
  });

  // raw stream throughput
  const rawStream = await withPeer("blast", MIB, async (sock) => {
    const t0 = process.hrtime.bigint();
    let total = 0;
    for await (const c of sock) total += c.length;
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    return { bytes: total, seconds: s, mibps: total / 1048576 / s };
  });

  // raw relay throughput: same hops as the protocol stream, no framing
  const rawRelay = await withPeer("relay", MIB, async (sock) => {
    const t0 = process.hrtime.bigint();
    let total = 0;
    for await (const c of sock) total += c.length;
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    return { bytes: total, seconds: s, mibps: total / 1048576 / s };
  });

  // protocol: ping RTT and tcp-connect streaming through the reference agent
  const proto = await withPeer("agent", MIB, async (sock, info) => {
    const client = await connectAgent(sock, { window: WINDOW });
    const samples = [];
    for (let i = 0; i < WARM + PINGS; i++) {
      const t0 = process.hrtime.bigint();
      await client.ping();
      if (i >= WARM) samples.push(Number(process.hrtime.bigint() - t0));
    }
    const ping = stats(samples);
    const d = await client.tcpConnect(info.port);
    const t0 = process.hrtime.bigint();
    let total = 0;
    let peak = 0;
    for await (const c of d) {
      total += c.length;
      if (client.bufferedBytes > peak) peak = client.bufferedBytes;
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    client.close();
    return {
      ping,
      stream: { bytes: total, seconds: s, mibps: total / 1048576 / s, peakBufferedBytes: peak },
    };
  });

  const cpu = os.cpus()[0]?.model ?? "unknown";
  const machine = `${os.cpus().length} cores (${cpu}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}, load ${os.loadavg()[0].toFixed(1)}`;
  const rows = [
    [
      "ping round trip p50",
      `${proto.ping.p50us.toFixed(1)} µs`,
      `${raw.p50us.toFixed(1)} µs`,
      "raw socket echo",
      (proto.ping.p50us / raw.p50us).toFixed(2),
    ],
    [
      "ping round trip p99",
      `${proto.ping.p99us.toFixed(1)} µs`,
      `${raw.p99us.toFixed(1)} µs`,
      "raw socket echo",
      (proto.ping.p99us / raw.p99us).toFixed(2),
    ],
    [
      `${MIB} MiB stream`,
      `${proto.stream.mibps.toFixed(0)} MiB/s`,
      `${rawRelay.mibps.toFixed(0)} MiB/s`,
      "raw relay, same hops",
      (proto.stream.mibps / rawRelay.mibps).toFixed(2),
    ],
    [
      `${MIB} MiB stream`,
      `${proto.stream.mibps.toFixed(0)} MiB/s`,
      `${rawStream.mibps.toFixed(0)} MiB/s`,
      "raw socket, one hop",
      (proto.stream.mibps / rawStream.mibps).toFixed(2),
    ],
  ];
  const header = ["metric", "agent protocol (TS reference peer)", "baseline", "baseline is", "ratio"];
  const table = [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
  const note =
    `Measured ${new Date().toISOString().slice(0, 10)} by bench/agent-protocol-rtt.mjs on ${machine}; accelerator: tcg ` +
    `(not involved: host-only bench, no VM). Peers run in a second Node process. Ping ratio is latency (lower is better), ` +
    `stream ratio is throughput (higher is better); the protocol stream goes TCP source → reference agent → framed ` +
    `channel (${WINDOW / 1024} KiB window, peak host buffer ${proto.stream.peakBufferedBytes} bytes) → client Duplex.`;
  console.log(table);
  console.log(`\n${note}`);

  const result = {
    bench: "agent-protocol-rtt",
    date: new Date().toISOString(),
    machine,
    accelerator: "tcg (not involved)",
    pings: PINGS,
    streamMiB: MIB,
    windowBytes: WINDOW,
    protocol: proto,
    raw: { ping: raw, stream: rawStream, relay: rawRelay },
    ratios: {
      pingP50: proto.ping.p50us / raw.p50us,
      pingP99: proto.ping.p99us / raw.p99us,
      streamThroughput: proto.stream.mibps / rawStream.mibps,
      streamThroughputVsRelay: proto.stream.mibps / rawRelay.mibps,
    },
  };
  mkdirSync(join(here, "results"), { recursive: true });
  writeFileSync(join(here, "results/agent-protocol.json"), `${JSON.stringify(result, null, 2)}\n`);

  const readme = join(here, "../packages/agent-protocol/README.md");
  try {
    const text = readFileSync(readme, "utf8");
    const start = "<!-- bench:agent-protocol-rtt:start -->";
    const end = "<!-- bench:agent-protocol-rtt:end -->";
    const a = text.indexOf(start);
    const b = text.indexOf(end);
    if (a >= 0 && b > a) {
      writeFileSync(readme, `${text.slice(0, a + start.length)}\n${table}\n\n${note}\n${text.slice(b)}`);
    }
  } catch {
    // no README yet
  }
}
