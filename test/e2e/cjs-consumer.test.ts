/**
 * A CommonJS program, run from a consumer project against the built packages, builds the fixture busybox
 * image, acquires a VM, execs in it, shuts the pool down and exits by itself; everything it loaded of
 * supermachine is the CJS build (core's lazily imported backend included).
 */
import { spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, consumerDir } from "./_consumer";
import { type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

const PROGRAM = `"use strict";
const { Image, Vm } = require("@supermachine/core");

async function main() {
  const [ref, snapshotsDir] = process.argv.slice(2);
  const image = await Image.build({ ref, snapshotsDir });
  const pool = await image.pool({ min: 1, max: 1 });
  try {
    const vm = await pool.acquire();
    const out = await vm.exec({ argv: ["sh", "-c", "echo hello from CommonJS; uname -s"] });
    const loaded = Object.keys(require.cache).filter((f) => f.includes("/packages/"));
    process.stdout.write(JSON.stringify({
      stdout: out.stdout.toString(),
      exitCode: out.exitCode,
      isVm: vm instanceof Vm,
      isImage: image instanceof Image,
      loaded,
    }) + "\\n");
    await vm.release();
  } finally {
    await pool.shutdown();
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + "\\n");
  process.exitCode = 1;
});
`;

let dir: string;
let refs: FixtureRefs;
let snapshots: string;

beforeAll(async () => {
  assertBuilt();
  snapshots = sharedSnapshotsDir();
  refs = await fixtureRefs();
  dir = consumerDir("sm-cjs-");
  writeFileSync(join(dir, "main.cjs"), PROGRAM);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[], timeoutMs: number) {
  return new Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }>((done) => {
    const p = spawn(process.execPath, args, { cwd: dir, env: process.env });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (c) => {
      stdout += c;
    });
    p.stderr.on("data", (c) => {
      stderr += c;
    });
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      p.kill("SIGKILL");
    }, timeoutMs);
    p.on("close", (code) => {
      clearTimeout(t);
      done({ code, stdout, stderr, timedOut });
    });
  });
}

describe("CommonJS consumer", () => {
  it("require('@supermachine/core'): build, acquire, exec, shutdown, and the process exits", async () => {
    const r = await run(["main.cjs", refs.busybox, snapshots], 170_000);
    expect(r.timedOut, `did not exit by itself; stderr: ${r.stderr}`).toBe(false);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
      stdout: string;
      exitCode: number;
      isVm: boolean;
      isImage: boolean;
      loaded: string[];
    };
    expect(out).toMatchObject({
      stdout: "hello from CommonJS\nLinux\n",
      exitCode: 0,
      isVm: true,
      isImage: true,
    });
    // Only CJS builds, and the kvm backend (loaded with import() inside core) among them.
    expect(out.loaded.filter((f) => !f.endsWith(".cjs"))).toEqual([]);
    expect(out.loaded.some((f) => /hypervisor-kvm\/dist\/index\.cjs$/.test(f))).toBe(true);
    expect(out.loaded.some((f) => /core\/dist\/index\.cjs$/.test(f))).toBe(true);
  });
});
