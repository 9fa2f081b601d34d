// Quick tests of scripts/setup.mjs, run by `node --test scripts/test/` (and by `npm test`).
// Each test uses its own XDG_CACHE_HOME, so the shared registry of the machine is never touched.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const SETUP = join(dirname(fileURLToPath(import.meta.url)), "..", "setup.mjs");
const caches = [];

function tempCache() {
  const d = mkdtempSync(join(tmpdir(), "sm-setup-test-"));
  caches.push(d);
  return d;
}

function setup(cache, args, extraEnv = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SETUP, ...args], {
      env: { ...process.env, XDG_CACHE_HOME: cache, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      out += d;
    });
    child.on("close", (code) => resolve({ code, out }));
  });
}

const state = (cache) => JSON.parse(readFileSync(join(cache, "supermachine/registry/state.json"), "utf8"));

/** Running (a zombie waiting for the machine's reaper has exited: it counts as gone). */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

/** Registry processes serving a config under this cache dir. */
function registriesOf(cache) {
  const r = spawnSync("pgrep", ["-f", `docker-registry serve ${cache}/`], { encoding: "utf8" });
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

async function v2(port) {
  const r = await fetch(`http://127.0.0.1:${port}/v2/`);
  return r.status;
}

after(async () => {
  for (const c of caches) {
    await setup(c, ["registry-stop"]);
    rmSync(c, { recursive: true, force: true });
  }
});

describe("test registry", () => {
  test("starts, is reused by a second run, and registry-stop leaves no process", async () => {
    const cache = tempCache();
    const a = await setup(cache, ["registry"]);
    assert.equal(a.code, 0, a.out);
    assert.match(a.out, /registry started on 127\.0\.0\.1:\d+/);
    const s = state(cache);
    assert.equal(s.host, `127.0.0.1:${s.port}`);
    assert.equal(await v2(s.port), 200);

    const b = await setup(cache, ["registry"]);
    assert.equal(b.code, 0, b.out);
    assert.match(b.out, /registry running on/);
    assert.equal(state(cache).pid, s.pid, "second run must reuse the running registry");

    const c = await setup(cache, ["registry-stop"]);
    assert.equal(c.code, 0, c.out);
    assert.match(c.out, new RegExp(`stopped \\(pid ${s.pid}\\)`));
    assert.equal(alive(s.pid), false);
    assert.deepEqual(registriesOf(cache), []);
    await assert.rejects(v2(s.port));
  });

  test("concurrent starts end with exactly one registry", async () => {
    const cache = tempCache();
    const runs = await Promise.all([1, 2, 3].map(() => setup(cache, ["registry"])));
    for (const r of runs) assert.equal(r.code, 0, r.out);
    assert.equal(registriesOf(cache).length, 1);
    assert.equal(await v2(state(cache).port), 200);
    await setup(cache, ["registry-stop"]);
    assert.deepEqual(registriesOf(cache), []);
  });

  test("a stale state file (pid of another process) and a stale lock are replaced", async () => {
    const cache = tempCache();
    const dir = join(cache, "supermachine/registry");
    mkdirSync(dir, { recursive: true });
    // pid 1 is alive but is not our docker-registry; the lock's owner is a pid that cannot exist.
    writeFileSync(join(dir, "state.json"), JSON.stringify({ host: "127.0.0.1:1", pid: 1, port: 1 }));
    writeFileSync(
      join(cache, "supermachine/registry.lock"),
      JSON.stringify({ pid: 2 ** 22 + 7, start: "1" }),
    );
    const r = await setup(cache, ["registry"]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /stale registry state/);
    assert.match(r.out, /removed stale registry lock/);
    const s = state(cache);
    assert.notEqual(s.pid, 1);
    assert.equal(await v2(s.port), 200);
    await setup(cache, ["registry-stop"]);
  });

  test("a recorded port taken by someone else → another free port is chosen and recorded", async () => {
    const cache = tempCache();
    const squatter = createServer();
    await new Promise((res) => squatter.listen(0, "127.0.0.1", res));
    const taken = squatter.address().port;
    try {
      mkdirSync(join(cache, "supermachine/registry"), { recursive: true });
      writeFileSync(join(cache, "supermachine/registry/port"), `${taken}\n`);
      const r = await setup(cache, ["registry"]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, new RegExp(`port ${taken} is taken`));
      const s = state(cache);
      assert.notEqual(s.port, taken);
      assert.equal(await v2(s.port), 200);
      assert.equal(readFileSync(join(cache, "supermachine/registry/port"), "utf8").trim(), String(s.port));
    } finally {
      squatter.close();
      await setup(cache, ["registry-stop"]);
    }
  });
});

describe("system packages", () => {
  test("not root and a package missing → prints the exact apt-get line, exit 2, writes nothing", async (t) => {
    if (process.getuid?.() !== 0) return t.skip("needs root to switch to nobody with setpriv");
    const cache = tempCache();
    // A PATH holding every required tool except skopeo.
    const bin = join(cache, "bin");
    mkdirSync(bin);
    const tools = spawnSync(
      process.execPath,
      ["-e", 'import("./lib/system.mjs").then(m => console.log(m.REQUIRED.map(r => r[0]).join(" ")))'],
      { cwd: dirname(SETUP), encoding: "utf8" },
    )
      .stdout.trim()
      .split(" ");
    for (const tool of [...tools, "apt-get"]) {
      // Entries that are absolute paths (C headers) are found without PATH.
      if (tool === "skopeo" || tool.startsWith("/")) continue;
      // The system's directories only: a PATH entry under /root (e.g. a pyenv shim) is not usable by nobody.
      const p = spawnSync("sh", ["-c", `command -v ${tool}`], {
        encoding: "utf8",
        env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
      }).stdout.trim();
      if (p) symlinkSync(p, join(bin, tool));
    }
    spawnSync("chmod", ["-R", "a+rX", cache]);
    const xdg = join(cache, "xdg");
    // nobody runs a copy of scripts/: the clone may be where nobody cannot read (e.g. under /root).
    cpSync(dirname(SETUP), join(cache, "scripts"), { recursive: true });
    spawnSync("chmod", ["-R", "a+rX", cache]);
    const r = spawnSync(
      "setpriv",
      [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        process.execPath,
        join(cache, "scripts/setup.mjs"),
      ],
      { env: { PATH: bin, HOME: "/nonexistent", XDG_CACHE_HOME: xdg }, encoding: "utf8" },
    );
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /sudo apt-get install -y skopeo\n/);
    assert.equal(spawnSync("test", ["-e", xdg]).status, 1, "nothing may be written before packages exist");
  });
});
