import * as fsp from "node:fs/promises";
import { constants as osConstants, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cstr, decodeDirents, decodeDirentsPlus, FuseTestClient, Op, u32s, u64s } from "./fuse.test-util";
import { ShareServer, type ShareServerOptions, type SymlinkPolicy } from "./server";

const E = osConstants.errno;
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_EXCL = 0o200;

let base: string;
let share: string;
let outside: string;
const clients: FuseTestClient[] = [];

beforeEach(async () => {
  base = await fsp.mkdtemp(join(tmpdir(), "sm-share-unit-"));
  share = join(base, "share");
  outside = join(base, "outside");
  await fsp.mkdir(join(share, "dir"), { recursive: true });
  await fsp.mkdir(outside);
  await fsp.writeFile(join(share, "file.txt"), "inside");
  await fsp.writeFile(join(share, "dir", "f"), "INSIDE-F");
  await fsp.writeFile(join(outside, "secret.txt"), "SECRET");
  await fsp.writeFile(join(outside, "f"), "OUTSIDE-F");
  await fsp.symlink("../outside", join(share, "hostlink"));
});

afterEach(async () => {
  for (const c of clients.splice(0)) {
    c.toServer.end();
    await c.server.close();
  }
  await fsp.rm(base, { recursive: true, force: true });
});

async function client(
  opts: Partial<ShareServerOptions> = {},
  copts: { replyHighWaterMark?: number; autoRead?: boolean } = {},
): Promise<FuseTestClient> {
  const server = new ShareServer({ root: share, policy: "opaque", tag: "t", ...opts });
  const c = new FuseTestClient(server, copts);
  clients.push(c);
  if (copts.autoRead !== false) expect((await c.init()).error).toBe(0);
  return c;
}

async function outsideUntouched(): Promise<void> {
  expect((await fsp.readdir(outside)).sort()).toEqual(["f", "secret.txt"]);
  expect(await fsp.readFile(join(outside, "secret.txt"), "utf8")).toBe("SECRET");
}

describe("INIT", () => {
  it("negotiates 7.31 with a 7.36 kernel: max_write 131072, only offered flags, no readdirplus/export", async () => {
    const server = new ShareServer({ root: share, policy: "opaque", tag: "t" });
    const c = new FuseTestClient(server);
    clients.push(c);
    const offered = (1 << 0) | (1 << 3) | (1 << 5) | (1 << 12) | (1 << 13) | (1 << 4) | (1 << 22);
    const r = await c.send(Op.INIT, 0, Buffer.concat([u32s(7, 36, 65536, offered), Buffer.alloc(48)]));
    expect(r.error).toBe(0);
    expect(r.body.length).toBe(64);
    expect(r.body.readUInt32LE(0)).toBe(7);
    expect(r.body.readUInt32LE(4)).toBe(31);
    expect(r.body.readUInt32LE(20)).toBe(131072);
    const flags = r.body.readUInt32LE(12);
    expect(flags & (1 << 12)).not.toBe(0); // AUTO_INVAL_DATA
    expect(flags & (1 << 13)).toBe(0); // no DO_READDIRPLUS
    expect(flags & (1 << 4)).toBe(0); // no EXPORT_SUPPORT
    expect(flags & ~offered).toBe(0);
    expect(server.stats().protocol).toBe("7.31");
  });

  it("answers an older kernel with its own minor; a request before INIT gets EIO", async () => {
    const server = new ShareServer({ root: share, policy: "opaque", tag: "t" });
    const c = new FuseTestClient(server);
    clients.push(c);
    expect((await c.getattr(1)).error).toBe(-E.EIO);
    const r = await c.send(Op.INIT, 0, u32s(7, 20, 0, 0));
    expect(r.body.readUInt32LE(4)).toBe(20);
    expect(r.body.length).toBe(24);
    expect((await c.send(Op.INIT, 0, u32s(6, 0, 0, 0))).error).toBe(-E.EPROTO);
  });
});

