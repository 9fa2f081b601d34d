/**
 * `supermachine doctor`: checks what running VMs needs on this host. Each failed check names its fix;
 * fixes that only exist in the repository (`make -C guest-agent`, `npm run setup`) are given only when
 * running from the monorepo checkout — an npm user is pointed at `npx supermachine setup`.
 */
import { execFileSync } from "node:child_process";
import { existsSync, statfsSync } from "node:fs";
import { resolve } from "node:path";
import { findExecutable, resolveKernelBundle, type VmmBackend } from "@supermachine/hypervisor";
import { defaultSnapshotsDir, hostArch, runtimeRoot } from "../paths";
import { agentCandidates, BACKEND_PACKAGES, defaultBackendName } from "../runtime";
import { MKE2FS_CANDIDATES } from "../volumes";
import { type CommandHelp, parseArgs, UsageError } from "./args";
import { fmtBytes } from "./progress";
import { repoCheckout } from "./where";

export const DOCTOR_HELP: CommandHelp = {
  usage: "doctor",
  summary: "check QEMU, kernel, guest agent, accelerator, runtime dir, disk and mke2fs on this host",
  description:
    "Prints one line per check (ok / warn / FAIL) with the fix for each failure; exit 1 when a check\nfailed. `supermachine setup` installs or explains what is missing.",
  options: [],
  examples: ["supermachine doctor"],
};

export type Fix = "qemu" | "kernel" | "agent";

/** The fix to print for a missing piece, for a repository checkout or an installed package. */
export function fixHint(what: Fix, arch: string, inRepo: boolean): string {
  if (inRepo) {
    if (what === "agent") return `build it: make -C guest-agent ARCH=${arch} (npm run setup does)`;
    if (what === "kernel") return "npm run setup (downloads the kernel bundle into the cache)";
    return "npm run setup (installs QEMU on Debian), or see `npx supermachine setup`";
  }
  if (what === "qemu")
    return "run `npx supermachine setup`: it prints the QEMU install command for this host";
  return `run \`npx supermachine setup\` (it installs or names the guest bundle for ${arch})`;
}

export async function cmdDoctor(args: string[]): Promise<number> {
  const p = parseArgs("doctor", args, [], 0);
  if (p.rest.length) throw new UsageError(`doctor takes no arguments, got: ${p.rest.join(" ")}`, "doctor");
  return doctorReport(repoCheckout() !== undefined);
}

/** The checks, printed to stdout; `inRepo` selects the fixes to print. Exit status 1 if one failed. */
export async function doctorReport(inRepo: boolean): Promise<number> {
  let failures = 0;
  const line = (ok: boolean | "warn", what: string, detail: string, fix?: string) => {
    const mark = ok === true ? "ok  " : ok === "warn" ? "warn" : "FAIL";
    if (ok === false) failures++;
    const text = fix ? `${detail.replace(/[.\s]+$/, "")}. Fix: ${fix}` : detail;
    process.stdout.write(`${mark}  ${what.padEnd(14)} ${text}\n`);
  };
  const arch = hostArch();
  const qemuName = arch === "x86_64" ? "qemu-system-x86_64" : "qemu-system-aarch64";
  const qemu = findExecutable(qemuName);
  if (qemu) {
    let version = "";
    try {
      version = execFileSync(qemu, ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "";
    } catch {
      /* ignore */
    }
    line(true, "qemu", `${qemu} ${version}`);
  } else line(false, "qemu", `${qemuName} not on PATH`, fixHint("qemu", arch, inRepo));
  let kernelPath: string | undefined;
  try {
    const b = resolveKernelBundle({ arch });
    kernelPath = b.kernelPath;
    line(true, "kernel", `${b.release} (${b.dir})`);
  } catch (err) {
    line(false, "kernel", (err as Error).message, fixHint("kernel", arch, inRepo));
  }
  const agent = agentCandidates(arch).find((c) => existsSync(c));
  if (agent) line(true, "guest agent", agent);
  else line(false, "guest agent", `no guest agent binary for ${arch}`, fixHint("agent", arch, inRepo));
  const backendName = defaultBackendName();
  try {
    const entry = BACKEND_PACKAGES[backendName];
    if (!entry) throw new Error(`unknown backend ${backendName} (SUPERMACHINE_BACKEND: kvm or hvf)`);
    const mod = (await entry.load()) as Record<string, (() => VmmBackend) | undefined>;
    const factory = mod[entry.factory];
    if (!factory) throw new Error(`${entry.pkg} has no backend factory`);
    const be = factory();
    if (kernelPath) {
      const r = await be.resolveAccel("auto");
      line(
        r.accel === "tcg" ? "warn" : true,
        "accelerator",
        r.accel === "tcg" ? `tcg (software emulation, slow): ${r.fallbackReason ?? ""}` : r.accel,
      );
    } else line("warn", "accelerator", "not probed (no kernel)");
  } catch (err) {
    line(false, "backend", `${backendName}: ${(err as Error).message}`);
  }
  const rt = runtimeRoot();
  try {
    const base = existsSync("/dev/shm") ? "/dev/shm" : rt;
    const s = statfsSync(base);
    const free = s.bavail * s.bsize;
    line(
      free > 512 * 1024 * 1024 ? true : "warn",
      "runtime dir",
      `${rt} (${fmtBytes(free)} free in ${base})`,
    );
  } catch (err) {
    line(false, "runtime dir", `${rt}: ${(err as Error).message}`);
  }
  const snaps = defaultSnapshotsDir();
  try {
    let probe = snaps;
    while (!existsSync(probe)) probe = resolve(probe, "..");
    const s = statfsSync(probe);
    const free = s.bavail * s.bsize;
    line(free > 2 * 1024 * 1024 * 1024 ? true : "warn", "disk", `${snaps} (${fmtBytes(free)} free)`);
  } catch (err) {
    line(false, "disk", (err as Error).message);
  }
  const mke2fs = MKE2FS_CANDIDATES.find((c) => (c.startsWith("/") ? existsSync(c) : findExecutable(c)));
  line(
    mke2fs ? true : "warn",
    "mke2fs",
    mke2fs ?? "not found: volumes need mke2fs (install the e2fsprogs package)",
  );
  if (failures > 0 && !inRepo) process.stdout.write("\nTo fix: npx supermachine setup\n");
  return failures > 0 ? 1 : 0;
}
