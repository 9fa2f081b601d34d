/**
 * Live host shares (SPEC 6.4) with the real agent in a real VM: fs-attach mounts a FUSE file
 * system whose server is a tiny responder in this test (INIT, LOOKUP, GETATTR, OPEN, READ,
 * FLUSH, RELEASE; ENOSYS for the rest), reached through the agent's /dev/fuse relay. One cold
 * boot (TCG) shared by every case; QEMU is stopped in afterAll.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Duplex } from "node:stream";
import type { AgentClient } from "@supermachine/agent-protocol";
import type { Vm } from "@supermachine/hypervisor";
import { createKvmBackend } from "@supermachine/hypervisor-kvm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BASE_MODULES, bootBusybox, vmSkipReason } from "./_vm";

const MODULES = [...BASE_MODULES, "fuse"];

/** The shared libraries (real files, plus the paths the binary asks for) of a host binary, or undefined. */
function ldd(bin: string): string[] | undefined {
  try {
    const out = execFileSync("ldd", [bin], { encoding: "utf8" });
    const paths = new Set<string>();
    for (const m of out.matchAll(/(\/\S+) \(0x/g)) {
      const p = m[1] as string;
      paths.add(p);
      paths.add(realpathSync(p));
    }
    return [...paths];
  } catch {
    return undefined;
  }
}

// ---- a minimal FUSE server (layouts from <linux/fuse.h>, little-endian) ----

const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  OPEN: 14,
  READ: 15,
  RELEASE: 18,
  FLUSH: 25,
  INIT: 26,
  CREATE: 35,
  INTERRUPT: 36,
  BATCH_FORGET: 42,
} as const;
const ENOENT = 2;
const ENOSYS = 38;
const HELLO = Buffer.from("hello from the host\n");

/** fuse_attr (88 bytes) */
function attr(ino: number, mode: number, size: number): Buffer {
  const a = Buffer.alloc(88);
  a.writeBigUInt64LE(BigInt(ino), 0);
  a.writeBigUInt64LE(BigInt(size), 8);
  a.writeBigUInt64LE(BigInt(Math.ceil(size / 512)), 16);
  a.writeUInt32LE(mode, 60);
  a.writeUInt32LE(mode & 0o40000 ? 2 : 1, 64); // nlink
  a.writeUInt32LE(4096, 80); // blksize
  return a;
}
const ROOT_ATTR = () => attr(1, 0o40755, 0);
const FILE_ATTR = () => attr(2, 0o100644, HELLO.length);

interface FuseOpts {
  readDelayMs: number;
  /** GETATTR replies for the file wait this long (the kernel asks again at EOF, pipe locked). */
  fileAttrDelayMs: number;
}