describe("basic operations", () => {
  it("lookup, read, write, create, mkdir, readdir round trip; guest-created files belong to the host user", async () => {
    const c = await client();
    const l = await c.lookup(1, "file.txt");
    expect(l.error).toBe(0);
    expect(l.attr!.mode & S_IFMT).toBe(S_IFREG);
    expect(l.attr!.uid).toBe(0); // host process's own files show as root in the guest
    const o = await c.open(l.nodeid, O_RDWR);
    expect(o.error).toBe(0);
    expect((await c.read(o.fh, 0, 100)).body.toString()).toBe("inside");
    expect((await c.write(o.fh, 6, Buffer.from("-more"))).body.readUInt32LE(0)).toBe(5);
    expect(await fsp.readFile(join(share, "file.txt"), "utf8")).toBe("inside-more");
    await c.release(o.fh);

    const cr = await c.create(1, "new.txt", O_WRONLY | O_EXCL, 0o4755);
    expect(cr.error).toBe(0);
    await c.write(cr.fh, 0, Buffer.from("x"));
    await c.release(cr.fh);
    const st = await fsp.stat(join(share, "new.txt"));
    expect(st.uid).toBe(process.getuid!());
    expect(st.mode & 0o7000).toBe(0); // set-uid stripped
    expect((await c.create(1, "new.txt", O_WRONLY | O_EXCL)).error).toBe(-E.EEXIST);

    expect((await c.mkdir(1, "sub")).error).toBe(0);
    expect((await fsp.stat(join(share, "sub"))).isDirectory()).toBe(true);
    expect((await c.send(Op.MKNOD, 1, Buffer.concat([u32s(0o010644, 0, 0, 0), cstr("fifo")]))).error).toBe(
      -E.EPERM,
    );
    expect((await c.send(Op.MKNOD, 1, Buffer.concat([u32s(0o100644, 0, 0, 0), cstr("reg")]))).error).toBe(0);

    const od = await c.send(Op.OPENDIR, 1, u32s(0, 0));
    const fh = od.body.readBigUInt64LE(0);
    const names = decodeDirents((await c.readdir(fh, 0, 4096)).body).map((d) => d.name);
    expect(names.sort()).toEqual([".", "..", "dir", "file.txt", "hostlink", "new.txt", "reg", "sub"]);
    await c.release(fh, Op.RELEASEDIR);
    expect(c.server.stats().openHandles).toBe(0);
  });

  it("setattr: chmod, truncate, utimes work; chown to another owner is EPERM", async () => {
    const c = await client();
    const l = await c.lookup(1, "file.txt");
    const body = Buffer.alloc(88);
    body.writeUInt32LE(1 | 8 | 32, 0); // MODE | SIZE | MTIME
    body.writeBigUInt64LE(2n, 16); // size
    body.writeBigUInt64LE(1_000_000n, 40); // mtime
    body.writeUInt32LE(0o6640, 68); // mode with suid/sgid
    const r = await c.send(Op.SETATTR, l.nodeid, body);
    expect(r.error).toBe(0);
    const st = await fsp.stat(join(share, "file.txt"));
    expect(st.mode & 0o7777).toBe(0o640);
    expect(st.size).toBe(2);
    expect(st.mtimeMs).toBe(1_000_000_000);
    const chown = Buffer.alloc(88);
    chown.writeUInt32LE(2, 0);
    chown.writeUInt32LE(1234, 76);
    expect((await c.send(Op.SETATTR, l.nodeid, chown)).error).toBe(-E.EPERM);
    chown.writeUInt32LE(0, 76); // "chown" to what it already is: accepted
    expect((await c.send(Op.SETATTR, l.nodeid, chown)).error).toBe(0);
  });

  it("READDIR offsets stay stable while the host changes the directory", async () => {
    const c = await client();
    await fsp.mkdir(join(share, "many"));
    const want = Array.from({ length: 120 }, (_, i) => `entry-${i}`);
    await Promise.all(want.map((n) => fsp.writeFile(join(share, "many", n), "")));
    const l = await c.lookup(1, "many");
    const fh = (await c.send(Op.OPENDIR, l.nodeid, u32s(0, 0))).body.readBigUInt64LE(0);
    const seen: string[] = [];
    let off = 0n;
    for (let round = 0; ; round++) {
      const ents = decodeDirents((await c.readdir(fh, off, 300)).body);
      if (ents.length === 0) break;
      seen.push(...ents.map((e) => e.name));
      off = ents[ents.length - 1]!.off;
      // The host deletes and adds entries between calls.
      await fsp.rm(join(share, "many", `entry-${round}`)).catch(() => {});
      await fsp.writeFile(join(share, "many", `late-${round}`), "");
    }
    expect(seen.filter((n) => n.startsWith("entry-")).sort()).toEqual([...want].sort());
    expect(new Set(seen).size).toBe(seen.length);
  });

  it("unknown opcodes and xattrs → ENOSYS; INTERRUPT and FORGET of unknown nodes get no reply and no crash", async () => {
    const c = await client();
    expect((await c.send(9999, 1)).error).toBe(-E.ENOSYS);
    expect((await c.send(Op.GETXATTR, 1, Buffer.concat([u32s(100, 0), cstr("user.x")]))).error).toBe(
      -E.ENOSYS,
    );
    expect((await c.send(Op.LSEEK, 1, Buffer.alloc(24))).error).toBe(-E.ENOSYS);
    c.raw(Buffer.concat([u32s(48, Op.INTERRUPT), u64s(999, 0), Buffer.alloc(16), u64s(5)]));
    c.raw(Buffer.concat([u32s(48, Op.FORGET), u64s(998, 12345), Buffer.alloc(16), u64s(5)]));
    c.raw(Buffer.concat([u32s(56, Op.BATCH_FORGET), u64s(997, 0), Buffer.alloc(16), u32s(1000, 0), u64s(7)]));
    expect((await c.getattr(1)).error).toBe(0);
  });
});

