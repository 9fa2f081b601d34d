/**
 * Boot-config features of the agent in real VMs (QEMU TCG + Debian cloud kernel + busybox squashfs):
 * - `volumes`: a blank sparse raw file as /dev/vdb is formatted ext4 by the image's mke2fs and mounted at
 *   /data; a second boot with format:true again keeps the data; the host's e2fsprogs check the image.
 *   A device mke2fs cannot format gives a clear console message, and the VM still boots.
 * - `network`: static address, default route, resolv.conf, and a real TCP exchange with a server on the
 *   host's 127.0.0.1 (QEMU user-mode networking maps 10.0.2.2 to the host loopback).
 * - vsock transport: with the vsock + vsock_loopback modules the agent listens on vsock port 1024; a static
 *   client inside the guest connects to CID 1 and performs the hello handshake; a later virtio-serial hello
 *   takes the session back (and the agent closes the vsock connection).
 * Two VMs in all (the second one serves the volume re-boot, network and vsock cases); every QEMU is stopped
 * in afterAll.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type AgentClient,
  type BootConfig,
  connectAgent,
  DEFAULT_WINDOW,
  decodeFrame,
  encodeBootConfig,
  encodeFrame,
  MAX_FRAME,
} from "@supermachine/agent-protocol";
import { findExecutable, listCachedBundles, NET_GUEST_MODULES, type NetworkMode, type Vm } from "@supermachine/hypervisor";
import { createKvmBackend } from "@supermachine/hypervisor-kvm";
import { buildInitramfs } from "@supermachine/rootfs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAgent, buildBusyboxSquashfs } from "../../scripts/lib/image.mjs";
import { BASE_MODULES, vmSkipReason } from "./_vm";

const VSOCK_PORT = 1024; // SM_VSOCK_PORT in guest-agent/src/vsock.h
const HELLO_MS = 180_000;
const MKE2FS = "/sbin/mke2fs";

function skipReason(): string | undefined {
  const vm = vmSkipReason();
  if (vm) return vm;
  if (!existsSync(MKE2FS) || !findExecutable("debugfs") || !findExecutable("e2fsck"))
    return "e2fsprogs (mke2fs, debugfs, e2fsck) is not installed on the host";
  return undefined;
}

/**
 * The busybox fixture plus the host's real e2fsprogs mke2fs and the shared libraries it needs (from ldd):
 * an image that ships a mke2fs, which is what the agent's volume formatting uses (SPEC §12). Busybox's own
 * mke2fs applet makes ext2 only and lives in /bin, so the agent does not use it.
 */
function buildImageWithMke2fs(work: string): string {
  buildBusyboxSquashfs(work); // populates work/root
  const root = join(work, "root");
  const put = (hostPath: string) => {
    const dst = join(root, hostPath);
    mkdirSync(dirname(dst), { recursive: true });
    copyFileSync(realpathSync(hostPath), dst);
  };
  put(MKE2FS);
  const ldd = execFileSync("ldd", [MKE2FS], { encoding: "utf8" });
  for (const m of ldd.matchAll(/(\/\S+\.so[.\d]*)/g)) if (m[1]) put(m[1]);
  const out = join(work, "rootfs-mke2fs.sqfs");
  execFileSync("mksquashfs", [root, out, "-noappend", "-quiet", "-no-progress", "-all-root"], { stdio: "ignore" });
  return out;
}

const reason = skipReason();

