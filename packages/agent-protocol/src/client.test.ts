import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type AgentClient, connectAgent } from "./client";
import { FILE_MAX } from "./constants";
import type { AgentError } from "./errors";
import { decodeFrame, type Frame } from "./frames";
import { FrameReader } from "./reader";
import { rejection, socketPair } from "./test-helpers";
import { ReferenceAgent } from "./testing/reference-agent";

/** Counts frames flowing on a socket (tap on 'data'). */
function tapFrames(sock: Socket, dir: "host-to-agent" | "agent-to-host"): Frame[] {
  const out: Frame[] = [];
  const r = new FrameReader({
    onFrame: (b) => out.push(decodeFrame(Buffer.from(b), dir)),
    onError: () => {},
  });
  sock.on("data", (c: Buffer) => r.push(c));
  return out;
}

describe("AgentClient with the reference agent", () => {
  let pair: Awaited<ReturnType<typeof socketPair>>;
  let agent: ReferenceAgent;
  let client: AgentClient;

  beforeEach(async () => {
    pair = await socketPair();
    agent = new ReferenceAgent(pair.agent);
    client = await connectAgent(pair.host);
  });
  afterEach(async () => {
    client.close();
    agent.close();
    await pair.close();
  });

  it("handshakes and reports the agent's hello", () => {
    expect(client.state).toBe("connected");
    expect(client.hello?.protocolVersion).toBe(1);
    expect(client.hello?.agentVersion).toMatch(/^reference-/);
    expect(client.hello?.caps).toContain("exec");
    expect(client.ready).toBe(true);
    expect(agent.sessions).toBe(1);
  });

  it("exec collects stdout, stderr and the exit code; small outputs are one frame each way", async () => {
    const toAgent = tapFrames(pair.agent, "host-to-agent");
    const toHost = tapFrames(pair.host, "agent-to-host");
    const r = await client.exec({ argv: ["sh", "-c", "echo out; echo err >&2; exit 3"] });
    expect(r.stdout.toString()).toBe("out\n");
    expect(r.stderr.toString()).toBe("err\n");
    expect(r.exitCode).toBe(3);
    expect(r.signal).toBeNull();
    expect(r.timedOut).toBe(false);
    expect(toAgent.map((f) => f.t)).toEqual(["req"]);
    expect(toHost.map((f) => f.t)).toEqual(["res"]);
  });

  it("exec streams large output through the channels and concatenates it with the tail", async () => {
    const r = await client.exec({
      argv: ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' 'x'; printf END"],
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBe(3_000_003);
    expect(r.stdout.subarray(0, 10).toString()).toBe("xxxxxxxxxx");
    expect(r.stdout.subarray(-3).toString()).toBe("END");
  });

  it("exec of a missing binary exits 127 with a clear stderr", async () => {
    const r = await client.exec({ argv: ["definitely-not-a-command-xyz"] });
    expect(r.exitCode).toBe(127);
    expect(r.stderr.toString()).toContain("definitely-not-a-command-xyz: command not found");
  });

  it("exec timeout kills the process: exitCode -1, timedOut", async () => {
    const t0 = Date.now();
    const r = await client.exec({ argv: ["sleep", "10"], timeoutMs: 200 });
    expect(r.timedOut).toBe(true);
    expect(r.exitCode).toBe(-1);
    expect(r.signal).toBe(9);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it("exec chain runs only after success, stage files, cwd and env are applied", async () => {
    const r = await client.exec({
      argv: ["sh", "-c", 'cat in.txt; echo " $FOO"'],
      cwd: "/work",
      env: { FOO: "bar" },
      stage: [{ path: "/work/in.txt", data: Buffer.from("staged"), mode: 0o600 }],
      chain: { argv: ["echo", "chained"] },
    });
    expect(r.stdout.toString()).toBe("staged bar\nchained\n");
    expect(readFileSync(join(agent.root, "work/in.txt"), "utf8")).toBe("staged");
    const r2 = await client.exec({ argv: ["false"], chain: { argv: ["echo", "never"] } });
    expect(r2.exitCode).toBe(1);
    expect(r2.stdout.length).toBe(0);
  });

  it("interleaved concurrent execs on one connection each get their own output", async () => {
    const jobs = Array.from({ length: 24 }, (_, i) =>
      client.exec({
        argv: [
          "sh",
          "-c",
          i % 3 === 0
            ? `head -c ${200_000 + i} /dev/zero | tr '\\0' '${i % 10}'`
            : `echo job-${i}; exit ${i % 7}`,
        ],
      }),
    );
    const results = await Promise.all(jobs);
    results.forEach((r, i) => {
      if (i % 3 === 0) {
        expect(r.stdout.length).toBe(200_000 + i);
        expect(r.stdout.every((b) => b === 48 + (i % 10))).toBe(true);
      } else {
        expect(r.stdout.toString()).toBe(`job-${i}\n`);
        expect(r.exitCode).toBe(i % 7);
      }
    });
    expect(client.openChannels).toBe(0);
  });

  it("spawn: pull-style stdin/stdout, closeStdin, wait", async () => {
    const child = await client.spawn({ argv: ["cat"] });
    expect(child.pid).toBeGreaterThan(0);
    await child.writeStdin("hello ");
    await child.writeStdin(Buffer.from("world"));
    await child.closeStdin();
    const chunks: Buffer[] = [];
    for (;;) {
      const b = await child.readStdout(4);
      if (b.length === 0) break;
      expect(b.length).toBeLessThanOrEqual(4);
      chunks.push(b);
    }
    expect(Buffer.concat(chunks).toString()).toBe("hello world");
    // concurrent reads waiting for data both resolve
    const later = await client.spawn({ argv: ["sh", "-c", "sleep 0.2; printf ab"] });
    const [x, y] = await Promise.all([later.readStdout(1), later.readStdout(1)]);
    expect(Buffer.concat([x, y]).toString()).toBe("ab");
    await later.wait();
    expect(await child.readStderr()).toHaveLength(0);
    const exit = await child.wait();
    expect(exit.exitCode).toBe(0);
  });

  it("spawn: Readable stdout and Writable stdin with backpressure round-trip 8 MiB", async () => {
    const child = await client.spawn({ argv: ["cat"] });
    const input = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7) & 0xff;
    const got: Buffer[] = [];
    const done = new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (c: Buffer) => got.push(c));
      child.stdout.on("end", resolve);
      child.stdout.on("error", reject);
    });
    let writesQueued = 0;
    for (let off = 0; off < input.length; off += 100_000) {
      if (!child.stdin.write(input.subarray(off, off + 100_000))) {
        writesQueued++;
        await new Promise((r) => child.stdin.once("drain", r));
      }
    }
    child.stdin.end();
    await done;
    expect(Buffer.compare(Buffer.concat(got), input)).toBe(0);
    expect(writesQueued).toBeGreaterThan(0); // the Writable really applied backpressure
    expect((await child.wait()).exitCode).toBe(0);
  });

  it("signal terminates a spawned process and the exit event reports it", async () => {
    const child = await client.spawn({ argv: ["sleep", "30"] });
    const exitEvent = new Promise((resolve) => client.once("exit", resolve));
    await child.signal(15);
    const exit = await child.wait();
    expect(exit.exitCode).toBe(-1);
    expect(exit.signal).toBe(15);
    expect(await exitEvent).toMatchObject({ pid: child.pid, signal: 15 });
    const err = await rejection(client.signal(child.pid, 15));
    expect(err.code).toBe("SM_AGENT_REMOTE");
    expect(err.remoteCode).toBe("ESRCH");
  });

  it("closeStdin by pid ends the process's input; resize without a tty is EINVAL", async () => {
    const child = await client.spawn({ argv: ["wc", "-c"] });
    await child.writeStdin("12345");
    await new Promise((r) => setTimeout(r, 50));
    expect((await rejection(child.resize(100, 40))).remoteCode).toBe("EINVAL");
    await client.closeStdin(child.pid);
    expect((await child.readStdout()).toString().trim()).toBe("5");
    expect((await child.wait()).exitCode).toBe(0);
  });

  it("a request larger than the agent's maxFrame is refused locally, the session stays up", async () => {
    const big = Buffer.alloc(3 * 1024 * 1024);
    const err = await rejection(
      client.exec({
        argv: ["true"],
        stage: [
          { path: "/a", data: big },
          { path: "/b", data: big },
        ],
      }),
    );
    expect(err.code).toBe("SM_AGENT_INVALID_ARGS");
    expect(err.message).toMatch(/maxFrame/);
    expect(client.openChannels).toBe(0);
    await client.ping();
  });

  it("writeFile/readFile round-trip with modes; errors carry the agent's code", async () => {
    const data = Buffer.from("#!/bin/sh\necho hi\n");
    await client.writeFile("/opt/bin/hello.sh", data, { mode: 0o755 });
    const r = await client.readFile("/opt/bin/hello.sh");
    expect(r.data.equals(data)).toBe(true);
    expect(r.mode).toBe(0o755);
    const missing = await rejection(client.readFile("/nope/missing"));
    expect(missing.code).toBe("SM_AGENT_REMOTE");
    expect(missing.remoteCode).toBe("ENOENT");
    const noDirs = await rejection(client.writeFile("/x/y/z", data, { mkdirs: false }));
    expect(noDirs.remoteCode).toBe("ENOENT");
  });

  it("writeFile above 4 MiB fails locally with SM_FILE_TOO_LARGE; readFile above 4 MiB fails in the agent", async () => {
    const toAgent = tapFrames(pair.agent, "host-to-agent");
    const err = await rejection(client.writeFile("/big", Buffer.alloc(FILE_MAX + 1)));
    expect(err.code).toBe("SM_FILE_TOO_LARGE");
    expect(client.pendingRequests).toBe(0);
    await client.ping();
    expect(toAgent.filter((f) => f.t === "req").map((f) => (f as { op: string }).op)).toEqual(["ping"]);
    writeFileSync(join(agent.root, "big"), Buffer.alloc(FILE_MAX + 1));
    const err2 = await rejection(client.readFile("/big"));
    expect(err2.code).toBe("SM_FILE_TOO_LARGE");
    expect(err2.remoteCode).toBe("SM_FILE_TOO_LARGE");
    await client.writeFile("/exact", Buffer.alloc(FILE_MAX, 1));
    expect((await client.readFile("/exact")).data.length).toBe(FILE_MAX);
  });

  it("tcpConnect returns a Duplex to 127.0.0.1:port; refused ports fail with ECONNREFUSED", async () => {
    const server: Server = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      const d = await client.tcpConnect(port);
      const got: Buffer[] = [];
      const ended = new Promise<void>((r) => d.on("end", r));
      d.on("data", (c: Buffer) => got.push(c));
      d.write("ping over tcp ");
      d.end(Buffer.alloc(300_000, 0x41));
      await ended;
      expect(Buffer.concat(got).length).toBe(14 + 300_000);
      expect(Buffer.concat(got).subarray(0, 14).toString()).toBe("ping over tcp ");
      await new Promise((r) => setTimeout(r, 20));
      expect(client.openChannels).toBe(0);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
    const closedPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const err = await rejection(client.tcpConnect(closedPort));
    expect(err.remoteCode).toBe("ECONNREFUSED");
  });

  it("fsAttach opens a bidirectional share channel; fsDetach removes it; tags are validated", async () => {
    expect(client.hello?.caps).toEqual(expect.arrayContaining(["fs-attach", "fs-detach", "fs"]));
    const toAgent = tapFrames(pair.agent, "host-to-agent");
    const d = await client.fsAttach({ tag: "work", path: "/work" });
    const errored = new Promise<Error>((r) => d.on("error", r));
    const req = toAgent.find((f) => f.t === "req") as { op: string; args: Record<string, unknown> };
    expect(req.op).toBe("fs-attach");
    expect(req.args).toEqual({ tag: "work", path: "/work", ch: expect.any(Number) });
    expect(agent.shares.get("work")).toMatchObject({ path: "/work", orphaned: false });
    // the reference agent loops the bytes back: 600 KB round-trip needs credit in both directions
    const got: Buffer[] = [];
    let n = 0;
    const all = new Promise<void>((r) =>
      d.on("data", (c: Buffer) => {
        got.push(c);
        n += c.length;
        if (n === 600_000) r();
      }),
    );
    d.write(Buffer.alloc(600_000, 0x5a));
    await all;
    expect(Buffer.concat(got).equals(Buffer.alloc(600_000, 0x5a))).toBe(true);

    const dup = await rejection(client.fsAttach({ tag: "work" }));
    expect(dup.code).toBe("SM_AGENT_REMOTE");
    expect(dup.remoteCode).toBe("EEXIST");
    expect(client.openChannels).toBe(1); // the failed attach opened nothing

    for (const tag of ["", ".", "..", "a/b", "x".repeat(36), "sp ace", "é"]) {
      const e = await rejection(client.fsAttach({ tag }));
      expect(e.code).toBe("SM_AGENT_INVALID_ARGS");
    }
    expect((await rejection(client.fsAttach({ tag: "ok", path: "rel" }))).code).toBe("SM_AGENT_INVALID_ARGS");
    expect((await rejection(client.fsDetach("../x"))).code).toBe("SM_AGENT_INVALID_ARGS");

    await client.fsDetach("work");
    expect(agent.shares.has("work")).toBe(false);
    await new Promise((r) => setTimeout(r, 20));
    expect(client.openChannels).toBe(0);
    expect((await errored).message).toMatch(/reset by the peer/); // the detach closed the channel
    const gone = await rejection(client.fsDetach("work"));
    expect(gone.remoteCode).toBe("ENOENT");
  });

  it("destroying a share's Duplex closes the channel and orphans the share until fsDetach", async () => {
    const d = await client.fsAttach({ tag: "t1" });
    d.destroy();
    await new Promise((r) => setTimeout(r, 50));
    expect(agent.shares.get("t1")?.orphaned).toBe(true);
    expect(client.openChannels).toBe(0);
    expect((await rejection(client.fsAttach({ tag: "t1" }))).remoteCode).toBe("EEXIST");
    await client.fsDetach("t1");
    const again = await client.fsAttach({ tag: "t1" });
    expect(agent.shares.get("t1")?.orphaned).toBe(false);
    again.destroy();
  });

  it("resume sends the time and fresh entropy; ping and stats answer", async () => {
    await client.resume();
    expect(agent.lastResume?.entropy.length).toBe(64);
    const ns = BigInt(agent.lastResume!.timeNs);
    expect(Number(ns / 1_000_000n)).toBeGreaterThan(Date.now() - 5000);
    await client.resume({ timeNs: 5n, entropy: Buffer.alloc(32, 7) });
    expect(agent.lastResume).toEqual({ timeNs: 5, entropy: Buffer.alloc(32, 7) });
    await client.ping();
    const s = await client.stats();
    expect(s.memTotalKib).toBeGreaterThan(0);
    expect(s.uptimeMs).toBeGreaterThan(0);
  });

  it("unknown ops are answered with SM_UNKNOWN_OP and the session stays usable", async () => {
    const err = await rejection(client.request("frobnicate", { x: 1 }));
    expect(err.code).toBe("SM_AGENT_REMOTE");
    expect(err.remoteCode).toBe("SM_UNKNOWN_OP");
    await client.ping();
  });

  it("AbortSignal cancels an exec: the call rejects at once, the guest process is killed, the session survives", async () => {
    const ac = new AbortController();
    const pidFile = join(agent.root, "pid");
    const p = client.exec(
      { argv: ["sh", "-c", "echo $$ > /dev/stderr; echo $$ > pid; exec sleep 30"] },
      { signal: ac.signal },
    );
    for (let i = 0; i < 100 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 20));
    const pid = Number(readFileSync(pidFile, "utf8"));
    const t0 = Date.now();
    ac.abort();
    const err = await rejection(p);
    expect(err.code).toBe("SM_AGENT_ABORTED");
    expect(Date.now() - t0).toBeLessThan(100);
    for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
    expect(isAlive(pid)).toBe(false);
    await client.ping();
    for (let i = 0; i < 50 && client.pendingRequests > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(client.pendingRequests).toBe(0);
    expect(client.state).toBe("connected");
  });

  it("maxOutputBytes caps collected output: a flooding guest is killed, the session survives", async () => {
    const t0 = Date.now();
    const err = await rejection(
      client.exec({ argv: ["sh", "-c", "while :; do echo flood; done"], maxOutputBytes: 1_000_000 }),
    );
    expect(err.code).toBe("SM_AGENT_OUTPUT_LIMIT");
    expect(Date.now() - t0).toBeLessThan(10_000);
    const small = await rejection(client.exec({ argv: ["echo", "0123456789"], maxOutputBytes: 5 }));
    expect(small.code).toBe("SM_AGENT_OUTPUT_LIMIT");
    expect((await client.exec({ argv: ["echo", "ok"], maxOutputBytes: 3 })).stdout.toString()).toBe("ok\n");
    await client.ping();
  });

  it("a per-call timeout rejects with SM_AGENT_TIMEOUT; an already-aborted signal never sends", async () => {
    const err = await rejection(client.exec({ argv: ["sleep", "5"] }, { timeoutMs: 100 }));
    expect(err.code).toBe("SM_AGENT_TIMEOUT");
    const ac = new AbortController();
    ac.abort();
    expect((await rejection(client.ping({ signal: ac.signal }))).code).toBe("SM_AGENT_ABORTED");
    await client.ping();
  });

  it("transport loss rejects pending calls with SM_AGENT_LOST and errors every channel", async () => {
    const failed = new Promise<AgentError>((r) => client.once("failed", r));
    const child = await client.spawn({ argv: ["sleep", "30"] });
    const stdoutError = new Promise<Error>((r) => child.stdout.once("error", r));
    const waitP = child.wait();
    const execP = client.exec({ argv: ["sleep", "30"] });
    const pingP = client.ping();
    await new Promise((r) => setTimeout(r, 50));
    pair.agent.destroy();
    for (const p of [execP, waitP]) expect((await rejection(p)).code).toBe("SM_AGENT_LOST");
    await pingP.catch(() => {}); // may have been answered before the loss
    expect((await stdoutError).message).toMatch(/lost the agent/);
    expect((await failed).code).toBe("SM_AGENT_LOST");
    expect(client.state).toBe("failed");
    expect((await rejection(client.ping())).code).toBe("SM_AGENT_LOST");
    expect(client.openChannels).toBe(0);
  });

  it("shutdown ends the session normally (closed, not failed)", async () => {
    let failed = false;
    client.on("failed", () => {
      failed = true;
    });
    await client.shutdown();
    for (let i = 0; i < 100 && client.state !== "closed"; i++) await new Promise((r) => setTimeout(r, 10));
    expect(client.state).toBe("closed");
    expect(failed).toBe(false);
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
