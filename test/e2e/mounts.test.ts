/**
 * Live host directory shares (issue #10) end to end: real registry, QEMU (TCG here), kernel, the C agent
 * relaying FUSE, and core's host-side ShareServer. One image with three shares (deny / opaque / follow)
 * over sibling directories of one temp root, next to a canary tree that must never change.
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Image, type Pool, type Vm } from "@supermachine/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtureRefs, sharedSnapshotsDir } from "./_shared";

/** sha256 over every path, type, mode, link target and content below `dir`. */
function treeSum(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      h.update(`${p}\0${st.mode}\0`);
      if (st.isSymbolicLink()) h.update(readlinkSync(p));
      else if (st.isDirectory()) walk(p);
      else h.update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest("hex");
}

let root = "";
let canary = "";
let pool: Pool;
let vm: Vm;
let canaryBefore = "";

async function sh(script: string): Promise<{ code: number; out: string; err: string }> {
  const r = await vm.exec({ argv: ["sh", "-c", script], timeoutMs: 60_000 });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

beforeAll(async () => {
  sharedSnapshotsDir();
  const refs = await fixtureRefs();
  root = await mkdtemp(join(tmpdir(), "sm-mounts-e2e-"));
  canary = join(root, "canary");
  mkdirSync(join(canary, "sub"), { recursive: true });
  writeFileSync(join(canary, "secret"), "host secret\n");
  writeFileSync(join(canary, "sub", "deep"), "deep secret\n");
  for (const s of ["deny", "opaque", "follow"]) {
    mkdirSync(join(root, s, "dir"), { recursive: true });
    writeFileSync(join(root, s, "hello.txt"), `hello from ${s}\n`);
    // A host-side symlink that leaves the share.
    symlinkSync(canary, join(root, s, "hostlink"));
  }
  canaryBefore = treeSum(canary);
  const image = await Image.build({
    ref: refs.busybox,
    name: "mounts-e2e",
    mounts: [
      { hostPath: join(root, "deny"), guestTag: "d", symlinks: "deny", guestPath: "/mnt/d" },
      { hostPath: join(root, "opaque"), guestTag: "o" },
      { hostPath: join(root, "follow"), guestTag: "f", symlinks: "follow", guestPath: "/mnt/f" },
    ],
  });
  pool = await image.pool();
  vm = await pool.acquire();
  const m = await sh("mkdir -p /mnt/o && mount -t smfs o /mnt/o");
  expect(m).toMatchObject({ code: 0 });
}, 600_000);

afterAll(async () => {
  await pool?.shutdown();
  if (root) rmSync(root, { recursive: true, force: true });
}, 120_000);

describe("live host shares in a real VM", () => {
  it("are mounted by tag (helper) and at guestPath (auto), as fuse.smfs", async () => {
    const r = await sh("grep fuse.smfs /proc/mounts | cut -d' ' -f1-3 | sort");
    expect(r.out).toContain("o /mnt/o fuse.smfs");
    expect(r.out).toContain("d /mnt/d fuse.smfs");
    expect(r.out).toContain("f /mnt/f fuse.smfs");
    expect(r.out).toContain("o /run/supermachine/shares/o fuse.smfs");
    expect((await sh("cat /mnt/o/hello.txt /mnt/d/hello.txt /mnt/f/hello.txt")).out).toBe(
      "hello from opaque\nhello from deny\nhello from follow\n",
    );
  });

  it("host edits are visible at once and guest writes reach the host, owned by the host user", async () => {
    writeFileSync(join(root, "opaque", "live.txt"), "v1\n");
    expect((await sh("cat /mnt/o/live.txt")).out).toBe("v1\n");
    writeFileSync(join(root, "opaque", "live.txt"), "version two\n");
    expect((await sh("cat /mnt/o/live.txt")).out).toBe("version two\n");
    const w = await sh(
      "echo from guest > /mnt/o/dir/g.txt && mkdir /mnt/o/newdir && mv /mnt/o/dir/g.txt /mnt/o/newdir/g2.txt && chmod 600 /mnt/o/newdir/g2.txt && stat -c '%u %a' /mnt/o/newdir/g2.txt",
    );
    expect(w).toMatchObject({ code: 0, out: "0 600\n" });
    const p = join(root, "opaque", "newdir", "g2.txt");
    expect(readFileSync(p, "utf8")).toBe("from guest\n");
    expect(lstatSync(p).uid).toBe(process.getuid?.());
    expect(lstatSync(p).mode & 0o777).toBe(0o600);
    expect((await sh("rm /mnt/o/newdir/g2.txt && rmdir /mnt/o/newdir && ls /mnt/o")).code).toBe(0);
    expect(existsSync(join(root, "opaque", "newdir"))).toBe(false);
  });

  it("vm.writeFile / vm.readFile / stageFiles on share paths go through the share", async () => {
    await vm.writeFile("/mnt/o/from-api.txt", "written by vm.writeFile\n");
    expect(readFileSync(join(root, "opaque", "from-api.txt"), "utf8")).toBe("written by vm.writeFile\n");
    writeFileSync(join(root, "opaque", "to-api.txt"), "host bytes\n");
    expect((await vm.readFile("/mnt/o/to-api.txt")).toString()).toBe("host bytes\n");
    // the staging path of the tag works too
    expect((await vm.readFile("/run/supermachine/shares/o/to-api.txt")).toString()).toBe("host bytes\n");
    await expect(vm.readFile("/mnt/o/nope.txt")).rejects.toMatchObject({ code: "SM_AGENT_ERROR" });
    // stageFiles into a share, then a command that runs there
    const r = await vm.exec({
      argv: ["sh", "run.sh"],
      cwd: "/mnt/o/staged",
      stageFiles: { "/mnt/o/staged/run.sh": "echo staged into the share; pwd\n" },
    });
    expect(r.stdout.toString()).toBe("staged into the share\n/mnt/o/staged\n");
    expect(readFileSync(join(root, "opaque", "staged", "run.sh"), "utf8")).toContain("staged into the share");
    rmSync(join(root, "opaque", "staged"), { recursive: true });
    rmSync(join(root, "opaque", "from-api.txt"));
    rmSync(join(root, "opaque", "to-api.txt"));
  });

  it("npm-workspace symlinks: verbatim on the host, resolvable in the guest", async () => {
    const r = await sh(
      "mkdir -p /mnt/o/packages/pkg-a /mnt/o/node_modules && echo A > /mnt/o/packages/pkg-a/index.js && ln -s ../packages/pkg-a /mnt/o/node_modules/pkg-a && cat /mnt/o/node_modules/pkg-a/index.js",
    );
    expect(r).toMatchObject({ code: 0, out: "A\n" });
    expect(readlinkSync(join(root, "opaque", "node_modules", "pkg-a"))).toBe("../packages/pkg-a");
    expect(readFileSync(join(root, "opaque", "node_modules", "pkg-a", "index.js"), "utf8")).toBe("A\n");
  });

  it("opaque: guest symlinks out of the share resolve inside the guest, never on the host", async () => {
    // `escape -> /etc` resolves to the guest's own /etc; the host's /etc is untouched.
    const r = await sh(
      "ln -s /etc /mnt/o/escape && echo pwned > /mnt/o/escape/sm-escape-test; cat /mnt/o/escape/hostname",
    );
    expect(r.code).toBe(0);
    expect(readlinkSync(join(root, "opaque", "escape"))).toBe("/etc");
    expect(existsSync("/etc/sm-escape-test")).toBe(false);
    // A relative link whose target is the canary *on the host's* layout: the host stores it verbatim and
    // never resolves it; in the guest it points nowhere.
    const rel = await sh("ln -s ../canary /mnt/o/up && cat /mnt/o/up/secret");
    expect(rel.code).not.toBe(0);
    expect(rel.out).toBe("");
    expect((await sh("echo x > /mnt/o/up/secret")).code).not.toBe(0);
    // The host-side symlink to outside the share is a symlink in the guest; following it stays in the guest.
    expect((await sh("readlink /mnt/o/hostlink")).out).toBe(`${canary}\n`);
    const hl = await sh("cat /mnt/o/hostlink/secret");
    expect(hl.out).not.toContain("host secret");
  });

  it("deny: no symlink or hard link creation (EPERM), host symlinks not traversable (EACCES)", async () => {
    const s = await sh("ln -s hello.txt /mnt/d/l");
    expect(s.code).not.toBe(0);
    expect(s.err).toMatch(/Operation not permitted/);
    const h = await sh("ln /mnt/d/hello.txt /mnt/d/hard");
    expect(h.code).not.toBe(0);
    expect(h.err).toMatch(/Operation not permitted/);
    const t = await sh("cat /mnt/d/hostlink/secret");
    expect(t.code).not.toBe(0);
    expect(t.err).toMatch(/Permission denied/);
    expect(existsSync(join(root, "deny", "l"))).toBe(false);
  });

  it("follow: host symlinks are followed (trusted shares)", async () => {
    expect((await sh("cat /mnt/f/hostlink/secret")).out).toBe("host secret\n");
  });

  it("escape attempts fail: '..', hard links across, a host-side dir⇄symlink swap race", async () => {
    expect((await sh("cat /mnt/o/../../canary/secret")).out).toBe("");
    const hard = await sh("ln /etc/passwd /mnt/o/pw");
    expect(hard.code).not.toBe(0);
    // The host swaps a share directory for a symlink to the canary while the guest keeps writing into it.
    const dir = join(root, "opaque", "race");
    mkdirSync(dir);
    let stop = false;
    const swapper = (async () => {
      let i = 0;
      while (!stop) {
        try {
          rmSync(dir, { recursive: true, force: true });
          if (i++ % 2 === 0) symlinkSync(canary, dir);
          else mkdirSync(dir);
        } catch {
          /* racing the guest */
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    const loop = await sh(
      "i=0; while [ $i -lt 300 ]; do echo owned > /mnt/o/race/secret 2>/dev/null; cat /mnt/o/race/sub/deep 2>/dev/null; mv /mnt/o/race /mnt/o/race2 2>/dev/null && mv /mnt/o/race2 /mnt/o/race 2>/dev/null; i=$((i+1)); done; echo done",
    );
    stop = true;
    await swapper;
    expect(loop.out).not.toContain("deep secret");
    expect(loop.out).toContain("done");
    expect(treeSum(canary)).toBe(canaryBefore);
  });

  it("a fresh VM from the pool (restore) gets the shares again, and vm.snapshot keeps working", async () => {
    await vm.release();
    vm = await pool.acquire();
    expect(await sh("cat /mnt/d/hello.txt; cat /run/supermachine/shares/o/hello.txt")).toEqual({
      code: 0,
      out: "hello from deny\nhello from opaque\n",
      err: "",
    });
    const snapDir = join(root, "snap");
    await sh("echo captured > /root/mark");
    const img2 = await vm.snapshot(snapDir);
    // The live VM still has its shares after the capture.
    expect((await sh("cat /mnt/f/hello.txt")).out).toBe("hello from follow\n");
    const restored = await (await Image.fromSnapshot(snapDir)).pool();
    try {
      const v2 = await restored.acquire();
      const r = await v2.exec({ argv: ["sh", "-c", "cat /root/mark /mnt/d/hello.txt"] });
      expect(r.stdout.toString()).toBe("captured\nhello from deny\n");
      await v2.release();
    } finally {
      await restored.shutdown();
    }
    expect(img2.snapshotPath).toBe(snapDir);
  }, 300_000);

  it("the canary tree outside the shares is unchanged", () => {
    expect(treeSum(canary)).toBe(canaryBefore);
  });
});
