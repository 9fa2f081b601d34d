/**
 * Host-exit cleanup: a child Node process owning a runtime dir and a stand-in VMM (`sleep`, spawned through the
 * same setpriv path as QEMU) must leave neither behind, however it ends.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sweepStaleRuntimeDirs } from "./runtime";

const work = mkdtempSync(join(tmpdir(), "sm-runtime-"));
const bundle = join(work, "child.mjs");
beforeAll(async () => {
  const esbuild = await import("esbuild");
  esbuild.buildSync({
    entryPoints: [fileURLToPath(new URL("./__fixtures__/runtime-child.ts", import.meta.url))],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: bundle,
    logLevel: "silent",
  });
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return fn();
}

async function runChild(mode: string) {
  const root = join(work, `rt-${mode}`);
  const child = spawn(process.execPath, [bundle, mode, root], { stdio: ["ignore", "pipe", "pipe"] });
  const info = await new Promise<{ dir: string; pid: number }>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(JSON.parse(out.slice(0, out.indexOf("\n"))));
    });
    child.once("exit", () => reject(new Error("child exited early")));
  });
  expect(existsSync(info.dir)).toBe(true);
  expect(alive(info.pid)).toBe(true);
  return { child, info };
}

describe("runtime dirs and VMM processes are cleaned up when the host process ends", () => {
  for (const [mode, signal] of [
    ["sigterm", "SIGTERM"],
    ["sigint", "SIGINT"],
    ["hang", "SIGKILL"],
    ["throw", undefined],
    ["exit", undefined],
  ] as const) {
    it(`${signal ? `on ${signal}` : mode === "throw" ? "on an uncaught exception" : "on normal exit"}`, async () => {
      const { child, info } = await runChild(mode);
      const exited = new Promise((r) => child.once("exit", r));
      if (signal) child.kill(signal);
      await exited;
      expect(await until(() => !alive(info.pid), 5000)).toBe(true);
      expect(await until(() => !existsSync(info.dir), 5000)).toBe(true);
    });
  }

  it("sweeps dirs whose owner process is gone, keeps live ones", () => {
    const root = join(work, "sweep");
    mkdirSync(join(root, "dead"), { recursive: true });
    writeFileSync(join(root, "dead/owner"), "999999999\n");
    mkdirSync(join(root, "live"));
    writeFileSync(join(root, "live/owner"), `${process.pid}\n`);
    expect(sweepStaleRuntimeDirs(root)).toEqual([join(root, "dead")]);
    expect(existsSync(join(root, "live"))).toBe(true);
  });
});
