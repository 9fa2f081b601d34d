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

/** Run a child that registers a killer (writing a marker file) and then ends in `how`. */
async function child(
  how: "exit" | "SIGTERM" | "throw",
): Promise<{ marker: boolean; code: number | null; signal: string | null }> {
  const esbuild = await import("esbuild");
  const marker = join(dir, `marker-${how}`);
  const src = `
    import { registerForCleanup } from ${JSON.stringify(cleanupTs)};
    import { writeFileSync } from "node:fs";
    registerForCleanup(() => writeFileSync(${JSON.stringify(marker)}, "killed"));
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
    p.stdout.once("data", () => {
      if (how === "SIGTERM") p.kill("SIGTERM");
    });
    p.on("exit", (code, signal) => resolve({ marker: existsSync(marker), code, signal }));
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
  it("kills registered VMs on an uncaught exception", async () => {
    const r = await child("throw");
    expect(r.marker).toBe(true);
    expect(r.code).not.toBe(0);
  });
});
