/**
 * Runs one of the original's programs (test/e2e/seed/<file>) in a child `node` importing the built
 * package, and measures what issue 17 asks of it: the output, the time from its last stdout line to its
 * exit, and that it leaves no QEMU process or runtime dir behind. Shared by seed-programs and
 * seed-examples.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import { qemuPids, REPO } from "./_shared";

/** "A few seconds" of the issue: the exit must follow the last line within this. */
export const EXIT_AFTER_LAST_LINE_MS = 5_000;

export interface SeedRun {
  code: number | null;
  lines: string[];
  /** ms from the last stdout line (or the start, without output) to the process exit */
  lastLineToExitMs: number;
  totalMs: number;
  stderr: string;
}

export async function runSeedProgram(
  file: string,
  opts: { cwd?: string; env: Record<string, string>; timeoutMs: number },
): Promise<SeedRun> {
  const runtimeDir = await mkdtemp(join(tmpdir(), "sm-seed-rt-"));
  try {
    const t0 = performance.now();
    const child = spawn(process.execPath, [join(REPO, "test/e2e/seed", file)], {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...opts.env, SUPERMACHINE_RUNTIME_DIR: runtimeDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let stderr = "";
    let lastLineAt = t0;
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
      lastLineAt = performance.now();
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    const killer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    const exitAt = performance.now();
    clearTimeout(killer);
    // what the program left behind: QEMU processes and runtime dirs of its VMs
    expect(qemuPids(runtimeDir)).toEqual([]);
    expect(existsSync(runtimeDir) ? readdirSync(runtimeDir) : []).toEqual([]);
    return {
      code,
      lines: out.split("\n").filter((l) => l.length > 0),
      lastLineToExitMs: Math.round(exitAt - lastLineAt),
      totalMs: Math.round(exitAt - t0),
      stderr,
    };
  } finally {
    await rm(runtimeDir, { recursive: true, force: true });
  }
}
