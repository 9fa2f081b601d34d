/**
 * ShareServer against the REAL Linux FUSE client of this host (not a VM): a test-only C relay
 * (test/share/fuse-relay.c) mounts /dev/fuse and pipes the raw protocol to the server over stdio,
 * exactly like the guest agent does over its channel. Guest-side operations run in child processes.
 *
 * Layout per policy (base = a temp dir):
 *   base/share            the served root
 *   base/outside/...      must never be read or written through the share (checksummed)
 *   base/m/mnt            the mount point; note `mnt/../outside` = base/m/outside (absent), while
 *                         `share/../outside` = base/outside, so a relative symlink `../outside`
 *                         reaches the real outside only if the SERVER (host side) followed it.
 */
import { createHash } from "node:crypto";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SymlinkPolicy } from "../../src/share/server";
import { buildRelay, guest, isMounted, type Mounted, mountShare } from "../share/kernel-harness";

const relay = await buildRelay();
let skipReason = "skip" in relay ? relay.skip : "";
const relayPath = "path" in relay ? relay.path : "";

async function treeHash(dir: string): Promise<string> {
  const h = createHash("sha256");
  const walk = async (d: string) => {
    const ents = (await fsp.readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of ents) {
      const p = join(d, e.name);
      const st = await fsp.lstat(p);
      h.update(`${p}\0${st.mode}\0${st.size}\0${st.mtimeMs}\0`);
      if (e.isDirectory()) await walk(p);
      else if (e.isSymbolicLink()) h.update(await fsp.readlink(p));
      else if (e.isFile()) h.update(await fsp.readFile(p));
    }
  };
  await walk(dir);
  return h.digest("hex");
}

interface Env {
  base: string;
  share: string;
  outside: string;
  mnt: string;
  m: Mounted;
  canary: string;
}

async function setup(policy: SymlinkPolicy): Promise<Env> {
  const base = await fsp.mkdtemp(join(tmpdir(), `sm-share-${policy}-`));
  const share = join(base, "share");
  const outside = join(base, "outside");
  const mnt = join(base, "m", "mnt");
  await fsp.mkdir(share, { recursive: true });
  await fsp.mkdir(join(outside, "canary", "deep"), { recursive: true });
  await fsp.mkdir(mnt, { recursive: true });
  await fsp.writeFile(join(outside, "secret.txt"), "SECRET");
  await fsp.writeFile(join(outside, "f"), "SECRET-F");
  await fsp.writeFile(join(outside, "canary", "deep", "c.txt"), "canary");
  await fsp.writeFile(join(share, "hello.txt"), "hello");
  // Host-side symlinks pointing out of the share.
  await fsp.symlink("../outside", join(share, "hostlink"));
  await fsp.symlink(outside, join(share, "hostabs"));
  const canary = await treeHash(outside);
  const m = await mountShare(relayPath, mnt, { root: share, policy });
  return { base, share, outside, mnt, m, canary };
}

async function teardown(env: Env | undefined): Promise<void> {
  if (!env) return;
  await env.m.stop();
  expect(await isMounted(env.mnt)).toBe(false);
  await fsp.rm(env.base, { recursive: true, force: true });
}

// Probe: can we mount at all (EPERM in unprivileged containers → skip with the relay's reason)?
if (!skipReason) {
  const probeDir = await fsp.mkdtemp(join(tmpdir(), "sm-share-probe-"));
  try {
    // Root and mount point must differ: a root that is the mount itself would make the server's
    // own fstat of its root wait on the FUSE connection it has not started serving yet.
    await fsp.mkdir(join(probeDir, "root"));
    await fsp.mkdir(join(probeDir, "mnt"));
    const m = await mountShare(relayPath, join(probeDir, "mnt"), {
      root: join(probeDir, "root"),
      policy: "opaque",
    });
    await m.stop();
  } catch (e) {
    skipReason = `cannot mount FUSE here: ${(e as Error).message}`;
  }
  await fsp.rm(probeDir, { recursive: true, force: true });
}

const POLICIES: SymlinkPolicy[] = ["deny", "opaque", "follow"];

// The relay binary's temp dir goes when the file is done.
afterAll(async () => {
  if (relayPath) await fsp.rm(dirname(relayPath), { recursive: true, force: true });
});

