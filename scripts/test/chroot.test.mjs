// Tests of scripts/lib/chroot.mjs (the fresh-root check's teardown and its reading of npm start's summary).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  isUnder,
  mountsUnder,
  parseMountinfo,
  parseStepSummary,
  processesInRoot,
  teardownRoot,
} from "../lib/chroot.mjs";
import { isStaticElf } from "../lib/system.mjs";
import { sharesOurRoot, which } from "../lib/util.mjs";

const temps = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), "sm-chroot-test-"));
  temps.push(d);
  return d;
};
after(() => {
  for (const d of temps) if (existsSync(d)) teardownRoot(d);
});

const MOUNTINFO = [
  "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
  "30 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw",
  "90 22 0:20 / /srv/fresh/runs/7/proc rw - proc proc rw",
  "91 22 0:21 / /srv/fresh/runs/7/sys rw - sysfs sysfs rw",
  "92 22 0:5 / /srv/fresh/runs/7/dev rw - devtmpfs udev rw",
  "93 92 0:40 / /srv/fresh/runs/7/dev/shm rw - tmpfs tmpfs rw",
  "94 22 252:0 /cache/apt /srv/fresh/runs/7/var/cache/apt\\040archives rw - ext4 /dev/vda rw",
  "95 22 0:41 / /srv/fresh/runs/70/proc rw - proc proc rw",
  "96 90 0:42 / /srv/fresh/runs/7/proc rw - tmpfs over\\134proc rw",
  "",
].join("\n");

describe("mount discovery", () => {
  test("parseMountinfo reads mount points and undoes the octal escapes", () => {
    const m = parseMountinfo(MOUNTINFO);
    assert.equal(m.length, 9);
    assert.deepEqual(m[6], {
      id: 94,
      parent: 22,
      mountPoint: "/srv/fresh/runs/7/var/cache/apt archives",
      fsType: "ext4",
      source: "/dev/vda",
    });
    assert.equal(m[8].source, "over\\proc");
  });

  test("mountsUnder: only that tree (not runs/70), deepest first, the upper of two stacked mounts first", () => {
    const mps = mountsUnder("/srv/fresh/runs/7", MOUNTINFO);
    assert.deepEqual(mps, [
      "/srv/fresh/runs/7/var/cache/apt archives",
      "/srv/fresh/runs/7/dev/shm",
      "/srv/fresh/runs/7/proc", // id 96, stacked on 90
      "/srv/fresh/runs/7/dev",
      "/srv/fresh/runs/7/sys",
      "/srv/fresh/runs/7/proc", // id 90
    ]);
    assert.deepEqual(mountsUnder("/srv/fresh/runs/7/", MOUNTINFO), mps, "a trailing slash changes nothing");
    assert.deepEqual(mountsUnder("/srv/other", MOUNTINFO), []);
  });

  test("isUnder compares whole path components", () => {
    assert.ok(isUnder("/a/b", "/a/b"));
    assert.ok(isUnder("/a/b/c", "/a/b"));
    assert.ok(!isUnder("/a/bc", "/a/b"));
    assert.ok(!isUnder("/a", "/a/b"));
  });
});

describe("process discovery", () => {
  test("processesInRoot: roots at or below the dir, deleted roots too, nothing else", () => {
    const proc = temp();
    const entry = (pid, root) => {
      mkdirSync(join(proc, pid));
      if (root !== null) symlinkSync(root, join(proc, pid, "root"));
    };
    entry("10", "/x/run"); // in the chroot
    entry("11", "/x/run/root/fixture"); // a chroot inside the chroot
    entry("12", "/x/runner"); // a sibling whose name starts the same
    entry("13", "/x/run (deleted)"); // the root dir was already removed
    entry("14", null); // a zombie: no readable root
    entry("15", "/"); // the host
    mkdirSync(join(proc, "self"));
    assert.deepEqual(processesInRoot("/x/run", proc).sort(), [10, 11, 13]);
    assert.deepEqual(processesInRoot("/x/nothing", proc), []);
    assert.deepEqual(processesInRoot("/x/run", join(proc, "missing")), []);
  });

  test("processesInRoot on the real /proc finds no process rooted in a fresh temp dir", () => {
    assert.deepEqual(processesInRoot(temp()), []);
  });
});

