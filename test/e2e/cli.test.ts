/**
 * The `supermachine` CLI (bundled from source): run prints the command's output and exits with its code;
 * images lists the snapshot; rm deletes it; doctor reports the host.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundle, type FixtureRefs, fixtureRefs, REPO, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let cli: string;
let shared: string;

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
  cli = await bundle(join(REPO, "packages/core/src/cli.ts"), "cli");
});
afterAll(() => rm(cli, { force: true }));

function sm(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], {
    encoding: "utf8",
    env: { ...process.env, SUPERMACHINE_SNAPSHOTS_DIR: shared, ...env },
    timeout: 170_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("supermachine CLI", () => {
  it("run IMAGE -- CMD prints the output and exits with the command's code (the demo)", () => {
    const r = sm(["run", refs.busybox, "--", "uname", "-a"]);
    expect(r.stderr).not.toMatch(/^supermachine: SM_/m);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Linux \S+ 6\.\d/);
    const fail = sm(["run", "-q", refs.busybox, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    expect(fail).toMatchObject({ code: 3, stdout: "out\n", stderr: "err\n" });
  });

  it("run streams output while the command runs, and --timeout kills it (exit 137)", async () => {
    const p = spawn(
      process.execPath,
      [cli, "run", "-q", refs.busybox, "sh", "-c", "echo first; sleep 4; echo second"],
      {
        env: { ...process.env, SUPERMACHINE_SNAPSHOTS_DIR: shared },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    let firstAt = 0;
    p.stdout.on("data", (d) => {
      out += d;
      if (!firstAt && out.includes("first")) firstAt = Date.now();
    });
    const code = await new Promise<number | null>((r) => p.on("exit", (c) => r(c)));
    const endAt = Date.now();
    expect({ code, out }).toEqual({ code: 0, out: "first\nsecond\n" });
    // "first" was printed while the command still slept, not buffered until the end
    expect(endAt - firstAt).toBeGreaterThan(2500);
    const t0 = Date.now();
    const slow = sm(["run", "-q", "--timeout", "1000", refs.busybox, "sh", "-c", "echo started; sleep 30"]);
    expect(slow.code).toBe(137);
    expect(slow.stdout).toBe("started\n");
    expect(slow.stderr).toMatch(/timed out after 1000 ms/);
    expect(Date.now() - t0).toBeLessThan(25_000);
  });

  it("run -it gives the command a terminal: input reaches it, output and exit code come back", () => {
    // util-linux `script` runs the CLI on a real pseudo-terminal (stdin/stdout are TTYs, raw mode works).
    const cmd = [process.execPath, cli, "run", "-q", "-it", refs.busybox, "--", "sh"]
      .map((a) => `'${a}'`)
      .join(" ");
    const r = spawnSync("script", ["-qec", cmd, "/dev/null"], {
      input: "tty; echo $((6*7)); exit 5\n",
      encoding: "utf8",
      env: { ...process.env, SUPERMACHINE_SNAPSHOTS_DIR: shared },
      timeout: 170_000,
    });
    expect(r.stdout).toMatch(/\/dev\/pts\/\d+/);
    expect(r.stdout).toMatch(/^42\r?$/m);
    expect(r.status).toBe(5);
  });

  it("images lists snapshots; rm deletes one; bad usage exits 2", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sm-core-e2e-cli-"));
    try {
      const env = { SUPERMACHINE_SNAPSHOTS_DIR: dir };
      const b = sm(["build", "-q", "--name", "bb", refs.busybox], env);
      expect(b.code).toBe(0);
      expect(b.stdout.trim()).toBe(join(dir, "bb"));
      const ls = sm(["images"], env);
      expect(ls.stdout).toMatch(
        /^NAME\s+IMAGE\s+MEMORY\s+SIZE\s+CREATED\nbb\s+\S+busybox:latest\s+256 MiB\s+\S+ \S+\s+\d+s ago\n$/,
      );
      expect(sm(["rm", "bb"], env).code).toBe(0);
      expect(sm(["images"], env).stdout.split("\n").filter(Boolean)).toHaveLength(1);
      expect(sm(["rm", "bb"], env).code).toBe(1);
      expect(sm(["frobnicate"]).code).toBe(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("doctor checks QEMU, kernel, agent, accelerator, runtime dir and disk", () => {
    const r = sm(["doctor"]);
    for (const what of ["qemu", "kernel", "guest agent", "accelerator", "runtime dir", "disk"]) {
      expect(r.stdout).toMatch(new RegExp(`^(ok  |warn)  ${what}`, "m"));
    }
    expect(r.code).toBe(0);
  });
});
