// Types of image.mjs (the agent's own VM test helpers), so the TypeScript integration tests that import
// it are type-checked (tsconfig.test.json).
import type { ChildProcess } from "node:child_process";
import type { Socket } from "node:net";

export const agentDir: string;
export const cacheRoot: string;
export function kernelBundle(arch?: string): { dir: string; kernel: string; modules: string };
/** Builds the agent for `arch` (make) and returns the binary's path. */
export function buildAgent(arch?: string): string;
/** A squashfs root with busybox and its applet links; returns the file's path. */
export function buildBusyboxSquashfs(work: string, opts?: { busybox?: string }): string;
export const DEFAULT_MODULES: string[];
export function buildInitramfs(
  work: string,
  opts: { agent: string; modulesDir: string; modules?: string[]; config?: unknown },
): string;
export function defaultConfig(extra?: Record<string, unknown>): Record<string, unknown>;
export function startQemu(
  work: string,
  opts: {
    kernel: string;
    initrd: string;
    rootfs?: string;
    name?: string;
    memMib?: number;
    memPath?: string;
    incoming?: boolean;
    share?: boolean;
    arch?: string;
    machine?: string;
  },
): {
  proc: ChildProcess;
  sock: string;
  qmp: string;
  consoleLog: string;
  mem: string;
  exited: Promise<unknown>;
  kill: () => boolean;
};
export function connectUnix(file: string, timeoutMs?: number): Promise<Socket>;
