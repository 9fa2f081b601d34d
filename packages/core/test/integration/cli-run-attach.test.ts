/**
 * `supermachine run IMAGE` without a command attaches to the image's workload (the one the VM started)
 * instead of starting it a second time:
 * - the httpd fixture (a service: httpd on 8080 in the background, httpd -f on 80 in the foreground)
 *   serves through -p, nothing reports "Address already in use" on its console (which the CLI streams),
 *   and a real Ctrl-C on a terminal (util-linux `script` gives the CLI a pseudo-terminal) ends the
 *   workload (exit 130) with no QEMU left;
 * - a workload that prints and exits: its stdout and stderr are streamed (no boot log, no CR), and its
 *   exit code is the CLI's.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures } from "../../../../scripts/lib/fixtures.mjs";
import { bundle, REPO, sharedSnapshotsDir } from "../../../../test/e2e/_shared";

interface Fixtures {
  registry: string;
  images: Record<string, { ref: string; layout: string }>;
}

let f: Fixtures;
let cli: string;
let shared: string;
let work: string;

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  f = (await fixtures()) as Fixtures;
  cli = await bundle(join(REPO, "packages/core/src/cli.ts"), "cli-attach");
  work = await mkdtemp(join(tmpdir(), "sm-cli-attach-"));
});
afterAll(async () => {
  await rm(cli, { force: true });
  await rm(work, { recursive: true, force: true });
});

/** Every descendant of `pid` (ps snapshot). */
function descendants(pid: number): { pid: number; comm: string }[] {
  const rows = execFileSync("ps", ["-e", "-o", "pid=,ppid=,comm="], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter((r) => r.length >= 3)
    .map(([p, pp, comm]) => ({ pid: Number(p), ppid: Number(pp), comm: comm as string }));
  const out: { pid: number; comm: string }[] = [];
  const walk = (parent: number) => {
    for (const r of rows.filter((x) => x.ppid === parent)) {
      out.push({ pid: r.pid, comm: r.comm });
      walk(r.pid);
    }
  };
  walk(pid);
  return out;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * A copy of the busybox fixture's OCI layout whose CMD is `cmd` (same layer, new config + manifest),
 * to bake with `--layout`.
 */
function layoutWithCmd(name: string, cmd: string[]): string {
  const src = f.images.busybox?.layout as string;
  const dst = join(work, name);
  mkdirSync(join(dst, "blobs", "sha256"), { recursive: true });
  const blob = (d: string) => join(src, "blobs", "sha256", d.slice("sha256:".length));
  const index = JSON.parse(readFileSync(join(src, "index.json"), "utf8"));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), "utf8"));
  const config = JSON.parse(readFileSync(blob(manifest.config.digest), "utf8"));
  const put = (data: Buffer) => {
    const hex = createHash("sha256").update(data).digest("hex");
    writeFileSync(join(dst, "blobs", "sha256", hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  for (const l of manifest.layers)
    copyFileSync(blob(l.digest), join(dst, "blobs", "sha256", l.digest.slice(7)));
  config.config.Cmd = cmd;
  manifest.config = { ...manifest.config, ...put(Buffer.from(JSON.stringify(config))) };
  const m = put(Buffer.from(JSON.stringify(manifest)));
  writeFileSync(join(dst, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    join(dst, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          mediaType: manifest.mediaType,
          ...m,
          annotations: { "org.opencontainers.image.ref.name": "latest" },
        },
      ],
    }),
  );
  return dst;
}