describe.skipIf(skipReason !== "")(`ShareServer on the host kernel's FUSE ${skipReason}`, () => {
  for (const policy of POLICIES) {
    describe(`policy ${policy}`, () => {
      let env: Env;
      beforeAll(async () => {
        env = await setup(policy);
      });
      afterAll(async () => {
        await teardown(env);
      });

      it("host edit → guest reads new bytes; guest write → host sees it", async () => {
        const r1 = await guest<string>(env.mnt, `return await fs.readFile(M + "/hello.txt", "utf8");`);
        expect(r1).toBe("hello");
        // Same size, new content: no KEEP_CACHE + AUTO_INVAL_DATA + 0 ttl → the guest sees it at once.
        await fsp.writeFile(join(env.share, "hello.txt"), "HELLO");
        const r2 = await guest<string[]>(
          env.mnt,
          `const a = await fs.readFile(M + "/hello.txt", "utf8");
           await fs.writeFile(M + "/from-guest.txt", "written by guest");
           await fs.appendFile(M + "/from-guest.txt", "!");
           return [a];`,
        );
        expect(r2).toEqual(["HELLO"]);
        expect(await fsp.readFile(join(env.share, "from-guest.txt"), "utf8")).toBe("written by guest!");
        // An already-open guest file also sees a host edit on its next read (no FOPEN_KEEP_CACHE).
        const r3p = guest<string[]>(
          env.mnt,
          `const h = await fs.open(M + "/hello.txt");
           const b = Buffer.alloc(5);
           await h.read(b, 0, 5, 0); const first = b.toString();
           await fs.writeFile(M + "/.ready", "1");
           for (let i = 0; i < 500; i++) { try { await fs.access(M + "/.go"); break; } catch { await new Promise(r => setTimeout(r, 10)); } }
           await h.read(b, 0, 5, 0); await h.close();
           return [first, b.toString()];`,
        );
        for (let i = 0; i < 500; i++) {
          if (
            await fsp.stat(join(env.share, ".ready")).then(
              () => true,
              () => false,
            )
          )
            break;
          await new Promise((r) => setTimeout(r, 10));
        }
        await fsp.writeFile(join(env.share, "hello.txt"), "WORLD");
        await fsp.writeFile(join(env.share, ".go"), "");
        const r3 = await r3p;
        expect(r3).toEqual(["HELLO", "WORLD"]);
      });

      it("guest file ops: mkdir, rename, chmod, truncate, utimes, readdir, unlink, rmdir, statfs", async () => {
        const r = await guest<Record<string, unknown>>(
          env.mnt,
          `await fs.mkdir(M + "/d1");
           await fs.writeFile(M + "/d1/a", "0123456789");
           await fs.rename(M + "/d1/a", M + "/d1/b");
           await fs.chmod(M + "/d1/b", 0o640);
           await fs.truncate(M + "/d1/b", 4);
           await fs.utimes(M + "/d1/b", 1000, 2000);
           const st = await fs.stat(M + "/d1/b");
           const list = (await fs.readdir(M + "/d1")).sort();
           await fs.mkdir(M + "/d2");
           await fs.rename(M + "/d1", M + "/d2/d1");
           const moved = await fs.readFile(M + "/d2/d1/b", "utf8");
           let chown = null; try { await fs.chown(M + "/d2/d1/b", 1234, 1234); } catch (e) { chown = e.code; }
           let mknod = null; try { await fs.mkfifo?.(M + "/fifo"); } catch (e) { mknod = e.code; }
           const sf = await fs.statfs(M);
           await fs.unlink(M + "/d2/d1/b"); await fs.rmdir(M + "/d2/d1"); await fs.rmdir(M + "/d2");
           let gone = null; try { await fs.stat(M + "/d2"); } catch (e) { gone = e.code; }
           return { mode: st.mode & 0o7777, size: st.size, mtime: st.mtimeMs, uid: st.uid, list, moved, chown, gone, bsize: sf.bsize };`,
        );
        expect(r).toMatchObject({
          mode: 0o640,
          size: 4,
          mtime: 2_000_000,
          uid: 0,
          list: ["b"],
          moved: "0123",
        });
        expect(r.chown).toBe("EPERM");
        expect(r.gone).toBe("ENOENT");
        expect(r.bsize).toBeGreaterThan(0);
        await expect(fsp.stat(join(env.share, "d2"))).rejects.toMatchObject({ code: "ENOENT" });
      });

      it("npm-workspace symlinks: node_modules/pkg -> ../packages/pkg", async () => {
        const r = await guest<Record<string, unknown>>(
          env.mnt,
          `await fs.mkdir(M + "/packages/pkg", { recursive: true });
           await fs.writeFile(M + "/packages/pkg/index.js", "module.exports = 42;");
           await fs.mkdir(M + "/node_modules", { recursive: true });
           try { await fs.symlink("../packages/pkg", M + "/node_modules/pkg"); } catch (e) { return { symlink: e.code }; }
           let link; try { link = await fs.readlink(M + "/node_modules/pkg"); } catch (e) { link = e.code; }
           return { symlink: "ok", link,
                    content: await fs.readFile(M + "/node_modules/pkg/index.js", "utf8") };`,
        );
        if (policy === "deny") {
          expect(r).toEqual({ symlink: "EPERM" });
          return;
        }
        expect(r).toEqual({
          symlink: "ok",
          // "follow": the host resolves symlinks, so the guest sees the target directory itself.
          link: policy === "follow" ? "EINVAL" : "../packages/pkg",
          content: "module.exports = 42;",
        });
        const hostSt = await fsp.lstat(join(env.share, "node_modules", "pkg"));
        expect(hostSt.isSymbolicLink()).toBe(true);
        expect(await fsp.readlink(join(env.share, "node_modules", "pkg"))).toBe("../packages/pkg");
        // Host user owns what the guest created.
        expect(hostSt.uid).toBe(process.getuid!());
      });

      it("guest-created symlink out of the share: never followed by the host", async () => {
        const r = await guest<Record<string, unknown>>(
          env.mnt,
          `const out = {};
           try { await fs.symlink("../outside", M + "/escape"); out.create = "ok"; } catch (e) { out.create = e.code; }
           try { await fs.symlink("/etc", M + "/escape-etc"); out.createEtc = "ok"; } catch (e) { out.createEtc = e.code; }
           try { out.read = await fs.readFile(M + "/escape/secret.txt", "utf8"); } catch (e) { out.read = e.code; }
           try { await fs.writeFile(M + "/escape/pwned", "x"); out.write = "ok"; } catch (e) { out.write = e.code; }
           try { out.etcLink = await fs.readlink(M + "/escape-etc"); } catch (e) { out.etcLink = e.code; }
           return out;`,
        );
        if (policy === "deny") {
          expect(r).toMatchObject({ create: "EPERM", createEtc: "EPERM", read: "ENOENT", write: "ENOENT" });
        } else if (policy === "follow") {
          // Trusted mode: the host follows symlinks, by design (documented); undo the write.
          expect(r).toMatchObject({ create: "ok", createEtc: "ok", read: "SECRET", write: "ok" });
          await fsp.unlink(join(env.outside, "pwned"));
          return;
        } else {
          expect(r).toMatchObject({ create: "ok", createEtc: "ok", etcLink: "/etc" });
          // Resolved by the (guest) kernel on the mount side: base/m/outside does not exist.
          expect(r.read).toBe("ENOENT");
          expect(r.write).toBe("ENOENT");
          expect(await fsp.readlink(join(env.share, "escape-etc"))).toBe("/etc");
        }
        await expect(fsp.stat(join(env.outside, "pwned"))).rejects.toMatchObject({ code: "ENOENT" });
      });

      it("host-side symlink to outside the share", async () => {
        const r = await guest<Record<string, unknown>>(
          env.mnt,
          `const out = {};
           try { const st = await fs.lstat(M + "/hostlink"); out.lstat = st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "dir" : "other"; } catch (e) { out.lstat = e.code; }
           try { out.readlink = await fs.readlink(M + "/hostlink"); } catch (e) { out.readlink = e.code; }
           try { out.read = await fs.readFile(M + "/hostlink/secret.txt", "utf8"); } catch (e) { out.read = e.code; }
           out.listed = (await fs.readdir(M)).includes("hostlink");
           return out;`,
        );
        expect(r.listed).toBe(true);
        if (policy === "deny") {
          expect(r).toMatchObject({ lstat: "EACCES", readlink: "EACCES", read: "EACCES" });
        } else if (policy === "opaque") {
          expect(r).toMatchObject({ lstat: "symlink", readlink: "../outside", read: "ENOENT" });
        } else {
          // Trusted: the host follows its own symlinks.
          expect(r).toMatchObject({ lstat: "dir", read: "SECRET" });
        }
      });

      it("'..' traversal stays on the mount side", async () => {
        const r = await guest<Record<string, unknown>>(
          env.mnt,
          `await fs.mkdir(M + "/sub", { recursive: true });
           try { return { read: await fs.readFile(M + "/sub/../../outside/secret.txt", "utf8") }; } catch (e) { return { read: e.code }; }`,
        );
        expect(r.read).toBe("ENOENT");
      });

      it("hard link to a file outside the share fails; links inside follow the policy", async () => {
        const r = await guest<Record<string, unknown>>(
          env.mnt,
          `const out = {};
           try { await fs.link(A.outside + "/secret.txt", M + "/hl"); out.outside = "ok"; } catch (e) { out.outside = e.code; }
           try { await fs.link(M + "/hello.txt", M + "/hl2"); out.inside = "ok"; } catch (e) { out.inside = e.code; }
           return out;`,
          { outside: env.outside },
        );
        expect(r.outside).toBe("EXDEV");
        expect(r.inside).toBe(policy === "deny" ? "EPERM" : "ok");
        if (policy !== "deny") {
          const [a, b] = await Promise.all([
            fsp.stat(join(env.share, "hello.txt")),
            fsp.stat(join(env.share, "hl2")),
          ]);
          expect(b.ino).toBe(a.ino);
        }
      });

      it("directory ↔ symlink swap race (host swaps while the guest walks): outside never reached", async () => {
        if (policy === "follow") return; // trusted: following is the point of "follow"
        const race = join(env.share, "race");
        await fsp.mkdir(race, { recursive: true });
        await fsp.writeFile(join(race, "f"), "INSIDE");
        let stop = false;
        let swaps = 0;
        const racer = (async () => {
          while (!stop) {
            try {
              await fsp.rename(race, race + ".d");
              await fsp.symlink("../outside", race);
              await new Promise((r) => setTimeout(r, 1));
              await fsp.unlink(race);
              await fsp.rename(race + ".d", race);
              await new Promise((r) => setTimeout(r, 1));
              swaps++;
            } catch {
              // the guest may have created race/ meanwhile; keep going
            }
          }
        })();
        const r = await guest<Record<string, number>>(
          env.mnt,
          `const seen = {};
           for (let i = 0; i < 400; i++) {
             let k;
             try { k = await fs.readFile(M + "/race/f", "utf8"); } catch (e) { k = e.code; }
             seen[k] = (seen[k] ?? 0) + 1;
             try { await fs.writeFile(M + "/race/w" + (i % 5), "PWN"); seen.wrote = (seen.wrote ?? 0) + 1; } catch (e) { seen["w-" + e.code] = (seen["w-" + e.code] ?? 0) + 1; }
           }
           return seen;`,
        );
        stop = true;
        await racer;
        console.log(`race (${policy}): ${swaps} swaps, guest saw ${JSON.stringify(r)}`);
        expect(swaps).toBeGreaterThan(5);
        expect(r.SECRET).toBeUndefined();
        expect(r["SECRET-F"]).toBeUndefined();
        expect(r.INSIDE).toBeGreaterThan(0);
        const outsideNames = await fsp.readdir(env.outside);
        expect(outsideNames.filter((n) => n.startsWith("w"))).toEqual([]);
      });

      it("the tree outside the share is untouched (checksum before/after)", async () => {
        expect(await treeHash(env.outside)).toBe(env.canary);
        expect(env.m.errors.filter((e) => !/EPIPE|ECONNRESET/.test(e.message))).toEqual([]);
      });
    });
  }

  describe("READDIRPLUS on the real kernel (cacheTtlMs 1000)", () => {
    for (const policy of POLICIES) {
      it(`${policy}: a listing + lstat of 300 files needs no LOOKUPs; FORGETs balance every returned entry; symlink rules hold`, async () => {
        const base = await fsp.mkdtemp(join(tmpdir(), `sm-share-rdp-${policy}-`));
        const share = join(base, "share");
        const outside = join(base, "outside");
        const mnt = join(base, "m", "mnt");
        await fsp.mkdir(join(share, "big"), { recursive: true });
        await fsp.mkdir(outside);
        await fsp.mkdir(mnt, { recursive: true });
        await fsp.writeFile(join(outside, "secret.txt"), "SECRET");
        await fsp.symlink("../outside", join(share, "hostlink"));
        const names = Array.from({ length: 300 }, (_, i) => `file-${i}.txt`);
        await Promise.all(names.map((n, i) => fsp.writeFile(join(share, "big", n), "x".repeat(i % 7))));
        // "always": every page is READDIRPLUS, so the counts below do not depend on the kernel's heuristic.
        const m = await mountShare(relayPath, mnt, {
          root: share,
          policy,
          cacheTtlMs: 1000,
          readdirPlus: "always",
        });
        try {
          const nodes0 = m.server.stats().nodes;
          const req0 = m.server.stats().requests;
          const listed = await guest<{ n: number; sizes: number; files: number }>(
            mnt,
            `let sizes = 0, files = 0, n = 0;
             for (const e of await fs.readdir(M + "/big", { withFileTypes: true })) {
               const st = await fs.lstat(M + "/big/" + e.name); n++;
               sizes += st.size; if (e.isFile() && st.isFile()) files++;
             }
             return { n, sizes, files };`,
          );
          const used = m.server.stats().requests - req0;
          expect(listed).toEqual({ n: 300, sizes: names.reduce((a, _, i) => a + (i % 7), 0), files: 300 });
          // Without READDIRPLUS this is >= 300 LOOKUPs; with it a few READDIRPLUS pages.
          expect(used).toBeLessThan(100);

          // Host symlink at the root: listed as a symlink under every policy; the LOOKUP rules hold.
          const root = await guest<Record<string, unknown>>(
            mnt,
            `const e = (await fs.readdir(M, { withFileTypes: true })).find((x) => x.name === "hostlink");
             const out = { listed: !!e, lnk: e?.isSymbolicLink() ?? null };
             try { const st = await fs.lstat(M + "/hostlink"); out.lstat = st.isSymbolicLink() ? "lnk" : st.isDirectory() ? "dir" : "other"; } catch (x) { out.lstat = x.code; }
             try { out.through = await fs.readFile(M + "/hostlink/secret.txt", "utf8"); } catch (x) { out.through = x.code; }
             return out;`,
          );
          expect(root.listed).toBe(true);
          if (policy === "deny")
            expect(root).toMatchObject({ lnk: true, lstat: "EACCES", through: "EACCES" });
          if (policy === "opaque") expect(root).toMatchObject({ lnk: true, lstat: "lnk", through: "ENOENT" });
          if (policy === "follow") expect(root).toMatchObject({ lstat: "dir", through: "SECRET" });

          // The guest removes the directory: the kernel drops the inodes and FORGETs exactly the
          // lookups it was given, so the node table returns to where it was (+ the root listing).
          const rootNodes = m.server.stats().nodes;
          expect(rootNodes).toBeGreaterThan(nodes0 + 300);
          expect(await guest(mnt, `await fs.rm(M + "/big", { recursive: true }); return "ok";`)).toBe("ok");
          let nodes = m.server.stats().nodes;
          for (let i = 0; i < 200 && nodes > rootNodes - 301; i++) {
            await new Promise((r) => setTimeout(r, 25));
            nodes = m.server.stats().nodes;
          }
          expect(nodes).toBe(rootNodes - 301); // 300 files + big itself
          expect(await fsp.readFile(join(outside, "secret.txt"), "utf8")).toBe("SECRET");
          expect(m.errors.filter((e) => !/EPIPE|ECONNRESET/.test(e.message))).toEqual([]);
        } finally {
          await m.stop();
          expect(await isMounted(mnt)).toBe(false);
          await fsp.rm(base, { recursive: true, force: true });
        }
      }, 60_000);
    }
  });

  describe("failure", () => {
    it("server stream destroyed → guest processes get an error, no hang; no mount left", async () => {
      const base = await fsp.mkdtemp(join(tmpdir(), "sm-share-kill-"));
      const share = join(base, "share");
      const mnt = join(base, "mnt");
      await fsp.mkdir(share);
      await fsp.mkdir(mnt);
      await fsp.writeFile(join(share, "f"), "x".repeat(1000));
      const m = await mountShare(relayPath, mnt, { root: share, policy: "opaque" });
      try {
        const started = Date.now();
        const child = guest<Record<string, unknown>>(
          mnt,
          `const h = await fs.open(M + "/f");
           await fs.writeFile(A.flag, "open");
           const b = Buffer.alloc(10);
           for (let i = 0; i < 10000; i++) {
             try { await h.read(b, 0, 10, 0); } catch (e) { return { error: e.code, i }; }
             await new Promise((r) => setTimeout(r, 5));
           }
           return { error: null };`,
          { flag: join(base, "flag") },
          20_000,
        );
        for (let i = 0; i < 500; i++) {
          if (
            await fsp.stat(join(base, "flag")).then(
              () => true,
              () => false,
            )
          )
            break;
          await new Promise((r) => setTimeout(r, 20));
        }
        // The host side goes away: destroying the stream ends the relay like a dead host would.
        await m.server.close();
        const r = await child;
        expect(["ENOTCONN", "EIO", "ECONNABORTED"]).toContain(r.error);
        expect(Date.now() - started).toBeLessThan(15_000);
      } finally {
        await m.stop();
        expect(await isMounted(mnt)).toBe(false);
        await fsp.rm(base, { recursive: true, force: true });
      }
    });

    it("no smfs mount is left behind", async () => {
      const mounts = await fsp.readFile("/proc/mounts", "utf8");
      expect(mounts.split("\n").filter((l) => l.includes("smfs-test") && l.includes("sm-share-"))).toEqual(
        [],
      );
    });
  });
});
