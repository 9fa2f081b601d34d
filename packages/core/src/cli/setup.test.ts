import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { qemuInstallLines, runSetup } from "./setup";

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } },
    out: () => out.join(""),
    err: () => err.join(""),
  };
}

const saved = { PATH: process.env.PATH, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME };
afterEach(() => {
  process.env.PATH = saved.PATH;
  if (saved.XDG_CACHE_HOME === undefined) delete process.env.XDG_CACHE_HOME;
  else process.env.XDG_CACHE_HOME = saved.XDG_CACHE_HOME;
});

describe("supermachine setup", () => {
  it("--help prints usage and exits 0", async () => {
    const c = capture();
    expect(await runSetup(["--help"], c.io)).toBe(0);
    expect(c.out()).toContain("Usage: supermachine setup");
  });

  it("rejects unknown arguments with exit 2", async () => {
    const c = capture();
    expect(await runSetup(["--frobnicate"], c.io)).toBe(2);
    expect(c.err()).toContain("unknown argument --frobnicate");
  });

  it("without QEMU: prints the install command for each package manager, exits 1, changes nothing", async () => {
    const cache = mkdtempSync(join(tmpdir(), "sm-setup-"));
    rmSync(cache, { recursive: true });
    process.env.XDG_CACHE_HOME = cache;
    process.env.PATH = "/nonexistent";
    const c = capture();
    expect(await runSetup([], c.io)).toBe(1);
    const out = c.out();
    expect(out).toMatch(/FAIL\s+qemu\s+qemu-system-\w+ is not on PATH/);
    for (const pm of ["apt", "dnf", "pacman", "apk", "zypper", "brew"])
      expect(out).toMatch(new RegExp(`\\n  ${pm}\\s`));
    expect(out).toMatch(/not ready: .*qemu/);
    expect(existsSync(cache)).toBe(false);
  });

  it("lists the detected package manager first", () => {
    const lines = qemuInstallLines("x86_64", "dnf");
    expect(lines[0]).toContain("sudo dnf install -y qemu-system-x86-core");
    expect(lines[0]).toContain("this host");
    expect(lines).toHaveLength(6);
  });
});