describe("READDIRPLUS", () => {
  const DO_RDPLUS = 1 << 13;
  const RDPLUS_AUTO = 1 << 14;
  const DT_DIR = 4;
  const DT_REG = 8;
  const DT_LNK = 10;

  async function initFlags(opts: Partial<ShareServerOptions>, offered = 0xffffffff): Promise<number> {
    const c = new FuseTestClient(new ShareServer({ root: share, policy: "opaque", tag: "t", ...opts }));
    clients.push(c);
    const r = await c.send(Op.INIT, 0, Buffer.concat([u32s(7, 36, 65536, offered), Buffer.alloc(48)]));
    expect(r.error).toBe(0);
    return r.body.readUInt32LE(12) & (DO_RDPLUS | RDPLUS_AUTO);
  }

  it("is offered (with AUTO) only when cacheTtlMs > 0 by default; readdirPlus overrides; never unless the kernel offers it", async () => {
    expect(await initFlags({})).toBe(0);
    expect(await initFlags({ cacheTtlMs: 1000 })).toBe(DO_RDPLUS | RDPLUS_AUTO);
    expect(await initFlags({ cacheTtlMs: 1000, readdirPlus: "off" })).toBe(0);
    expect(await initFlags({ readdirPlus: "always" })).toBe(DO_RDPLUS);
    expect(await initFlags({ readdirPlus: "auto" })).toBe(DO_RDPLUS | RDPLUS_AUTO);
    expect(await initFlags({ cacheTtlMs: 1000 }, 1 << 12)).toBe(0);
    expect(
      () => new ShareServer({ root: share, policy: "opaque", tag: "t", readdirPlus: "x" as never }),
    ).toThrow(expect.objectContaining({ code: "SM_INVALID_OPTIONS" }));
    // Not negotiated: a READDIRPLUS request gets ENOSYS and remembers nothing.
    const c = await client();
    const fh = await c.opendir(1);
    expect((await c.readdirplus(fh, 0, 4096)).error).toBe(-E.ENOSYS);
    expect(c.server.stats().nodes).toBe(1);
  });

  it("entry layout: fuse_entry_out + fuse_dirent, 8-aligned, attrs and timeouts exactly as LOOKUP; . and .. carry nodeid 0", async () => {
    const c = await client({ cacheTtlMs: 1500 });
    await fsp.writeFile(join(share, "abcdefg"), "12345"); // 7-byte name: record needs padding
    const fh = await c.opendir(1);
    const r = await c.readdirplus(fh, 0, 4096);
    expect(r.error).toBe(0);
    const ents = decodeDirentsPlus(r.body);
    expect(ents.map((e) => e.name).sort()).toEqual([".", "..", "abcdefg", "dir", "file.txt", "hostlink"]);
    for (const e of ents) expect(e.at % 8).toBe(0);
    expect(ents.map((e) => e.off)).toEqual(ents.map((_, i) => BigInt(i + 1)));
    const by = new Map(ents.map((e) => [e.name, e]));
    for (const dot of [".", ".."]) {
      expect(by.get(dot)!.nodeid).toBe(0n);
      expect(by.get(dot)!.type).toBe(DT_DIR);
    }
    const f = by.get("abcdefg")!;
    const st = await fsp.lstat(join(share, "abcdefg"), { bigint: true });
    expect(f.nodeid).not.toBe(0n);
    expect(f.type).toBe(DT_REG);
    expect(f.ino).toBe(st.ino);
    expect(f.attr).toMatchObject({ ino: st.ino, size: 5n, mode: Number(st.mode), uid: 0 });
    expect([f.entryValid, f.attrValid, f.entryValidNsec, f.attrValidNsec]).toEqual([
      1n,
      1n,
      500_000_000,
      500_000_000,
    ]);
    expect(by.get("dir")!.type).toBe(DT_DIR);
    expect(by.get("hostlink")!.type).toBe(DT_LNK);
    expect(by.get("hostlink")!.attr.mode & S_IFMT).toBe(S_IFLNK);
    // The same node LOOKUP returns, with the same attributes and timeouts.
    const l = await c.send(Op.LOOKUP, 1, cstr("abcdefg"));
    expect(l.body.readBigUInt64LE(0)).toBe(f.nodeid);
    expect(l.body.subarray(0, 128).equals(r.body.subarray(f.at, f.at + 128))).toBe(true);
    // A nodeid from READDIRPLUS is usable like a LOOKUP result.
    const o = await c.open(f.nodeid, O_RDONLY);
    expect((await c.read(o.fh, 0, 100)).body.toString()).toBe("12345");
    await c.release(o.fh);
  });

  it("counts one lookup per entry with a nodeid: FORGET of exactly that many drops the node", async () => {
    const c = await client({ cacheTtlMs: 1000 });
    const fh = await c.opendir(1);
    const ents = decodeDirentsPlus((await c.readdirplus(fh, 0, 4096)).body);
    const withId = ents.filter((e) => e.nodeid !== 0n);
    expect(withId.map((e) => e.name).sort()).toEqual(["dir", "file.txt", "hostlink"]);
    expect(c.server.stats().nodes).toBe(4); // root + 3
    const file = withId.find((e) => e.name === "file.txt")!;
    // A second listing and a LOOKUP each add one more lookup to the same node.
    const again = decodeDirentsPlus((await c.readdirplus(fh, 0, 4096)).body).find(
      (e) => e.name === "file.txt",
    )!;
    expect(again.nodeid).toBe(file.nodeid);
    expect((await c.lookup(1, "file.txt")).nodeid).toBe(file.nodeid);
    c.forget(file.nodeid, 2);
    expect((await c.getattr(file.nodeid)).error).toBe(0); // one lookup left
    c.forget(file.nodeid, 1);
    expect((await c.getattr(file.nodeid)).error).toBe(-E.ESTALE);
    expect(c.server.stats().nodes).toBe(3);
    for (const e of withId) if (e !== file) c.forget(e.nodeid, 2);
    await c.release(fh, Op.RELEASEDIR);
    expect((await c.getattr(1)).error).toBe(0);
    expect(c.server.stats().nodes).toBe(1);
  });

  it("pages by offset across calls: every reply fits the size, each entry once, only returned entries counted", async () => {
    const c = await client({ cacheTtlMs: 1000 });
    await fsp.mkdir(join(share, "many"));
    const want = Array.from({ length: 60 }, (_, i) => `entry-${"x".repeat(i % 9)}-${i}`);
    await Promise.all(want.map((n) => fsp.writeFile(join(share, "many", n), n)));
    const l = await c.lookup(1, "many");
    const fh = await c.opendir(l.nodeid);
    const seen: string[] = [];
    let off = 0n;
    let calls = 0;
    const size = 700;
    for (;;) {
      const r = await c.readdirplus(fh, off, size);
      expect(r.error).toBe(0);
      expect(r.body.length).toBeLessThanOrEqual(size);
      const ents = decodeDirentsPlus(r.body);
      if (ents.length === 0) break;
      calls++;
      for (const e of ents) {
        if (e.name === "." || e.name === "..") continue;
        expect(e.nodeid).not.toBe(0n);
        expect(e.attr.size).toBe(BigInt(e.name.length));
      }
      seen.push(...ents.map((e) => e.name));
      off = ents[ents.length - 1]!.off;
      // Entries not yet returned are not remembered (root, many, and what was sent so far).
      expect(c.server.stats().nodes).toBe(2 + seen.filter((n) => n !== "." && n !== "..").length);
    }
    expect(calls).toBeGreaterThan(5);
    expect(seen.filter((n) => n !== "." && n !== "..").sort()).toEqual([...want].sort());
    expect(new Set(seen).size).toBe(seen.length);
    // A buffer too small for the next record: an empty reply, nothing counted.
    expect((await c.readdirplus(fh, 2, 100)).body.length).toBe(0);
    expect(c.server.stats().nodes).toBe(62);
  });

  const policyCases: [SymlinkPolicy, "none" | "lnk" | "dir"][] = [
    ["deny", "none"],
    ["opaque", "lnk"],
    ["follow", "dir"],
  ];
  for (const [policy, hostlink] of policyCases) {
    it(`${policy}: a host symlink entry is ${hostlink === "none" ? "listed with nodeid 0 (LOOKUP stays EACCES)" : `returned as LOOKUP would (${hostlink})`}`, async () => {
      const c = await client({ policy, cacheTtlMs: 1000 });
      const fh = await c.opendir(1);
      const ents = decodeDirentsPlus((await c.readdirplus(fh, 0, 4096)).body);
      const e = ents.find((x) => x.name === "hostlink")!;
      if (hostlink === "none") {
        expect(e.nodeid).toBe(0n);
        expect(e.type).toBe(DT_LNK);
        expect(e.attr.mode).toBe(0);
        expect((await c.lookup(1, "hostlink")).error).toBe(-E.EACCES);
        expect(c.server.stats().nodes).toBe(3); // root, dir, file.txt
      } else {
        expect(e.nodeid).not.toBe(0n);
        expect(e.attr.mode & S_IFMT).toBe(hostlink === "lnk" ? S_IFLNK : S_IFDIR);
        expect(e.type).toBe(hostlink === "lnk" ? DT_LNK : DT_DIR);
        const l = await c.lookup(1, "hostlink");
        expect(l.nodeid).toBe(e.nodeid);
        // Walking through it: only "follow" (trusted) lets the host follow the symlink.
        expect((await c.lookup(e.nodeid, "secret.txt")).error).toBe(policy === "follow" ? 0 : -E.ENOTDIR);
      }
      if (policy !== "follow") await outsideUntouched();
    });
  }

  it("the node-table cap: entries beyond it carry nodeid 0 (plain dirents), nothing over the cap", async () => {
    const c = await client({ cacheTtlMs: 1000, maxNodes: 3 });
    const fh = await c.opendir(1);
    const ents = decodeDirentsPlus((await c.readdirplus(fh, 0, 4096)).body);
    expect(ents.map((e) => e.name).sort()).toEqual([".", "..", "dir", "file.txt", "hostlink"]);
    const named = ents.filter((e) => e.nodeid !== 0n);
    expect(named).toHaveLength(2);
    expect(c.server.stats().nodes).toBe(3);
    for (const e of ents.filter((x) => x.nodeid === 0n && x.name.length > 2)) expect(e.type).not.toBe(0);
  });

  it("a directory snapshot entry that vanished on the host is listed with nodeid 0", async () => {
    const c = await client({ cacheTtlMs: 1000 });
    await fsp.mkdir(join(share, "v"));
    for (const n of ["a", "b", "c"]) await fsp.writeFile(join(share, "v", n), "");
    const l = await c.lookup(1, "v");
    const fh = await c.opendir(l.nodeid);
    // Take the snapshot with a tiny first page, then remove "b" on the host.
    expect(decodeDirentsPlus((await c.readdirplus(fh, 0, 160)).body).map((e) => e.name)).toEqual(["."]);
    await fsp.rm(join(share, "v", "b"));
    const rest = decodeDirentsPlus((await c.readdirplus(fh, 1, 4096)).body);
    expect(rest.find((e) => e.name === "b")!.nodeid).toBe(0n);
    expect(rest.find((e) => e.name === "a")!.nodeid).not.toBe(0n);
  });
});