/** Serves one share channel; returns the opcodes seen. READ / file GETATTR replies wait as `opts` says. */
function serveFuse(d: Duplex, opts: FuseOpts = { readDelayMs: 0, fileAttrDelayMs: 0 }): number[] {
  const seen: number[] = [];
  let buf = Buffer.alloc(0);
  const reply = (unique: bigint, error: number, body: Buffer = Buffer.alloc(0)) => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(16 + body.length, 0);
    h.writeInt32LE(error, 4);
    h.writeBigUInt64LE(unique, 8);
    d.write(Buffer.concat([h, body]));
  };
  d.on("error", () => {});
  d.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 40 && buf.length >= buf.readUInt32LE(0)) {
      const len = buf.readUInt32LE(0);
      const opcode = buf.readUInt32LE(4);
      const unique = buf.readBigUInt64LE(8);
      const nodeid = Number(buf.readBigUInt64LE(16));
      const body = buf.subarray(40, len);
      buf = buf.subarray(len);
      seen.push(opcode);
      switch (opcode) {
        case OP.INIT: {
          const out = Buffer.alloc(64);
          out.writeUInt32LE(7, 0);
          out.writeUInt32LE(Math.min(31, body.readUInt32LE(4)), 4);
          out.writeUInt32LE(body.readUInt32LE(8), 8); // max_readahead as offered
          out.writeUInt16LE(16, 16); // max_background
          out.writeUInt16LE(12, 18); // congestion_threshold
          out.writeUInt32LE(1 << 20, 20); // max_write: the agent clamps it to 131072
          out.writeUInt32LE(1, 24); // time_gran
          reply(unique, 0, out);
          break;
        }
        case OP.LOOKUP: {
          const name = body.subarray(0, body.indexOf(0)).toString();
          if (nodeid !== 1 || name !== "hello.txt") {
            reply(unique, -ENOENT);
            break;
          }
          const e = Buffer.alloc(40);
          e.writeBigUInt64LE(2n, 0); // nodeid; entry/attr valid 0: always ask the server
          reply(unique, 0, Buffer.concat([e, FILE_ATTR()]));
          break;
        }
        case OP.GETATTR: {
          const out = Buffer.concat([Buffer.alloc(16), nodeid === 1 ? ROOT_ATTR() : FILE_ATTR()]);
          const delay = nodeid === 1 ? 0 : opts.fileAttrDelayMs;
          if (delay > 0) setTimeout(() => reply(unique, 0, out), delay);
          else reply(unique, 0, out);
          break;
        }
        case OP.OPEN: {
          const o = Buffer.alloc(16);
          o.writeBigUInt64LE(7n, 0); // fh
          reply(unique, 0, o);
          break;
        }
        case OP.READ: {
          const off = Number(body.readBigUInt64LE(8));
          const size = body.readUInt32LE(16);
          const data = HELLO.subarray(Math.min(off, HELLO.length), Math.min(off + size, HELLO.length));
          if (opts.readDelayMs > 0) setTimeout(() => reply(unique, 0, data), opts.readDelayMs);
          else reply(unique, 0, data);
          break;
        }
        case OP.FLUSH:
        case OP.RELEASE:
          reply(unique, 0);
          break;
        case OP.FORGET:
        case OP.BATCH_FORGET:
        case OP.INTERRUPT:
          break;
        default:
          reply(unique, -ENOSYS);
      }
    }
  });
  return seen;
}

const reason = vmSkipReason();