describe.skipIf(reason)(`boot config in a VM: volumes, network, vsock${reason ? ` (skipped: ${reason})` : ""}`, () => {
  const backend = createKvmBackend({ arch: "x86_64" });
  const vms: Vm[] = [];
  let work = "";
  let init = "";
  let rootfs = "";
  let dataImg = "";
  let tinyImg = "";
  let modulesDir = "";
  let vsockClient = "";
  let server: Server | undefined;

  async function boot(
    name: string,
    o: { config: BootConfig; modules?: string[]; network?: NetworkMode; kernelArgs?: string[]; volumes: string[] },
  ): Promise<{ vm: Vm; agent: AgentClient }> {
    const initrd = join(work, `${name}.cpio`);
    await buildInitramfs({
      init,
      modulesDir,
      modules: [...BASE_MODULES, ...(o.modules ?? [])],
      config: encodeBootConfig({ hostname: name, tmpfsMib: 64, startWorkload: "never", ...o.config }),
      out: initrd,
    });
    const vm = await backend.boot({
      initrd,
      rootfs,
      accel: "tcg",
      memoryMib: 256,
      volumes: o.volumes.map((path) => ({ path })),
      network: o.network ?? "none",
      kernelArgs: o.kernelArgs ?? [],
    });
    vms.push(vm);
    const agent = await connectAgent(await vm.agentStream(), { helloTimeoutMs: HELLO_MS });
    return { vm, agent };
  }

  async function sh(agent: AgentClient, script: string, timeoutMs = 60_000) {
    const r = await agent.exec({ argv: ["sh", "-c", script], timeoutMs });
    return { ...r, out: r.stdout.toString(), err: r.stderr.toString() };
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "sm-bootcfg-it-"));
    init = buildAgent("x86_64");
    rootfs = buildImageWithMke2fs(work);
    const bundle = listCachedBundles("x86_64")[0];
    if (!bundle) throw new Error("no kernel bundle");
    modulesDir = bundle.modulesDir;
    dataImg = join(work, "data.img");
    writeFileSync(dataImg, "");
    truncateSync(dataImg, 64 * 1024 * 1024); // sparse, all zero = blank
    tinyImg = join(work, "tiny.img");
    writeFileSync(tinyImg, Buffer.alloc(64 * 1024)); // blank, but too small for an ext4 with a journal
    vsockClient = join(work, "vsock-client");
    const src = fileURLToPath(new URL("../vsock-client.c", import.meta.url));
    execFileSync("musl-gcc", ["-static", "-O2", "-o", vsockClient, src]);
  }, 300_000);

  afterAll(async () => {
    for (const v of vms) await v.stop().catch(() => undefined);
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    if (work) rmSync(work, { recursive: true, force: true });
  }, 180_000);

  // ---------------------------------------------------------------- volumes, first boot

  let firstConsole = "";
  let vm1: Vm;
  let agent1: AgentClient;
  const payload = `written in the first VM ${randomInt(1 << 30)}\n`;

  it("format:true on a blank device: the image's mke2fs makes ext4, mounted at /data (mkdir -p); an unformattable device is reported, the VM still boots", async () => {
    ({ vm: vm1, agent: agent1 } = await boot("sm-vol1", {
      volumes: [dataImg, tinyImg],
      modules: ["vsock", "vsock_loopback"], // for the next check: no sm.vsock_local on this VM
      config: {
        volumes: [
          { device: "/dev/vdb", path: "/data", format: true },
          { device: "/dev/vdc", path: "/mnt/deep/bad", format: true },
        ],
      },
    }));
    const [vm, agent] = [vm1, agent1];
    const mounts = await sh(agent, "cat /proc/mounts");
    expect(mounts.out).toMatch(/^\/dev\/vdb \/data ext4 rw[, ]/m);
    expect(mounts.out).not.toMatch(/\/mnt\/deep\/bad/);
    const w = await sh(agent, `printf '%s' '${payload}' > /data/hello.txt && mkdir -p /data/sub && echo x > /data/sub/y && sync && cat /data/hello.txt`);
    expect(w.exitCode).toBe(0);
    expect(w.out).toBe(payload);
    const bad = await sh(agent, "test -d /mnt/deep/bad && echo dir-created");
    expect(bad.out.trim()).toBe("dir-created");
    firstConsole = vm.consoleTail(200);
    const formatted = /sm-agent: volume \/dev\/vdb: formatted ext4 with \/sbin\/mke2fs in (\d+) ms/.exec(firstConsole);
    expect(formatted, firstConsole).not.toBeNull();
    console.log(`mke2fs of the 64 MiB volume in the guest (TCG): ${formatted?.[1]} ms`);
    expect(firstConsole).toMatch(/sm-agent: volume \/dev\/vdc: \/sbin\/mke2fs failed \(exit status 1\)/);
    expect(firstConsole).toMatch(/sm-agent: volume \/dev\/vdc: not formatted, not mounted on \/mnt\/deep\/bad/);
    expect(firstConsole).not.toMatch(/Kernel panic/);
  }, 400_000);

  it("vsock without sm.vsock_local: a peer inside the guest (CID 1) is refused, the virtio-serial session goes on", async () => {
    const [vm, agent] = [vm1, agent1];
    await agent.writeFile("/tmp/vsock-client", readFileSync(vsockClient), { mode: 0o755 });
    const hello = encodeFrame({ t: "hello", v: 1, host: "x", maxFrame: MAX_FRAME, window: DEFAULT_WINDOW, nonce: 7 });
    const local = await sh(agent, `/tmp/vsock-client 1 ${VSOCK_PORT} ${hello.toString("hex")}`);
    expect(local.exitCode).toBe(1);
    expect(local.out).toBe("");
    expect(vm.consoleTail(50)).toMatch(/sm-agent: vsock: refused a connection from CID 1 \(only the host, CID 2, may connect\)/);
    await agent.ping({ timeoutMs: 10_000 }); // the virtio-serial session is untouched
  });

  it("after a clean power-off the host's e2fsprogs see a valid ext4 filesystem holding the file", async () => {
    // agent shutdown: sync, unmount, power off
    await vm1.stop({ guestShutdown: () => agent1.shutdown(), guestShutdownTimeoutMs: 60_000 });
    const fsck = spawnSync("e2fsck", ["-fn", dataImg], { encoding: "utf8" });
    expect(fsck.status, `${fsck.stdout}${fsck.stderr}`).toBe(0);
    const head = execFileSync("dumpe2fs", ["-h", dataImg], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    expect(head).toMatch(/^Filesystem state:\s+clean$/m);
    const features = /^Filesystem features:\s+(.*)$/m.exec(head)?.[1] ?? "";
    // ext4 = extents + a journal (what mke2fs -t ext4 sets up)
    expect(features.split(" ")).toEqual(expect.arrayContaining(["has_journal", "extent"]));
    const cat = execFileSync("debugfs", ["-R", "cat /hello.txt", dataImg], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    expect(cat).toBe(payload);
  });

  // ---------------------------------------------------------------- second VM: volume again, network, vsock

  let vm2: Vm;
  let agent2: AgentClient;

  it("second boot with format:true on the now non-blank device: not reformatted, the file is still there", async () => {
    const uuid = /^Filesystem UUID:\s+(\S+)$/m.exec(execFileSync("dumpe2fs", ["-h", dataImg], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }))?.[1];
    expect(uuid).toMatch(/^[0-9a-f-]{36}$/);
    ({ vm: vm2, agent: agent2 } = await boot("sm-vol2", {
      volumes: [dataImg],
      modules: [...NET_GUEST_MODULES, "vsock", "vsock_loopback"],
      network: "nat",
      // the agent accepts vsock peers other than the host (CID 2) only with this flag: the in-guest
      // loopback client below is such a peer
      kernelArgs: ["sm.vsock_local"],
      config: {
        volumes: [{ device: "/dev/vdb", path: "/data", format: true }],
        network: { ip: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" },
      },
    }));
    const r = await sh(agent2, "cat /data/hello.txt; cat /data/sub/y; grep ' /data ' /proc/mounts");
    expect(r.exitCode).toBe(0);
    expect(r.out).toMatch(new RegExp(`^${payload}x\n/dev/vdb /data ext4 rw`));
    expect(vm2.consoleTail(200)).not.toMatch(/mke2fs/);
    // the superblock UUID (bytes 1024+104..+120) is the one the first VM's mke2fs wrote
    const sb = await sh(agent2, "dd if=/dev/vdb bs=1 skip=1128 count=16 2>/dev/null | od -An -tx1 | tr -d ' \\n'");
    expect(sb.out).toBe((uuid ?? "").replace(/-/g, ""));
  }, 400_000);

  it("network: eth0 has 10.0.2.15/24, default route via 10.0.2.2, resolv.conf names 10.0.2.3", async () => {
    const addr = await sh(agent2, "ip -4 addr show dev eth0");
    expect(addr.exitCode).toBe(0);
    expect(addr.out).toMatch(/inet 10\.0\.2\.15\/24 /);
    expect(addr.out).toMatch(/<[^>]*\bUP\b[^>]*>/);
    const route = await sh(agent2, "cat /proc/net/route");
    // Iface Destination Gateway Flags: 0.0.0.0 via 10.0.2.2 (little-endian hex), RTF_UP|RTF_GATEWAY
    expect(route.out).toMatch(/^eth0\t00000000\t0202000A\t0003\t/m);
    expect(route.out).toMatch(/^eth0\t0002000A\t00000000\t0001\t/m); // the on-link 10.0.2.0/24
    const resolv = await sh(agent2, "cat /etc/resolv.conf");
    expect(resolv.out).toBe("nameserver 10.0.2.3\n");
  });

  it("network: a TCP connection from the guest reaches a server on the host's 127.0.0.1 and exchanges bytes", async () => {
    const got: string[] = [];
    server = createServer((sock) => {
      let buf = "";
      sock.on("data", (d) => {
        buf += d.toString();
        const nl = buf.indexOf("\n");
        if (nl >= 0) {
          got.push(buf.slice(0, nl));
          sock.end(`pong:${buf.slice(0, nl)}\n`);
        }
      });
      sock.on("error", () => undefined);
    });
    await new Promise<void>((r) => server?.listen(0, "127.0.0.1", () => r()));
    const addr = server.address();
    if (!addr || typeof addr === "string") throw new Error("no server address");
    const token = `ping-${randomInt(1 << 30)}`;
    const r = await sh(agent2, `echo ${token} | nc 10.0.2.2 ${addr.port}`, 60_000);
    expect(r.err).toBe("");
    expect(r.out).toBe(`pong:${token}\n`);
    expect(got).toEqual([token]);
  }, 120_000);

  /**
   * Runs the in-guest vsock client detached (the vsock session replaces the virtio-serial one, whose answers
   * stop), waits until the virtio-serial session is gone, reconnects a fresh host client on virtio-serial
   * and returns the client's output and the nonce it sent.
   */
  async function vsockRound(tag: string, mode: "hold" | "quit"): Promise<{ out: string; nonce: number }> {
    const nonce = randomInt(1, 2 ** 32 - 1);
    const hello = encodeFrame({ t: "hello", v: 1, host: "vsock-test", maxFrame: MAX_FRAME, window: DEFAULT_WINDOW, nonce });
    const start = await sh(
      agent2,
      `setsid sh -c 'sleep 1; exec /tmp/vsock-client 1 ${VSOCK_PORT} ${hello.toString("hex")} ${mode} >/tmp/${tag}.out 2>/tmp/${tag}.err' </dev/null >/dev/null 2>&1 &`,
    );
    expect(start.exitCode).toBe(0);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const alive = await agent2.ping({ timeoutMs: 3_000 }).then(
        () => true,
        () => false,
      );
      if (!alive) break;
      // still our session: fail fast (with its message) if the client gave up
      const e = await agent2.readFile(`/tmp/${tag}.err`, { timeoutMs: 3_000 }).catch(() => undefined);
      if (e && e.data.length > 0) throw new Error(`vsock client failed: ${e.data.toString()}`);
      if (Date.now() > deadline) throw new Error("the vsock session never took over");
      await new Promise((r) => setTimeout(r, 300));
    }
    // a fresh host client on the virtio-serial port: its hello starts a session there again
    agent2.close();
    agent2 = await connectAgent(await vm2.agentStream(), { helloTimeoutMs: HELLO_MS });
    expect(agent2.hello?.ready).toBe(true);
    const done = mode === "hold" ? /\neof\n$/ : /\n$/;
    let out = "";
    const until = Date.now() + 60_000;
    while (!done.test(out) && Date.now() < until) {
      out = (await sh(agent2, `cat /tmp/${tag}.out`)).out;
      if (!done.test(out)) await new Promise((r) => setTimeout(r, 500));
    }
    expect((await sh(agent2, `cat /tmp/${tag}.err`)).out).toBe("");
    return { out, nonce };
  }

  function expectAgentHello(hex: string | undefined, nonce: number) {
    const bytes = Buffer.from(hex ?? "", "hex");
    expect(bytes.readUInt32BE(0)).toBe(bytes.length - 4);
    const answer = decodeFrame(bytes.subarray(4), "agent-to-host");
    expect(answer).toMatchObject({ t: "hello", v: 1, ready: true, nonce });
    expect((answer as { caps: string[] }).caps).toEqual(expect.arrayContaining(["exec", "spawn", "write-file"]));
  }

  it("vsock: an in-guest client on CID 1 port 1024 gets a hello answer; a new virtio-serial hello takes the session back and the agent closes the vsock connection", async () => {
    await agent2.writeFile("/tmp/vsock-client", readFileSync(vsockClient), { mode: 0o755 });
    const { out, nonce } = await vsockRound("vs1", "hold");
    // line 1: the agent's answer on vsock; line 2: the agent closed the vsock connection when the
    // virtio-serial hello started the new session
    const [hex, eof] = out.trim().split("\n");
    expect(eof).toBe("eof");
    expectAgentHello(hex, nonce);
    const log = vm2.consoleTail(200);
    expect(log).toMatch(/sm-agent: transport: host hello on vsock/);
    expect(log).toMatch(/sm-agent: transport: host hello on virtio-serial/);
    expect((await sh(agent2, "echo back")).out).toBe("back\n");
  }, 400_000);

  it("vsock: when the vsock peer disconnects, the agent goes back to virtio-serial", async () => {
    const before = (vm2.consoleTail(400).match(/back to virtio-serial/g) ?? []).length;
    const { out, nonce } = await vsockRound("vs2", "quit");
    expectAgentHello(out.trim(), nonce);
    const after = (vm2.consoleTail(400).match(/sm-agent: vsock: host connection closed; back to virtio-serial/g) ?? []).length;
    expect(after).toBe(before + 1);
    expect((await sh(agent2, "echo back again")).out).toBe("back again\n");
  }, 400_000);
});
