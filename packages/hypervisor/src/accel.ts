/**
 * Accelerator resolution. "auto" tries the platform's hardware accelerator with a tiny real boot (the kernel
 * with no initrd must reach its "no root fs" panic), caches the verdict per host + QEMU + kernel under
 * CACHE/accel-probe.json, and otherwise falls back to TCG with ONE warning naming the reason.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { hostname, release, tmpdir } from "node:os";
import { join } from "node:path";
import { cacheRoot } from "@supermachine/base";
import { type MachineProfile, qemuMachineArgs } from "./argv";
import { KVM_PROBE_TIMEOUT_MS } from "./constants";
import type { ResolvedAccel } from "./contract";
import { deathSignalWrapper, qemuVersion } from "./process";

export interface ProbeResult {
  ok: boolean;
  reason?: string;
  ms?: number;
}

const warned = new Set<string>();
/** Emit `message` once per process (per distinct message). */
export function warnOnce(
  message: string,
  warn: (m: string) => void = (m) => process.emitWarning(m, { code: "SM_ACCEL_FALLBACK" }),
): void {
  if (warned.has(message)) return;
  warned.add(message);
  warn(message);
}

/** Static checks of /dev/kvm before any boot. Returns a reason string when KVM clearly cannot work. */
export function kvmPrecheck(): string | undefined {
  if (process.platform !== "linux") return "KVM exists only on Linux";
  if (!existsSync("/dev/kvm"))
    return "no /dev/kvm (KVM module not loaded, or virtualization disabled in firmware / not nested)";
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return "permission denied on /dev/kvm (add your user to the 'kvm' group and log in again)";
  }
  return undefined;
}

/** True when the host's KVM is PVM (module kvm_pvm), which runs only PVM-enabled guest kernels. */
export function isPvmHost(): boolean {
  return existsSync("/sys/module/kvm_pvm");
}

/** Boot `kernelPath` with `accel` and no root/initrd; success = the guest kernel reaches its root-mount panic. */
export async function probeAccelBoot(
  profile: MachineProfile,
  qemuBinary: string,
  accel: ResolvedAccel,
  kernelPath: string,
): Promise<ProbeResult> {
  const dir = mkdtempSync(join(tmpdir(), "sm-accel-probe-"));
  const consoleLog = join(dir, "console.log");
  const t0 = performance.now();
  try {
    const args = [
      ...qemuMachineArgs(profile, accel, profile.machine, "128M", 1),
      "-kernel",
      kernelPath,
      "-append",
      `console=${profile.consoleDevice} panic=-1 reboot=t`,
      "-serial",
      `file:${consoleLog}`,
    ];
    const argv = [...deathSignalWrapper(), qemuBinary, ...args];
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (b: Buffer) => {
      if (stderr.length < 8192) stderr += b.toString();
    });
    const res = await new Promise<{ code: number | null; timedOut: boolean }>((resolve) => {
      const t = setTimeout(() => {
        child.kill("SIGKILL");
        resolve({ code: null, timedOut: true });
      }, KVM_PROBE_TIMEOUT_MS);
      child.once("exit", (code) => {
        clearTimeout(t);
        resolve({ code, timedOut: false });
      });
      child.once("error", () => {
        clearTimeout(t);
        resolve({ code: null, timedOut: false });
      });
    });
    const ms = Math.round(performance.now() - t0);
    const console = existsSync(consoleLog) ? readFileSync(consoleLog, "utf8") : "";
    if (/Kernel panic|Unable to mount root|No working init/.test(console)) return { ok: true, ms };
    const firstErr = stderr.trim().split("\n")[0] ?? "";
    if (res.timedOut)
      return {
        ok: false,
        reason: `probe boot did not reach the kernel's root-mount stage within ${KVM_PROBE_TIMEOUT_MS} ms`,
        ms,
      };
    return {
      ok: false,
      reason: `probe boot crashed (exit code ${res.code})${firstErr ? `: ${firstErr}` : ""}`,
      ms,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface ProbeCacheEntry extends ProbeResult {
  probedAt: string;
}

function probeKey(parts: string[]): string {
  return createHash("sha256").update(parts.join("\n")).digest("hex").slice(0, 32);
}

/** Probe with an on-disk cache keyed by host, host kernel, QEMU binary+version, guest kernel file, accel. */
export async function cachedProbe(
  profile: MachineProfile,
  qemuBinary: string,
  accel: ResolvedAccel,
  kernelPath: string,
  cacheDir = cacheRoot(),
): Promise<ProbeResult & { cached: boolean }> {
  const st = statSync(kernelPath);
  const key = probeKey([
    hostname(),
    release(),
    qemuBinary,
    qemuVersion(qemuBinary) ?? "?",
    kernelPath,
    String(st.size),
    String(st.mtimeMs),
    accel,
    profile.machine,
  ]);
  const file = join(cacheDir, "accel-probe.json");
  let db: Record<string, ProbeCacheEntry> = {};
  try {
    db = JSON.parse(readFileSync(file, "utf8"));
  } catch {}
  const hit = db[key];
  if (hit) return { ok: hit.ok, ...(hit.reason ? { reason: hit.reason } : {}), cached: true };
  const r = await probeAccelBoot(profile, qemuBinary, accel, kernelPath);
  db[key] = { ...r, probedAt: new Date().toISOString() };
  try {
    mkdirSync(cacheDir, { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(db, null, 2));
    renameSync(tmp, file);
  } catch {}
  return { ...r, cached: false };
}