describe("hostile names and node ids", () => {
  it.each([
    ["..", -E.EINVAL],
    [".", -E.EINVAL],
    ["a/b", -E.EINVAL],
    ["../outside", -E.EINVAL],
    ["", -E.EINVAL],
    ["x".repeat(256), -E.ENAMETOOLONG],
  ])("LOOKUP/MKDIR/CREATE/SYMLINK/RENAME with name %j → %i, nothing touched outside", async (name, errno) => {
    const c = await client();
    expect((await c.lookup(1, name)).error).toBe(errno);
    expect((await c.mkdir(1, name)).error).toBe(errno);
    expect((await c.create(1, name, O_WRONLY)).error).toBe(errno);
    expect((await c.symlink(1, name, "x")).error).toBe(errno);
    expect((await c.rename(1, "file.txt", 1, name)).error).toBe(errno);
    expect((await c.send(Op.UNLINK, 1, cstr(name))).error).toBe(errno);
    await outsideUntouched();
    expect(await fsp.readFile(join(share, "file.txt"), "utf8")).toBe("inside");
  });

  it("embedded NUL, missing terminator, trailing bytes → EINVAL", async () => {
    const c = await client();
    expect((await c.send(Op.LOOKUP, 1, Buffer.from("file.txt\0../x\0"))).error).toBe(-E.EINVAL);
    expect((await c.send(Op.LOOKUP, 1, Buffer.from("file.txt"))).error).toBe(-E.EINVAL);
    expect((await c.send(Op.MKDIR, 1, Buffer.from("\0\0\0\0\0\0\0\0a\0b\0"))).error).toBe(-E.EINVAL);
    expect((await c.send(Op.RENAME, 1, Buffer.concat([u64s(1), Buffer.from("file.txt\0")]))).error).toBe(
      -E.EINVAL,
    );
    expect((await c.send(Op.READ, 1, Buffer.alloc(4))).error).toBe(-E.EINVAL);
    expect((await c.send(Op.SETATTR, 1, Buffer.alloc(10))).error).toBe(-E.EINVAL);
  });

  it("unknown node ids and file handles → ESTALE / EBADF", async () => {
    const c = await client();
    expect((await c.lookup(4242, "file.txt")).error).toBe(-E.ESTALE);
    expect((await c.getattr(0)).error).toBe(-E.ESTALE);
    expect((await c.getattr(2n ** 63n)).error).toBe(-E.ESTALE);
    expect((await c.open(777)).error).toBe(-E.ESTALE);
    expect((await c.link(12345, 1, "hl")).error).toBe(-E.ESTALE);
    expect((await c.rename(1, "file.txt", 999, "moved")).error).toBe(-E.ESTALE);
    expect((await c.read(99n, 0, 10)).error).toBe(-E.EBADF);
    expect((await c.write(2n ** 40n, 0, Buffer.from("x"))).error).toBe(-E.EBADF);
    await outsideUntouched();
  });
});

