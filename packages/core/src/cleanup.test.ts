import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const dir = await mkdtemp(join(tmpdir(), "sm-core-cleanup-"));
afterAll(() => rm(dir, { recursive: true, force: true }));
const cleanupTs = fileURLToPath(new URL("./cleanup.ts", import.meta.url));
// the hypervisor driver installs exit hooks of its own: a real process with VMs has both
const hvRuntimeTs = fileURLToPath(new URL("../../hypervisor/src/runtime.ts", import.meta.url));

/** Run a child that registers a killer (writing a marker file) and then ends in `how`. */
async function child(
  how: "exit" | "SIGTERM" | "throw" | "SIGINT" | "SIGINT-app" | "SIGINT-keep",
): Promise<{ marker: boolean; code: number | null; signal: string | null; rtDirLeft: boolean; out: string }> {
  const esbuild = await import("esbuild");
  const marker = join(dir, `marker-${how}`);
  const rtRoot = join(dir, `rt-${how}`);
  const src = `
    import { keepVmsOnSignal, registerForCleanup } from ${JSON.stringify(cleanupTs)};
    import { createRuntimeDir } from ${JSON.stringify(hvRuntimeTs)};
    import { existsSync, writeFileSync } from "node:fs";
    registerForCleanup(() => writeFileSync(${JSON.stringify(marker)}, "killed"));
    createRuntimeDir(${JSON.stringify(rtRoot)}, "vm1");
    if (${JSON.stringify(how)} === "SIGINT-app") process.on("SIGINT", () => { process.stdout.write("app got SIGINT\\n"); setTimeout(() => process.exit(3), 50); });
    if (${JSON.stringify(how)} === "SIGINT-keep") process.on("SIGINT", keepVmsOnSignal(() => { process.stdout.write(existsSync(${JSON.stringify(marker)}) ? "killed at the signal\\n" : "kept at the signal\\n"); setTimeout(() => process.exit(3), 50); }));
    process.stdout.write("ready\\n");
    if (${JSON.stringify(how)} === "exit") process.exit(0);
    if (${JSON.stringify(how)} === "throw") setTimeout(() => { throw new Error("boom"); }, 10);
    setInterval(() => {}, 1000);
  `;
  const out = join(dir, `child-${how}.mjs`);
  await esbuild.build({
    stdin: { contents: src, resolveDir: dir, loader: "ts" },
    bundle: true,
    platform: "node",
    format: "esm",
    outfile: out,
    logLevel: "error",
  });
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [out], { stdio: ["ignore", "pipe", "ignore"] });
    let stdout = "";
    p.stdout.on("data", (d) => {
      stdout += d;
    });
    p.stdout.once("data", () => {
      if (how === "SIGTERM") p.kill("SIGTERM");
      if (how.startsWith("SIGINT")) p.kill("SIGINT");
    });
    // a process that survives its Ctrl-C would hang this test: give up after 10 s
    const t = setTimeout(() => p.kill("SIGKILL"), 10_000);
    p.on("exit", (code, signal) => {
      clearTimeout(t);
      resolve({
        marker: existsSync(marker),
        code,
        signal,
        rtDirLeft: existsSync(join(rtRoot, "vm1")),
        out: stdout,
      });
    });
  });
}

describe("process-exit cleanup", () => {
  it("kills registered VMs on process.exit", async () => {
    expect((await child("exit")).marker).toBe(true);
  });
  it("kills registered VMs on SIGTERM and still dies of the signal", async () => {
    const r = await child("SIGTERM");
    expect(r.marker).toBe(true);
    expect(r.signal).toBe("SIGTERM");
  });
  it("SIGINT (Ctrl-C) with core's and the hypervisor driver's hooks both installed: VMs and runtime dirs go, the process dies of SIGINT", async () => {
    // each hook used to take the other for the application's own handler, so nobody re-raised the
    // signal and the process kept running after Ctrl-C
    const r = await child("SIGINT");
    expect(r).toMatchObject({ marker: true, signal: "SIGINT", rtDirLeft: false });
  });
  it("SIGINT with the application's own listener: VMs are killed, the application decides how to exit", async () => {
    const r = await child("SIGINT-app");
    expect(r).toMatchObject({ marker: true, code: 3, signal: null, rtDirLeft: false });
  });
  it("SIGINT with a listener marked keepVmsOnSignal (the CLI): VMs survive the signal, process exit kills them", async () => {
    const r = await child("SIGINT-keep");
    expect(r).toMatchObject({ marker: true, code: 3, signal: null, rtDirLeft: false });
    expect(r.out).toContain("kept at the signal");
  });
  it("kills registered VMs on an uncaught exception", async () => {
    const r = await child("throw");
    expect(r.marker).toBe(true);
    expect(r.code).not.toBe(0);
  });
});