describe("supermachine run IMAGE (no command) attaches to the workload", () => {
  it("httpd: one workload serves through -p, no second start, Ctrl-C on the terminal ends it (130), no QEMU left", async () => {
    const httpd = f.images.httpd?.ref as string;
    const cmd = [process.execPath, cli, "run", "-p", "0:80", "-p", "0:8080", httpd]
      .map((a) => `'${a}'`)
      .join(" ");
    const p = spawn("script", ["-qec", cmd, "/dev/null"], {
      env: { ...process.env, SUPERMACHINE_SNAPSHOTS_DIR: shared },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    p.stdout.on("data", (d) => {
      out += d;
    });
    p.stderr.on("data", (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((r) => p.on("exit", (c) => r(c)));
    const deadline = Date.now() + 170_000;
    const listening = () => /listens on guest port 80: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)?.[1];
    while (!listening()) {
      if (Date.now() > deadline || p.exitCode !== null) throw new Error(`no listening line; output:\n${out}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const res = await fetch(listening() as string);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("supermachine httpd fixture: port 80");
    // the script's background httpd on 8080 is up too: the workload ran (once) to its exec
    const fwd8080 = /127\.0\.0\.1:(\d+) → guest port 8080/.exec(out);
    const res8080 = await fetch(`http://127.0.0.1:${fwd8080?.[1]}/`);
    expect(await res8080.text()).toContain("port 8080");
    const vmms = descendants(p.pid as number).filter((x) => /qemu/.test(x.comm));
    expect(vmms.length).toBeGreaterThanOrEqual(1);

    p.stdin.write("\x03"); // the terminal's Ctrl-C: SIGINT to the foreground process group
    const code = await exited;
    expect(out).toMatch(/SIGINT forwarded/);
    expect(code).toBe(130); // httpd -f died of SIGINT: 128 + 2
    expect(out).not.toMatch(/Address already in use|bind:/i);
    const t0 = Date.now();
    while (vmms.some((v) => alive(v.pid)) && Date.now() - t0 < 5000)
      await new Promise((r) => setTimeout(r, 100));
    expect(vmms.filter((v) => alive(v.pid))).toEqual([]);
  });

  it("a workload that ignores SIGINT: the first Ctrl-C is forwarded, the second stops the VM (130), no QEMU left", async () => {
    const layout = layoutWithCmd("stubborn", [
      "sh",
      "-c",
      "trap '' INT; echo ready; while :; do sleep 1; done",
    ]);
    const p = spawn(process.execPath, [cli, "run", "--layout", layout, "stubborn:latest"], {
      env: { ...process.env, SUPERMACHINE_SNAPSHOTS_DIR: shared },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => {
      out += d;
    });
    p.stderr.on("data", (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((r) => p.on("exit", (c) => r(c)));
    const deadline = Date.now() + 170_000;
    while (!out.includes("ready\n")) {
      if (Date.now() > deadline || p.exitCode !== null) throw new Error(`no output; stderr:\n${err}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const vmms = descendants(p.pid as number).filter((x) => /qemu/.test(x.comm));
    p.kill("SIGINT");
    await new Promise((r) => setTimeout(r, 2000));
    expect(err).toMatch(/SIGINT forwarded/);
    expect(p.exitCode).toBeNull(); // the workload ignored it: still attached
    p.kill("SIGINT");
    expect(await exited).toBe(130);
    const t0 = Date.now();
    while (vmms.some((v) => alive(v.pid)) && Date.now() - t0 < 5000)
      await new Promise((r) => setTimeout(r, 100));
    expect(vmms.length).toBeGreaterThanOrEqual(1);
    expect(vmms.filter((v) => alive(v.pid))).toEqual([]);
  });

  it("a workload that prints and exits: its output is streamed (no boot log) and its exit code is the CLI's", () => {
    const layout = layoutWithCmd("printer", [
      "sh",
      "-c",
      "echo hello from the workload; sleep 1; echo bye >&2; exit 7",
    ]);
    const run = () =>
      spawnSync(process.execPath, [cli, "run", "-q", "--layout", layout, "printer:latest"], {
        encoding: "utf8",
        env: { ...process.env, SUPERMACHINE_SNAPSHOTS_DIR: shared },
        timeout: 170_000,
      });
    // first run: bake + the bake's own VM (warm handoff, its console holds the boot log); second: a restore
    for (const r of [run(), run()]) {
      expect(r.stderr).not.toMatch(/^supermachine: SM_/m);
      expect({ code: r.status, stdout: r.stdout }).toEqual({
        code: 7,
        stdout: "hello from the workload\nbye\n",
      });
    }
  });
});
