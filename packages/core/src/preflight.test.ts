import { afterEach, describe, expect, it } from "vitest";
import { codeOf } from "./errors";
import {
  checkDependencies,
  compareDotted,
  detectPackageManager,
  MIN_QEMU_VERSION,
  PACKAGE_MANAGERS,
  parseQemuVersion,
  preflight,
  qemuInstallCommand,
} from "./preflight";

const saved = { PATH: process.env.PATH, SUPERMACHINE_AGENT: process.env.SUPERMACHINE_AGENT };
afterEach(() => {
  process.env.PATH = saved.PATH;
  if (saved.SUPERMACHINE_AGENT === undefined) delete process.env.SUPERMACHINE_AGENT;
  else process.env.SUPERMACHINE_AGENT = saved.SUPERMACHINE_AGENT;
});

describe("preflight helpers", () => {
  it("parses QEMU's --version and compares against the minimum", () => {
    expect(parseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n")).toBe(
      "7.2.22",
    );
    expect(parseQemuVersion("QEMU emulator version 9.1.0\n")).toBe("9.1.0");
    expect(compareDotted("7.2.22", MIN_QEMU_VERSION)).toBeGreaterThan(0);
    expect(compareDotted("5.1.0", MIN_QEMU_VERSION)).toBeLessThan(0);
    expect(compareDotted("5.2", "5.2.0")).toBe(0);
  });

  it("has an install command for each package manager and guest arch", () => {
    expect(PACKAGE_MANAGERS).toEqual(["apt", "dnf", "pacman", "apk", "zypper", "brew"]);
    expect(qemuInstallCommand("apt", "x86_64")).toBe("sudo apt-get install -y qemu-system-x86");
    expect(qemuInstallCommand("apt", "aarch64")).toBe("sudo apt-get install -y qemu-system-arm");
    expect(qemuInstallCommand("dnf", "x86_64")).toBe("sudo dnf install -y qemu-system-x86-core");
    expect(qemuInstallCommand("pacman", "aarch64")).toBe("sudo pacman -S --needed qemu-system-aarch64");
    expect(qemuInstallCommand("apk", "x86_64")).toBe("sudo apk add qemu-system-x86_64");
    expect(qemuInstallCommand("zypper", "aarch64")).toBe("sudo zypper install -y qemu-arm");
    expect(qemuInstallCommand("brew", "aarch64")).toBe("brew install qemu");
  });

  it("detects the package manager from os-release, then from PATH", () => {
    const none = () => false;
    expect(detectPackageManager("darwin", undefined, none)).toBe("brew");
    expect(detectPackageManager("linux", 'ID=debian\nVERSION_ID="12"', none)).toBe("apt");
    expect(detectPackageManager("linux", 'ID=linuxmint\nID_LIKE="ubuntu debian"', none)).toBe("apt");
    expect(detectPackageManager("linux", 'ID="rocky"\nID_LIKE="rhel centos fedora"', none)).toBe("dnf");
    expect(detectPackageManager("linux", "ID=arch", none)).toBe("pacman");
    expect(detectPackageManager("linux", "ID=alpine", none)).toBe("apk");
    expect(detectPackageManager("linux", 'ID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"', none)).toBe(
      "zypper",
    );
    expect(detectPackageManager("linux", "ID=nixos", (c) => c === "zypper")).toBe("zypper");
    expect(detectPackageManager("linux", "ID=nixos", none)).toBeUndefined();
  });
});

describe("preflight", () => {
  it("one SM_DEPENDENCY_MISSING naming every missing piece and the fix", () => {
    process.env.PATH = "/nonexistent";
    process.env.SUPERMACHINE_AGENT = "/nonexistent/sm-agent";
    let err: unknown;
    try {
      preflight({ arch: "x86_64", kernelDir: "/nonexistent/kernel" });
    } catch (e) {
      err = e;
    }
    expect(codeOf(err)).toBe("SM_DEPENDENCY_MISSING");
    const e = err as Error & { details: { missing: string[]; fix: string } };
    expect(e.details.missing).toContain("qemu");
    expect(e.details.missing).toContain("kernel");
    expect(e.details.fix).toBe("npx supermachine setup");
    expect(e.message).toContain("qemu-system-x86_64 is not on PATH");
    expect(e.message).toContain("npx supermachine setup");
    expect(e.message).not.toContain("npm run setup");
  });

  it("reports the kernel from an explicit kernelDir as such", () => {
    const c = checkDependencies({ arch: "x86_64", kernelDir: "/nonexistent/k" }).find(
      (x) => x.name === "kernel",
    );
    expect(c?.ok).toBe(false);
    expect(c?.fix).toContain("npm install @supermachine/guest-x86_64");
  });
});
