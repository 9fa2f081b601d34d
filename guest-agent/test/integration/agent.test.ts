/**
 * The real agent in a real VM: QEMU (TCG here) + Debian cloud kernel + a busybox squashfs,
 * booted through @supermachine/hypervisor-kvm, initramfs from @supermachine/rootfs, driven by
 * @supermachine/agent-protocol's AgentClient. One cold boot shared by every case; two restores
 * from one snapshot for the restore-safety case. Every QEMU is stopped in afterAll.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { type AgentClient, connectAgent, encodeBootConfig } from "@supermachine/agent-protocol";
import { listCachedBundles, type Vm } from "@supermachine/hypervisor";
import { createKvmBackend } from "@supermachine/hypervisor-kvm";
import { buildInitramfs, buildRootfs, tarFileLayer } from "@supermachine/rootfs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// plain-JS helpers shared with scripts/boot-test.mjs (hand-built busybox squashfs)
import { buildAgent } from "../../scripts/lib/image.mjs";
import { BASE_MODULES, bootBusybox, vmSkipReason } from "./_vm";

const MODULES = [...BASE_MODULES];

const reason = vmSkipReason();
const HELLO_MS = 180_000;

describe.skipIf(reason)(`guest agent in a VM${reason ? ` (skipped: ${reason})` : ""}`, () => {
  const backend = createKvmBackend({ arch: "x86_64" });
  const vms: Vm[] = [];
  let work = "";
  let vm: Vm;
  let agent: AgentClient;

  async function connect(v: Vm): Promise<AgentClient> {
    return connectAgent(await v.agentStream(), { helloTimeoutMs: HELLO_MS });
  }

  /** Boot a second busybox VM whose boot config adds `config` (hostname sm-<name>), and connect. */
  async function bootWithConfig(name: string, config: Omit<Parameters<typeof encodeBootConfig>[0], "hostname">) {
    const initrd = join(work, `initrd-${name}.cpio`);
    const bundle = listCachedBundles("x86_64")[0];
    if (!bundle) throw new Error("no kernel bundle");
    await buildInitramfs({
      init: buildAgent("x86_64"),
      modulesDir: bundle.modulesDir,
      modules: MODULES,
      config: encodeBootConfig({ hostname: `sm-${name}`, ...config }),
      out: initrd,
    });
    const v = await backend.boot({ initrd, rootfs: join(work, "rootfs.sqfs"), accel: "tcg", memoryMib: 256 });
    vms.push(v);
    return { v, c: await connect(v) };
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "sm-agent-it-"));
    ({ vm, agent } = await bootBusybox(backend, work, { modules: MODULES, hostname: "sm-it", helloTimeoutMs: HELLO_MS }));
    vms.push(vm);
  }, 300_000);

  afterAll(async () => {
    for (const v of vms) await v.stop().catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it("boots busybox to ready", () => {
    expect(agent.hello?.ready).toBe(true);
    expect(agent.hello?.caps).toEqual(expect.arrayContaining(["exec", "spawn", "resume", "tty", "agent-exe"]));
  });

  it("exec echo", async () => {
    const r = await agent.exec({ argv: ["echo", "hello"] });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe("hello\n");
  });

  it("reports a failing exit code and stderr", async () => {
    const r = await agent.exec({ argv: ["sh", "-c", "echo oops >&2; exit 7"] });
    expect(r).toMatchObject({ exitCode: 7, signal: null, timedOut: false });
    expect(r.stderr.toString()).toBe("oops\n");
  });

  it("a missing binary exits 127 with a shell-like message", async () => {
    const r = await agent.exec({ argv: ["definitely-not-here"] });
    expect(r.exitCode).toBe(127);
    expect(r.stderr.toString()).toBe("sm-agent: definitely-not-here: command not found\n");
  });

  it("resolves a bare name through PATH like a shell: missing entries, directories and non-executable files are passed over", async () => {
    const setup = await agent.exec({
      argv: [
        "sh",
        "-c",
        "mkdir -p /tmp/p1 /tmp/p2 /tmp/p3/tool && echo 'echo wrong' > /tmp/p1/tool && chmod 644 /tmp/p1/tool && " +
          "printf '#!/bin/sh\\necho p2 \"$@\"\\n' > /tmp/p2/tool && chmod 755 /tmp/p2/tool",
      ],
    });
    expect(setup.exitCode).toBe(0);
    // a missing dir, a directory named like the command, a file that is not executable, a path
    // through a regular file (ENOTDIR), then the executable
    const env = { PATH: "/nonexistent:/tmp/p3:/tmp/p1:/etc/passwd:/tmp/p2" };
    const r = await agent.exec({ argv: ["tool", "x"], env });
    expect(r).toMatchObject({ exitCode: 0 });
    expect(r.stdout.toString()).toBe("p2 x\n");
    // found only where it cannot be executed: 126 like a shell, not "command not found"
    const denied = await agent.exec({ argv: ["tool"], env: { PATH: "/nonexistent:/tmp/p1" } });
    expect(denied.exitCode).toBe(126);
    expect(denied.stderr.toString()).toBe("sm-agent: tool: Permission denied\n");
    const missing = await agent.exec({ argv: ["tool"], env: { PATH: "/nonexistent:/etc/passwd" } });
    expect(missing.exitCode).toBe(127);
  });

  it("the agent binary run as any other process only answers --version; it never runs the boot", async () => {
    const v = await agent.exec({ argv: ["/proc/1/exe", "--version"] });
    expect(v).toMatchObject({ exitCode: 0 });
    expect(v.stdout.toString()).toMatch(/^sm-agent \S+\n$/);
    const other = await agent.exec({ argv: ["/proc/1/exe"] });
    expect(other.exitCode).toBe(2);
    expect(other.stderr.toString()).toMatch(/runs as PID 1/);
    // the boot would have mounted /proc and /dev a second time
    const mounts = await agent.exec({ argv: ["sh", "-c", "grep -c ' /proc ' /proc/mounts; grep -c ' /dev ' /proc/mounts"] });
    expect(mounts.stdout.toString()).toBe("1\n1\n");
    const stats = await agent.stats();
    expect(stats.uptimeMs).toBeGreaterThan(0);
    expect(stats.memTotalKib).toBeGreaterThan(100 * 1024);
    expect(stats.memAvailKib).toBeGreaterThan(0);
    expect(stats.memAvailKib).toBeLessThanOrEqual(stats.memTotalKib);
  });

  it("stage files are written before cwd is checked: a chain may run inside a freshly staged directory", async () => {
    const r = await agent.exec({
      argv: ["cat", "/tmp/staged-dir/in.txt"],
      stage: [{ path: "/tmp/staged-dir/in.txt", data: Buffer.from("staged\n"), mode: 0o640 }],
      chain: { argv: ["sh", "-c", "pwd; ls -l in.txt | cut -c1-10"], cwd: "/tmp/staged-dir" },
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe("staged\n/tmp/staged-dir\n-rw-r-----\n");
  });

  it("timeout kills the whole process group", async () => {
    const t0 = Date.now();
    const r = await agent.exec({ argv: ["sh", "-c", "sleep 60 & sleep 60"], timeoutMs: 500 });
    expect(r).toMatchObject({ exitCode: -1, signal: 9, timedOut: true });
    expect(Date.now() - t0).toBeLessThan(30_000);
    const ps = await agent.exec({ argv: ["sh", "-c", "ps -o comm | grep -c '^sleep' || true"] });
    expect(ps.stdout.toString().trim()).toBe("0");
  });

  it("a tty's stty size follows resize", async () => {
    const child = await agent.spawn({ argv: ["sh"], tty: true, winsize: { cols: 80, rows: 24 } });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const until = async (re: RegExp) => {
      const end = Date.now() + 60_000;
      while (!re.test(out)) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${re} in ${JSON.stringify(out)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await child.writeStdin("stty size\n");
    await until(/^24 80\r?$/m);
    await child.resize(132, 43);
    await child.writeStdin("stty size\n");
    await until(/^43 132\r?$/m);
    await child.writeStdin("exit 5\n");
    const exit = await child.wait();
    expect(exit.exitCode).toBe(5);
  });

  it("streams 50 MiB of stdout through a slow reader with bounded host memory", async () => {
    const total = 50 * 1024 * 1024;
    const child = await agent.spawn({ argv: ["head", "-c", String(total), "/dev/zero"] });
    const base = process.memoryUsage().arrayBuffers;
    let peak = 0;
    let got = 0;
    for (;;) {
      const chunk = await child.readStdout(256 * 1024);
      if (chunk.length === 0) break;
      got += chunk.length;
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
      if (got % (4 * 1024 * 1024) < chunk.length) await new Promise((r) => setTimeout(r, 20)); // slow reader
    }
    const exit = await child.wait();
    expect(exit.exitCode).toBe(0);
    expect(got).toBe(total);
    // flow control: the host never holds much more than a window per stream
    expect(peak).toBeLessThan(32 * 1024 * 1024);
  }, 600_000);

  it("spawn: stdin flows through cat with credit from the agent", async () => {
    const child = await agent.spawn({ argv: ["cat"] });
    const payload = Buffer.alloc(1024 * 1024 + 123, 0x61);
    const reading = (async () => {
      const parts: Buffer[] = [];
      for (;;) {
        const b = await child.readStdout(256 * 1024);
        if (b.length === 0) return Buffer.concat(parts);
        parts.push(b);
      }
    })();
    await child.writeStdin(payload); // more than one 256 KiB window: needs the agent's credit frames
    await child.closeStdin();
    const back = await reading;
    expect((await child.wait()).exitCode).toBe(0);
    expect(back.length).toBe(payload.length);
    expect(Buffer.compare(back, payload)).toBe(0);
  }, 300_000);

  it("orphaned children are reaped: no zombies accumulate", async () => {
    const r = await agent.exec({
      argv: [
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.05 &); done; sleep 2; grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l",
      ],
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toBe("0");
  });

  it("write-file / read-file round trip with modes and parent directories", async () => {
    const data = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
    await agent.writeFile("/srv/deep/dir/blob.bin", data, { mode: 0o640 });
    const back = await agent.readFile("/srv/deep/dir/blob.bin");
    expect(back.mode).toBe(0o640);
    expect(Buffer.compare(back.data, data)).toBe(0);
    const st = await agent.exec({ argv: ["stat", "-c", "%a %s", "/srv/deep/dir/blob.bin"] });
    expect(st.stdout.toString().trim()).toBe("640 70000");
    await expect(agent.readFile("/no/such/file")).rejects.toMatchObject({ code: "SM_AGENT_REMOTE", remoteCode: "ENOENT" });
  });

  // A real guest-wide OOM kill takes minutes under TCG (the guest thrashes on page cache first;
  // measured: an awk hog reached 181 MiB RSS in 256 MiB and was still running after 120 s), so
  // this checks the two halves separately: the agent is exempt from the OOM killer, and a
  // process SIGKILLed (what the OOM killer does) is reported with signal 9 and its peak RSS.
  it("OOM safety: PID 1 has oom_score_adj -1000; a SIGKILLed process is reported with signal 9", async () => {
    const adj = await agent.exec({ argv: ["cat", "/proc/1/oom_score_adj"] });
    expect(adj.stdout.toString().trim()).toBe("-1000");
    const r = await agent.exec({ argv: ["sh", "-c", "x=$(head -c 20000000 /dev/zero | tr '\\0' a); kill -9 $$"] });
    expect(r).toMatchObject({ exitCode: -1, signal: 9, timedOut: false });
    expect(r.peakRssKib).toBeGreaterThan(20_000);
    await agent.ping();
  }, 300_000);

  it("a real OOM kill: commands run with oom_score_adj 0, a cgroup-limited hog is killed, the agent survives", async () => {
    // A static hog that allocates and touches memory forever, staged into the guest's tmpfs.
    const src = join(work, "hog.c");
    const bin = join(work, "hog");
    writeFileSync(
      src,
      "#include <stdlib.h>\n#include <string.h>\nint main(void){for(;;){char*p=malloc(1<<20);if(!p)return 3;memset(p,90,1<<20);}}\n",
    );
    execFileSync("musl-gcc", ["-static", "-O2", "-o", bin, src]);
    const adj = await agent.exec({ argv: ["cat", "/proc/self/oom_score_adj"] });
    expect(adj.stdout.toString().trim()).toBe("0");
    const r = await agent.exec({
      argv: [
        "sh",
        "-c",
        "mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null; echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p /sys/fs/cgroup/hog && echo 16M > /sys/fs/cgroup/hog/memory.max && echo $$ > /sys/fs/cgroup/hog/cgroup.procs && exec /tmp/oom-hog",
      ],
      stage: [{ path: "/tmp/oom-hog", data: readFileSync(bin), mode: 0o755 }],
      timeoutMs: 120_000,
    });
    expect(r).toMatchObject({ exitCode: -1, signal: 9, timedOut: false });
    const ev = await agent.exec({ argv: ["cat", "/sys/fs/cgroup/hog/memory.events"] });
    expect(ev.stdout.toString()).toMatch(/^oom_kill [1-9]/m);
    await agent.ping();
    // the same hog with no cgroup of its own meets sm-work's memory.max: killed there, not by a
    // guest-wide OOM, and the agent keeps answering
    const before = await agent.exec({ argv: ["grep", "^oom_kill ", "/sys/fs/cgroup/sm-work/memory.events"] });
    const hog = await agent.exec({ argv: ["/tmp/oom-hog"], timeoutMs: 120_000 });
    expect(hog).toMatchObject({ exitCode: -1, signal: 9, timedOut: false });
    const after = await agent.exec({ argv: ["grep", "^oom_kill ", "/sys/fs/cgroup/sm-work/memory.events"] });
    const kills = (r: { stdout: Buffer }) => Number(r.stdout.toString().split(" ")[1]);
    expect(kills(after)).toBe(kills(before) + 1);
    const t0 = Date.now();
    await agent.ping();
    expect(Date.now() - t0).toBeLessThan(3000);
  }, 300_000);

  it("a fork bomb cannot take the agent down: commands run in the sm-work cgroup (task cap, low CPU weight)", async () => {
    const cg = await agent.exec({
      argv: ["sh", "-c", "cat /proc/self/cgroup /sys/fs/cgroup/sm-work/pids.max /sys/fs/cgroup/sm-work/cpu.weight /sys/fs/cgroup/sm-work/memory.max"],
    });
    const [where, pidsMax, weight, memMax] = cg.stdout.toString().trim().split("\n");
    expect(where).toBe("0::/sm-work");
    expect(agent.hello?.caps).toContain("work-cgroup");
    expect(Number(pidsMax)).toBeGreaterThanOrEqual(256);
    expect(weight).toBe("10");
    expect(Number(memMax)).toBeGreaterThan(64 << 20);
    // the classic: every function call forks two more, in the background
    const bomb = await agent.exec({ argv: ["sh", "-c", "b() { b | b & }; b"], timeoutMs: 5000 });
    expect(bomb.exitCode).toBe(0); // the first shell is done at once; its offspring multiply
    await new Promise((r) => setTimeout(r, 8000));
    // the agent answers promptly although the guest is full of forking shells...
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      await agent.ping();
      expect(Date.now() - t0).toBeLessThan(3000);
    }
    // ...and still runs commands: they are created outside the cap, then moved in
    const st = await agent.exec({ argv: ["cat", "/sys/fs/cgroup/sm-work/pids.current"], timeoutMs: 30_000 });
    expect(Number(st.stdout.toString())).toBeGreaterThan(Number(pidsMax) / 2);
    // the way out: kill the whole group (the killing shell included)
    const kill = await agent.exec({ argv: ["sh", "-c", "echo 1 > /sys/fs/cgroup/sm-work/cgroup.kill"], timeoutMs: 30_000 });
    expect(kill.exitCode).toBe(-1);
    const until = Date.now() + 30_000;
    let left = 0;
    do {
      await new Promise((r) => setTimeout(r, 500));
      left = Number((await agent.exec({ argv: ["cat", "/sys/fs/cgroup/sm-work/pids.current"] })).stdout.toString());
    } while (left > 1 && Date.now() < until);
    expect(left).toBe(1); // the cat itself
  }, 180_000);

  it("workload: started by resume, listening reported, tcp-connect reaches it, workload-signal stops it", async () => {
    const { v, c } = await bootWithConfig("httpd", {
      workload: { argv: ["httpd", "-f", "-p", "8080", "-h", "/www"], env: ["PATH=/bin"], cwd: "/", user: "app" },
      startWorkload: "resume",
      guestPort: 8080,
      listenerRequired: true,
    });
    // pre-exec mode: nothing runs until resume
    const before = await c.exec({ argv: ["sh", "-c", "pidof httpd || echo none"] });
    expect(before.stdout.toString().trim()).toBe("none");
    expect(c.hello?.listening).toBeNull();
    const listening = new Promise<number>((resolve) => c.once("listening", (e) => resolve(e.port)));
    await c.resume();
    expect(await listening).toBe(8080);
    const who = await c.exec({ argv: ["sh", "-c", "ps -o user,comm | grep httpd"] });
    expect(who.stdout.toString()).toMatch(/app\s+httpd/);
    const sock = await c.tcpConnect(8080);
    const body = await new Promise<string>((resolve, reject) => {
      let got = "";
      sock.on("data", (d: Buffer) => {
        got += d.toString();
      });
      sock.on("end", () => resolve(got));
      sock.on("error", reject);
      sock.end("GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    });
    expect(body).toMatch(/^HTTP\/1\.[01] 200/);
    expect(body).toContain("hello from sm");
    const exited = new Promise<{ exitCode: number; signal: number | null }>((resolve) => c.once("workload-exit", resolve));
    await c.workloadSignal(15);
    expect(await exited).toEqual({ exitCode: -1, signal: 15 });
    await expect(c.workloadSignal(15)).rejects.toMatchObject({ remoteCode: "ESRCH" });
    c.close();
    await v.stop();
  }, 600_000);

  it("a workload that starts listening late is still reported: the LISTEN poll backs off but keeps going", async () => {
    const { v, c } = await bootWithConfig("late", {
      workload: { argv: ["sh", "-c", "sleep 4; exec httpd -f -p 8081 -h /www"], env: ["PATH=/bin"], cwd: "/" },
      startWorkload: "resume",
      guestPort: 8081,
    });
    const listening = new Promise<number>((resolve) => c.once("listening", (e) => resolve(e.port)));
    const t0 = Date.now();
    await c.resume();
    expect(await listening).toBe(8081);
    const after = Date.now() - t0;
    expect(after).toBeGreaterThanOrEqual(4000);
    // the poll interval is capped at 1 s: seen well before a generous bound
    expect(after).toBeLessThan(4000 + 5000);
    c.close();
    await v.stop();
  }, 600_000);

  it("host disconnect and reconnect: a new connection gets a new session, spawned processes survive", async () => {
    const child = await agent.spawn({ argv: ["sleep", "600"] });
    agent.close();
    agent = await connect(vm); // agentStream() again: the old socket closes, the guest sees HUP, then a new hello
    const ps = await agent.exec({ argv: ["sh", "-c", `kill -0 ${child.pid} && echo alive`] });
    expect(ps.stdout.toString()).toBe("alive\n");
    await agent.signal(child.pid, 9);
  });

  // the debian-python fixture image (scripts/setup: debootstrap minbase + python3, user app uid 1000)
  const fixturesJson = join(
    process.env.XDG_CACHE_HOME || join(homedir(), ".cache"),
    "supermachine/fixtures/fixtures.json",
  );
  const pyLayout = existsSync(fixturesJson)
    ? (JSON.parse(readFileSync(fixturesJson, "utf8")).images?.["debian-python"]?.layout as string | undefined)
    : undefined;
  it.skipIf(!pyLayout)(
    `debian-python image: python3 -c runs as the non-root image user${pyLayout ? "" : " (skipped: no debian-python fixture; npm run setup)"}`,
    async () => {
      const layout = pyLayout as string;
      const blob = (d: string) => join(layout, "blobs", ...d.split(":"));
      const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
      const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), "utf8"));
      const rootfs = join(work, "python.sqfs");
      await buildRootfs({
        layers: manifest.layers.map((l: { digest: string }) => tarFileLayer(blob(l.digest), l.digest)),
        out: rootfs,
      });
      const bundle = listCachedBundles("x86_64")[0];
      if (!bundle) throw new Error("no kernel bundle");
      const initrd = join(work, "initrd-python.cpio");
      await buildInitramfs({
        init: buildAgent("x86_64"),
        modulesDir: bundle.modulesDir,
        modules: MODULES,
        config: encodeBootConfig({
          hostname: "sm-python",
          workload: {
            argv: ["python3"],
            env: ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
            cwd: "/",
            user: "app",
          },
          startWorkload: "never",
        }),
        out: initrd,
      });
      const v = await backend.boot({ initrd, rootfs, accel: "tcg", memoryMib: 256 });
      vms.push(v);
      const c = await connect(v);
      const r = await c.exec({
        argv: ["python3", "-c", "import os, pwd; print(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name, os.getcwd())"],
        user: "app",
        cwd: "/tmp",
      });
      expect(r.stderr.toString()).toBe("");
      expect(r.stdout.toString().trim()).toBe("1000 1000 app /tmp");
      expect(r.exitCode).toBe(0);
      c.close();
      await v.stop();
    },
    600_000,
  );

  it("snapshot → restore twice: clocks follow the host and the RNG diverges", async () => {
    const snap = join(work, "snap");
    await vm.snapshot(snap);
    // let the snapshot age so a restored clock without resume would be visibly behind
    await new Promise((r) => setTimeout(r, 3000));
    const results: { guestMs: number; before: number; after: number; random: string }[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await backend.restore(snap, { accel: "tcg" });
      vms.push(r);
      const c = await connect(r);
      await c.resume();
      const before = Date.now();
      // busybox date has no %N: adjtimex prints the realtime clock as tv_sec / tv_usec
      const t = await c.exec({
        argv: ["sh", "-c", "adjtimex | sed -n 's/.*tv_u*sec: *//p'; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"],
      });
      const after = Date.now();
      const [sec, usec, random] = t.stdout.toString().trim().split("\n");
      results.push({ guestMs: Number(sec) * 1000 + Math.floor(Number(usec) / 1000), before, after, random: random ?? "" });
      c.close();
      await r.stop();
    }
    for (const r of results) {
      expect(r.random).toMatch(/^[0-9a-f]{64}$/);
      // the guest read its clock while the exec was in flight: within 1 s of [before, after]
      expect(r.guestMs).toBeGreaterThanOrEqual(r.before - 1000);
      expect(r.guestMs).toBeLessThanOrEqual(r.after + 1000);
    }
    expect(results[0]?.random).not.toBe(results[1]?.random);
  }, 600_000);
});