describe("teardownRoot", () => {
  test("refuses / and top-level directories", () => {
    assert.throws(() => teardownRoot("/"), /refusing/);
    assert.throws(() => teardownRoot("/tmp"), /refusing/);
  });

  test("a plain directory is deleted", () => {
    const d = temp();
    writeFileSync(join(d, "f"), "x");
    const r = teardownRoot(d);
    assert.deepEqual(r.problems, []);
    assert.equal(r.removed, true);
    assert.equal(existsSync(d), false);
  });

  test("kills a process chrooted into it, unmounts a tmpfs and a bind mount, and never deletes through the bind", async (t) => {
    if (process.getuid?.() !== 0) return t.skip("needs root (chroot, mount)");
    const busybox = which("busybox");
    if (!busybox || !isStaticElf(busybox)) return t.skip("needs a static busybox (node scripts/setup.mjs)");
    const root = temp();
    const outside = temp(); // bound into the root: its file must survive the teardown
    writeFileSync(join(outside, "canary"), "keep me");
    mkdirSync(join(root, "bin"));
    mkdirSync(join(root, "bound"));
    mkdirSync(join(root, "shm"));
    copyFileSync(busybox, join(root, "bin/busybox"));
    spawnSync("chmod", ["0755", join(root, "bin/busybox")]);
    assert.equal(spawnSync("mount", ["--bind", outside, join(root, "bound")]).status, 0);
    assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", join(root, "shm")]).status, 0);
    const child = spawn("chroot", [root, "/bin/busybox", "sleep", "600"], { stdio: "ignore" });
    const exited = new Promise((res) => child.on("exit", (_code, sig) => res(sig)));
    for (let i = 0; i < 50 && processesInRoot(root).length === 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(processesInRoot(root), [child.pid]);
    // The same command line in a chroot is not ours (the registry's orphan check relies on this).
    assert.equal(sharesOurRoot(child.pid), false);
    assert.equal(sharesOurRoot(process.pid), true);

    const r = teardownRoot(root);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(r.killed, [child.pid]);
    assert.equal(await exited, "SIGKILL");
    assert.deepEqual(r.unmounted.sort(), [join(root, "bound"), join(root, "shm")]);
    assert.equal(r.removed, true);
    assert.equal(existsSync(root), false);
    assert.equal(existsSync(join(outside, "canary")), true, "the bind mount's source must be untouched");
    rmSync(outside, { recursive: true, force: true });
  });
});

describe("npm start summary", () => {
  const summary = (rows) =>
    [
      "\n\x1b[1mnpm start summary\x1b[0m",
      ...rows,
      "\x1b[32mall steps passed (total 151.5 s)\x1b[0m",
      "",
    ].join("\n");

  test("all steps ok → nothing failed", () => {
    const s = parseStepSummary(
      `noise\n  not a row  1.0 s  FAILED (exit 9)\n${summary([
        "  npm ci                                       12.0 s  ok",
        "  setup                                       106.2 s  ok",
        "  demo: supermachine run busybox -- uname -a     6.9 s  ok",
      ])}`,
    );
    assert.equal(s.found, true);
    assert.deepEqual(
      s.steps.map((x) => [x.name, x.secs, x.status]),
      [
        ["npm ci", 12, "ok"],
        ["setup", 106.2, "ok"],
        ["demo: supermachine run busybox -- uname -a", 6.9, "ok"],
      ],
    );
    assert.deepEqual(s.failed, []);
  });

  test("a failed step is reported; skips are not failures", () => {
    const s = parseStepSummary(
      summary(["  setup    30.0 s  FAILED (exit 3)", "  build   0.0 s  skipped: --skip-build"]),
    );
    assert.deepEqual(s.failed, ["setup"]);
    assert.equal(s.steps[1].status, "skipped: --skip-build");
  });

  test("no summary (npm start died early) → found is false", () => {
    assert.equal(parseStepSummary("npm ERR! something\n").found, false);
  });
});