describe("symlink policies (hostile guest requests)", () => {
  const matrix: Record<SymlinkPolicy, { symlink: number; hostlink: number | "lnk" | "dir"; link: number }> = {
    deny: { symlink: -E.EPERM, hostlink: -E.EACCES, link: -E.EPERM },
    opaque: { symlink: 0, hostlink: "lnk", link: 0 },
    follow: { symlink: 0, hostlink: "dir", link: 0 },
  };
  for (const [policy, want] of Object.entries(matrix) as [SymlinkPolicy, (typeof matrix)["deny"]][]) {
    it(`${policy}: symlink create ${want.symlink}, host symlink lookup → ${want.hostlink}, link ${want.link}`, async () => {
      const c = await client({ policy });
      expect((await c.symlink(1, "esc", "/etc")).error).toBe(want.symlink);
      if (want.symlink === 0) expect(await fsp.readlink(join(share, "esc"))).toBe("/etc");
      else await expect(fsp.lstat(join(share, "esc"))).rejects.toMatchObject({ code: "ENOENT" });

      const hl = await c.lookup(1, "hostlink");
      if (typeof want.hostlink === "number") expect(hl.error).toBe(want.hostlink);
      else expect(hl.attr!.mode & S_IFMT).toBe(want.hostlink === "lnk" ? S_IFLNK : S_IFDIR);

      if (policy === "opaque") {
        const rl = await c.send(Op.READLINK, hl.nodeid);
        expect(rl.body.toString()).toBe("../outside");
        // A hostile guest walking THROUGH the symlink node: the host never follows it.
        const through = await c.lookup(hl.nodeid, "secret.txt");
        expect(through.error).toBe(-E.ENOTDIR);
        expect((await c.create(hl.nodeid, "planted", O_WRONLY)).error).toBe(-E.ENOTDIR);
        expect((await c.mkdir(hl.nodeid, "planted-dir")).error).toBe(-E.ENOTDIR);
        expect((await c.open(hl.nodeid, O_RDONLY)).error).toBe(-E.ELOOP);
        const sa = Buffer.alloc(88);
        sa.writeUInt32LE(1, 0);
        sa.writeUInt32LE(0o777, 68);
        expect((await c.send(Op.SETATTR, hl.nodeid, sa)).error).toBe(-E.EOPNOTSUPP);
      }
      if (policy === "follow") {
        expect((await c.lookup(hl.nodeid, "secret.txt")).error).toBe(0); // trusted
      }

      const f = await c.lookup(1, "file.txt");
      expect((await c.link(f.nodeid, 1, "hard")).error).toBe(want.link);
      if (policy !== "follow") await outsideUntouched();
    });
  }

  for (const dirFdCache of [0, 256]) {
    it(`opaque: a directory swapped for a symlink to outside after LOOKUP is never walked through (dirFdCache ${dirFdCache})`, async () => {
      const c = await client({ dirFdCache });
      const d = await c.lookup(1, "dir");
      const f = await c.lookup(d.nodeid, "f");
      expect(f.error).toBe(0);
      await fsp.rename(join(share, "dir"), join(share, "dir.moved"));
      await fsp.symlink("../outside", join(share, "dir"));
      // Node ids from before the swap: a fresh walk refuses the symlink (ENOTDIR); a cached
      // directory fd still names the real (moved) directory inside the share. Never the outside.
      const inside = (e: number) => expect([0, -E.ENOTDIR, -E.ENOENT]).toContain(e);
      const lf = await c.lookup(d.nodeid, "f");
      inside(lf.error);
      if (dirFdCache === 0) expect(lf.error).toBe(-E.ENOTDIR);
      expect((await c.lookup(d.nodeid, "secret.txt")).error).toBe(dirFdCache ? -E.ENOENT : -E.ENOTDIR);
      const o = await c.open(f.nodeid, O_RDWR);
      inside(o.error);
      if (o.error === 0) expect((await c.read(o.fh, 0, 100)).body.toString()).toBe("INSIDE-F");
      inside((await c.getattr(f.nodeid)).error);
      inside((await c.create(d.nodeid, "planted", O_WRONLY)).error);
      expect((await c.send(Op.UNLINK, d.nodeid, cstr("secret.txt"))).error).toBe(
        dirFdCache ? -E.ENOENT : -E.ENOTDIR,
      );
      expect((await c.rename(d.nodeid, "secret.txt", 1, "stolen")).error).toBe(
        dirFdCache ? -E.ENOENT : -E.ENOTDIR,
      );
      inside((await c.link(f.nodeid, 1, "stolen")).error);
      if (dirFdCache === 0) {
        // A freshly looked-up node is the symlink itself; walking through it fails too.
        const fresh = await c.lookup(1, "dir");
        expect(fresh.attr!.mode & S_IFMT).toBe(S_IFLNK);
        expect((await c.lookup(fresh.nodeid, "secret.txt")).error).toBe(-E.ENOTDIR);
      }
      await outsideUntouched();
    });
  }

  it("a symlinked share root is followed once (trusted host config), components below are not", async () => {
    const rootLink = join(base, "rootlink");
    await fsp.symlink(share, rootLink);
    const server = new ShareServer({ root: rootLink, policy: "deny", tag: "t" });
    const c = new FuseTestClient(server);
    clients.push(c);
    await c.init();
    expect((await c.lookup(1, "file.txt")).error).toBe(0);
    expect((await c.lookup(1, "hostlink")).error).toBe(-E.EACCES);
  });
});