describe.skipIf(reason)(`live host shares in a VM${reason ? ` (skipped: ${reason})` : ""}`, () => {
  const backend = createKvmBackend({ arch: "x86_64" });
  let work = "";
  let vm: Vm | undefined;
  let agent: AgentClient;
  let share: Duplex;
  let seen: number[] = [];
  const fuseOpts: FuseOpts = { readDelayMs: 0, fileAttrDelayMs: 0 };
  let failed = false;

  const sh = (script: string, timeoutMs = 60_000) => agent.exec({ argv: ["sh", "-c", script], timeoutMs });
  const smfsMounts = async () =>
    (await sh("grep ' fuse.smfs ' /proc/mounts || true")).stdout.toString().trim().split("\n").filter(Boolean);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "sm-fuse-it-"));
    ({ vm, agent } = await bootBusybox(backend, work, { modules: MODULES, hostname: "sm-fuse" }));
  }, 300_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });

  afterAll(async () => {
    if (failed && vm) {
      // the guest console (agent log) is the first thing to read when a case failed
      const log = existsSync(vm.consoleLogPath) ? readFileSync(vm.consoleLogPath, "utf8") : "";
      process.stderr.write(`--- guest console (tail) ---\n${log.split("\n").slice(-150).join("\n")}\n`);
    }
    agent?.close();
    await vm?.stop().catch(() => undefined);
    if (work) rmSync(work, { recursive: true, force: true });
  }, 120_000);

  it("announces the fs caps", () => {
    expect(agent.hello?.caps).toEqual(expect.arrayContaining(["fs-attach", "fs-detach", "fs"]));
  });

  it("fs-attach mounts the share at the staging dir and at path; the guest reads the host's bytes", async () => {
    share = await agent.fsAttach({ tag: "t1", path: "/mnt/auto" });
    seen = serveFuse(share, fuseOpts);
    const r = await sh("cat /run/supermachine/shares/t1/hello.txt && cat /mnt/auto/hello.txt");
    expect(r.stderr.toString()).toBe("");
    expect(r.stdout.toString()).toBe(`${HELLO}${HELLO}`);
    expect(seen[0]).toBe(OP.INIT);
    expect(seen).toEqual(expect.arrayContaining([OP.LOOKUP, OP.OPEN, OP.READ]));
    const missing = await sh("cat /mnt/auto/nope.txt");
    expect(missing.exitCode).not.toBe(0);
    expect(missing.stderr.toString()).toMatch(/No such file or directory/);
    const mounts = await smfsMounts();
    expect(mounts).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^t1 \/run\/supermachine\/shares\/t1 fuse\.smfs /),
        expect.stringMatching(/^t1 \/mnt\/auto fuse\.smfs /),
      ]),
    );
  }, 120_000);

  it("mount -t virtiofs <tag> <dir> (the original's command) and its alias smfs bind the share", async () => {
    const r = await sh("mkdir -p /work && mount -t smfs t1 /work && cat /work/hello.txt");
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe(HELLO.toString());
    const v = await sh("mkdir -p /vfs && mount -t virtiofs t1 /vfs && cat /vfs/hello.txt");
    expect(v.stderr.toString()).toBe("");
    expect(v.exitCode).toBe(0);
    expect(v.stdout.toString()).toBe(HELLO.toString());
    // a relative dir resolves against the caller's cwd; -o ro (as util-linux passes it; busybox keeps
    // ro/rw to itself) gives a read-only bind
    const ro = await sh("mkdir -p /tmp/rel && cd /tmp && /sbin/mount.virtiofs t1 rel -o ro && cat /tmp/rel/hello.txt");
    expect(ro.stderr.toString()).toBe("");
    expect(ro.stdout.toString()).toBe(HELLO.toString());
    const m = await smfsMounts();
    expect(m).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^t1 \/vfs fuse\.smfs rw,/),
        expect.stringMatching(/^t1 \/tmp\/rel fuse\.smfs ro,/),
      ]),
    );
    expect((await sh("readlink /sbin/mount.virtiofs")).stdout.toString()).toBe("mount.smfs\n");
    expect((await sh("umount /vfs && umount /tmp/rel")).exitCode).toBe(0);
  }, 120_000);

  it("an unknown tag fails with No such device and mounts nothing; other mounts are untouched", async () => {
    const before = await smfsMounts();
    for (const type of ["virtiofs", "smfs"]) {
      const bad = await sh(`mkdir -p /x && mount -t ${type} nope /x`);
      expect(bad.exitCode).not.toBe(0);
      expect(bad.stderr.toString()).toMatch(/No such device/);
    }
    const direct = await sh("/sbin/mount.virtiofs nope /x; echo rc=$?");
    expect(direct.stdout.toString()).toBe("rc=32\n");
    expect(direct.stderr.toString()).toBe(
      "mount.virtiofs: mounting nope on /x failed: No such device (no live host share 'nope' is attached)\n",
    );
    const hostile = await sh("/sbin/mount.smfs ../../etc /x; echo rc=$?");
    expect(hostile.stdout.toString()).toBe("rc=32\n");
    expect(hostile.stderr.toString()).toMatch(/No such device/);
    expect((await sh("grep -c ' /x ' /proc/mounts || true")).stdout.toString()).toBe("0\n");
    expect(await smfsMounts()).toEqual(before);
    const t = await sh("mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo hi > /mnt/t/f && cat /mnt/t/f && grep ' /mnt/t ' /proc/mounts && umount /mnt/t");
    expect(t.stderr.toString()).toBe("");
    expect(t.exitCode).toBe(0);
    expect(t.stdout.toString()).toMatch(/^hi\nnone \/mnt\/t tmpfs rw/);
  }, 120_000);

  it("util-linux mount (the host's, staged with its libraries) runs the helper too: -o ro, unknown tags", async (ctx) => {
    // Debian/Ubuntu images use util-linux mount(8), which looks for /sbin/mount.<type> before any syscall.
    const libs = ldd("/usr/bin/mount");
    if (process.arch !== "x64" || !libs) {
      ctx.skip();
      return;
    }
    for (const p of libs) {
      expect((await sh(`mkdir -p ${dirname(p)}`)).exitCode).toBe(0);
      await agent.writeFile(p, readFileSync(p), { mode: 0o755 });
    }
    await agent.writeFile("/tmp/ul-mount", readFileSync("/usr/bin/mount"), { mode: 0o755 });
    const r = await sh("mkdir -p /ul && /tmp/ul-mount -t virtiofs -o ro t1 /ul && cat /ul/hello.txt");
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toBe(HELLO.toString());
    expect(await smfsMounts()).toEqual(expect.arrayContaining([expect.stringMatching(/^t1 \/ul fuse\.smfs ro,/)]));
    expect((await sh("umount /ul")).exitCode).toBe(0);
    const bad = await sh("/tmp/ul-mount -t virtiofs nope /ul; echo rc=$?");
    expect(bad.stdout.toString()).toBe("rc=32\n");
    expect(bad.stderr.toString()).toMatch(/mounting nope on \/ul failed: No such device/);
  }, 120_000);

  it("a process splicing from the share into its stdout pipe does not deadlock the agent", async () => {
    // busybox cat uses sendfile: the kernel holds the stdout pipe's lock while it waits for the
    // READ reply, which the agent relays. "start" is already in the pipe, so the agent reads the
    // pipe meanwhile; a plain read(2) there would sleep on that lock forever.
    fuseOpts.readDelayMs = 500;
    try {
      for (let i = 0; i < 3; i++) {
        const r = await sh("echo start; cat /mnt/auto/hello.txt; echo end", 30_000);
        expect(r.timedOut).toBe(false);
        expect(r.stdout.toString()).toBe(`start\n${HELLO}end\n`);
      }
    } finally {
      fuseOpts.readDelayMs = 0;
    }
    expect((await agent.stats()).uptimeMs).toBeGreaterThan(0); // the agent still answers
  }, 120_000);

  it("a stuck pipe read that finds the pipe empty is not the end of the output (no SIGPIPE)", async () => {
    // Each cat splices the file into the stdout pipe, then splices again at EOF; the kernel asks the
    // host for the file's attributes then, with the pipe locked (delayed here). The agent, reading
    // the pipe on a worker meanwhile, gets EAGAIN once the lock is free and the pipe is empty: that
    // is not EOF. Taking it for EOF closed the pipe under the shell, which died of SIGPIPE with the
    // rest of its output lost (seen with real shares: about one exec in 25).
    fuseOpts.fileAttrDelayMs = 150;
    try {
      for (let round = 0; round < 3; round++) {
        const r = await sh("for i in $(seq 30); do cat /mnt/auto/hello.txt; done; echo end", 60_000);
        expect({ signal: r.signal, code: r.exitCode, out: r.stdout.toString() }).toEqual({
          signal: null,
          code: 0,
          out: `${HELLO.toString().repeat(30)}end\n`,
        });
      }
    } finally {
      fuseOpts.fileAttrDelayMs = 0;
    }
  }, 180_000);

  it("exec may run inside a share; write-file/read-file on share paths go through the share without stalling PID 1", async () => {
    const r = await agent.exec({ argv: ["sh", "-c", "pwd; cat hello.txt"], cwd: "/mnt/auto", timeoutMs: 30_000 });
    expect(r.stderr.toString()).toBe("");
    expect(r.stdout.toString()).toBe(`/mnt/auto\n${HELLO}`);
    // a child does the file I/O while the loop relays the share's requests
    const rf = await agent.readFile("/run/supermachine/shares/t1/hello.txt");
    expect(rf.data.toString()).toBe(HELLO.toString());
    // this test server implements no CREATE/MKNOD: the guest kernel's ENOSYS comes back as the answer
    const w = await agent.writeFile("/mnt/auto/new.txt", Buffer.from("x")).catch((e) => e);
    expect(w.message).toMatch(/new\.txt: Function not implemented/); // ENOSYS (mapped to the code EIO)
    expect(seen).toContain(OP.CREATE);
    // a read whose share answers slowly does not hold up other requests
    fuseOpts.readDelayMs = 1500;
    try {
      const slow = agent.readFile("/mnt/auto/hello.txt");
      const t0 = Date.now();
      await agent.ping();
      expect(Date.now() - t0).toBeLessThan(1000);
      expect((await slow).data.toString()).toBe(HELLO.toString());
    } finally {
      fuseOpts.readDelayMs = 0;
    }
    expect((await agent.readFile("/etc/passwd")).data.length).toBeGreaterThan(0);
  }, 120_000);

  it("a guest symlink into a share cannot make PID 1 wait on itself: write-file, read-file and stage go through it", async () => {
    // A hostile guest plants /tmp/trap -> the share; the host then names a path through it.
    expect((await sh("ln -sfn /run/supermachine/shares/t1 /tmp/trap && ls /tmp/trap/")).exitCode).toBe(0);
    const t0 = Date.now();
    const w = await agent.writeFile("/tmp/trap/x.txt", Buffer.from("x")).catch((e) => e);
    expect(w.message).toMatch(/Function not implemented/); // reached the share (which cannot create files), no stall
    const rf = await agent.readFile("/tmp/trap/hello.txt");
    expect(rf.data.toString()).toBe(HELLO.toString());
    // stage too: written by a child before the command starts, the share answering meanwhile
    const st = await agent
      .exec({ argv: ["true"], stage: [{ path: "/tmp/trap/s.txt", data: Buffer.from("s") }], timeoutMs: 30_000 })
      .catch((e) => e);
    expect(st.message).toMatch(/stage \/tmp\/trap\/s\.txt: Function not implemented/);
    expect(Date.now() - t0).toBeLessThan(10_000); // no waits on PID 1 left
    // The agent is fine afterwards, and ordinary paths still work while the share is attached.
    await agent.writeFile("/tmp/ok.txt", Buffer.from("fine"), { mode: 0o600 });
    const back = await agent.readFile("/tmp/ok.txt");
    expect(back.data.toString()).toBe("fine");
    expect(back.mode).toBe(0o600);
    const staged = await agent.exec({
      argv: ["cat", "/tmp/staged.txt"],
      stage: [{ path: "/tmp/staged.txt", data: Buffer.from("staged") }],
      timeoutMs: 30_000,
    });
    expect(staged.stdout.toString()).toBe("staged");
    expect((await sh("cat /work/hello.txt")).stdout.toString()).toBe(HELLO.toString());
  }, 120_000);

  it("bad tags are EINVAL, a second attach of a tag is EEXIST, unknown detach is ENOENT", async () => {
    const bad = await agent.request("fs-attach", { tag: "a/b", ch: 4_000_000_000 }).catch((e) => e);
    expect(bad.remoteCode).toBe("EINVAL");
    const long = await agent.request("fs-attach", { tag: "x".repeat(36), ch: 4_000_000_001 }).catch((e) => e);
    expect(long.remoteCode).toBe("EINVAL");
    const dup = await agent.fsAttach({ tag: "t1" }).catch((e) => e);
    expect(dup.remoteCode).toBe("EEXIST");
    const nested = await agent.fsAttach({ tag: "t2", path: "/mnt/auto/sub" }).catch((e) => e);
    expect(nested.remoteCode).toBe("EINVAL"); // a bind target inside a share
    const gone = await agent.fsDetach("nope").catch((e) => e);
    expect(gone.remoteCode).toBe("ENOENT");
  }, 60_000);

  it("when the host side goes away the guest gets EIO at once instead of hanging", async () => {
    share.destroy();
    const t0 = Date.now();
    const r = await sh("cat /work/hello.txt", 30_000);
    expect(r.timedOut).toBe(false);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/Input\/output error|I\/O error/);
    expect(Date.now() - t0).toBeLessThan(20_000);
    // the orphaned share still holds its tag until it is detached
    const dup = await agent.fsAttach({ tag: "t1" }).catch((e) => e);
    expect(dup.remoteCode).toBe("EEXIST");
  }, 60_000);

  it("fs-detach removes every mount of the share; attached again, the tag gets the users' binds back", async () => {
    expect((await smfsMounts()).length).toBe(3); // staging, path, and the user's /work
    await agent.fsDetach("t1");
    expect(await smfsMounts()).toEqual([]);
    // what a snapshot/restore does: detach, attach again. The user's `mount -t smfs t1 /work` comes back;
    // the old attach's path (/mnt/auto) does not (this attach has none).
    const again = await agent.fsAttach({ tag: "t1" });
    serveFuse(again);
    const r = await sh("cat /run/supermachine/shares/t1/hello.txt /work/hello.txt");
    expect(r.stdout.toString()).toBe(`${HELLO}${HELLO}`);
    expect((await smfsMounts()).map((l) => l.split(" ").slice(0, 3).join(" ")).sort()).toEqual([
      "t1 /run/supermachine/shares/t1 fuse.smfs",
      "t1 /work fuse.smfs",
    ]);
    // a read-only bind stays read-only; a mount point the guest replaced by a symlink is not followed
    expect((await sh("mkdir -p /ro2 /moved /tmp/elsewhere && /sbin/mount.virtiofs t1 /ro2 -o ro && /sbin/mount.virtiofs t1 /moved")).exitCode).toBe(0);
    await agent.fsDetach("t1");
    expect((await sh("rmdir /moved && ln -s /tmp/elsewhere /moved")).exitCode).toBe(0);
    const third = await agent.fsAttach({ tag: "t1", path: "/work" });
    serveFuse(third);
    expect((await smfsMounts()).map((l) => l.split(" ").slice(0, 4).join(" ").replace(/,.*/, "")).sort()).toEqual([
      "t1 /ro2 fuse.smfs ro",
      "t1 /run/supermachine/shares/t1 fuse.smfs rw",
      "t1 /work fuse.smfs rw", // once: the attach's own path is not bound twice
    ]);
    expect((await sh("ls /tmp/elsewhere | wc -l")).stdout.toString().trim()).toBe("0");
    await agent.fsDetach("t1");
    expect(await smfsMounts()).toEqual([]);
  }, 120_000);

  it("with no share attached commands start through the shared-memory spawn: another user's command leaves the agent and its threads root", async () => {
    // The pipe-reader threads made while shares were attached are still there, and the child shares
    // PID 1's memory until it execs: its user switch must change only itself, never PID 1's threads.
    const r = await agent.exec({ argv: ["sh", "-c", "id -u; id -g; pwd"], user: "1234:4321", cwd: "/tmp" });
    expect(r.stdout.toString()).toBe("1234\n4321\n/tmp\n");
    const bad = await agent.exec({ argv: ["sh"], cwd: "/proc/1/fd", user: "1234:4321" });
    expect(bad.exitCode).toBe(126);
    expect(bad.stderr.toString()).toBe("sm-agent: cannot change directory\n");
    const tasks = (await sh("for t in /proc/1/task/*; do grep -E '^(Uid|Gid):' $t/status | tr -s '\\t' ' '; done"))
      .stdout.toString()
      .trim()
      .split("\n");
    expect(tasks.length).toBeGreaterThan(2); // main thread + at least one reader thread, Uid and Gid each
    expect(new Set(tasks)).toEqual(new Set(["Uid: 0 0 0 0", "Gid: 0 0 0 0"]));
    // and PID 1 still does root-only work
    await agent.writeFile("/root/after-user-switch", Buffer.from("ok"));
    expect((await agent.readFile("/root/after-user-switch")).data.toString()).toBe("ok");
  }, 120_000);
});