describe("bounded resources", () => {
  it("malformed lengths destroy the stream without crashing; the server can serve again", async () => {
    for (const len of [0, 39, 135169, 0xffffffff]) {
      const errors: Error[] = [];
      const server = new ShareServer({
        root: share,
        policy: "opaque",
        tag: "t",
        onError: (e) => errors.push(e),
      });
      const c = new FuseTestClient(server);
      expect((await c.init()).error).toBe(0);
      const hdr = Buffer.alloc(40);
      hdr.writeUInt32LE(len, 0);
      hdr.writeUInt32LE(Op.GETATTR, 4);
      c.raw(hdr);
      await c.serving;
      expect(c.stream.destroyed).toBe(true);
      expect(errors[0]?.message).toMatch(/invalid FUSE request length/);
      // Reusable: a fresh stream (e.g. after a snapshot restore) is served again.
      const c2 = new FuseTestClient(server);
      clients.push(c2);
      expect((await c2.init()).error).toBe(0);
      expect((await c2.getattr(1)).error).toBe(0);
    }
  });

  it("a flood with a stuck reply consumer stays bounded: input is paused, in-flight ≤ maxInFlight", async () => {
    const server = new ShareServer({ root: share, policy: "opaque", tag: "t", maxInFlight: 8 });
    const c = new FuseTestClient(server, { replyHighWaterMark: 1024, autoRead: false });
    clients.push(c);
    const N = 5000;
    const replies: Promise<unknown>[] = [c.init()];
    for (let i = 0; i < N; i++) replies.push(c.send(Op.GETATTR, 1, Buffer.alloc(16)));
    await new Promise((r) => setTimeout(r, 300));
    const s = server.stats();
    expect(s.peakInFlight).toBeLessThanOrEqual(8);
    expect(s.requests).toBeLessThan(200); // the rest stays unread in the channel (credit withheld)
    expect(s.pauses).toBeGreaterThan(0);
    expect(c.toServer.readableLength).toBeGreaterThan(0);
    // The consumer wakes up: everything is answered.
    c.startReading();
    await Promise.all(replies);
    expect(server.stats().requests).toBe(N + 1);
  });

  it("at most maxInFlight handlers run at once", async () => {
    await fsp.writeFile(join(share, "big"), Buffer.alloc(1 << 20, 7));
    const c = await client({ maxInFlight: 2 });
    const l = await c.lookup(1, "big");
    const o = await c.open(l.nodeid);
    const rs = await Promise.all(Array.from({ length: 64 }, (_, i) => c.read(o.fh, i * 16384, 16384)));
    expect(rs.every((r) => r.error === 0 && r.body.length === 16384 && r.body[0] === 7)).toBe(true);
    expect(c.server.stats().peakInFlight).toBe(2);
  });

  it("open handles are capped (ENFILE) and freed on RELEASE; close() closes every host fd", async () => {
    const fdCount = async () => (await fsp.readdir("/proc/self/fd")).length;
    const before = await fdCount();
    const c = await client({ maxOpenHandles: 3 });
    const l = await c.lookup(1, "file.txt");
    const fhs = [];
    for (let i = 0; i < 3; i++) fhs.push((await c.open(l.nodeid)).fh);
    expect((await c.open(l.nodeid)).error).toBe(-E.ENFILE);
    expect((await c.send(Op.OPENDIR, 1, u32s(0, 0))).error).toBe(-E.ENFILE);
    await c.release(fhs[0]!);
    expect((await c.open(l.nodeid)).error).toBe(0);
    expect(await fdCount()).toBeGreaterThan(before);
    await c.server.close();
    await c.serving;
    expect(await fdCount()).toBe(before);
  });

  it("the node table is capped (ENFILE) and FORGET frees entries", async () => {
    const c = await client({ maxNodes: 3 });
    const a = await c.lookup(1, "file.txt");
    expect((await c.lookup(1, "dir")).error).toBe(0);
    expect((await c.lookup(1, "hostlink")).error).toBe(-E.ENFILE);
    expect((await c.lookup(1, "file.txt")).error).toBe(0); // known node: no new entry
    c.raw(Buffer.concat([u32s(48, Op.FORGET), u64s(0, a.nodeid), Buffer.alloc(16), u64s(2)]));
    expect((await c.lookup(1, "hostlink")).error).toBe(0);
    expect(c.server.stats().nodes).toBe(3);
  });

  it("readOnly refuses every modification with EROFS", async () => {
    const c = await client({ readOnly: true });
    const l = await c.lookup(1, "file.txt");
    expect((await c.open(l.nodeid, O_WRONLY)).error).toBe(-E.EROFS);
    expect((await c.mkdir(1, "x")).error).toBe(-E.EROFS);
    expect((await c.send(Op.UNLINK, 1, cstr("file.txt"))).error).toBe(-E.EROFS);
    expect((await c.open(l.nodeid, O_RDONLY)).error).toBe(0);
  });
});

describe("options", () => {
  it("a bad policy is SM_INVALID_OPTIONS, a missing root SM_MOUNT_INVALID; a second concurrent serve is refused", async () => {
    expect(() => new ShareServer({ root: share, policy: "yes" as never, tag: "t" })).toThrow(
      expect.objectContaining({ code: "SM_INVALID_OPTIONS" }),
    );
    const missing = new ShareServer({ root: join(base, "nope"), policy: "opaque", tag: "t" });
    const c = new FuseTestClient(missing, { autoRead: false });
    await expect(c.serving).rejects.toMatchObject({ code: "SM_MOUNT_INVALID" });
    expect(c.stream.destroyed).toBe(true);
    const ok = await client();
    const other = new FuseTestClient(missing, { autoRead: false });
    await other.serving.catch(() => {});
    await expect(ok.server.serve(other.stream)).rejects.toMatchObject({ code: "SM_UNSUPPORTED" });
  });
});
