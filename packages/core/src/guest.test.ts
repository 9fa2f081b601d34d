import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { findGuestPackage, kernelDirFor, usableGuestPackage } from "./guest";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A project dir with node_modules/@supermachine/guest-x86_64 installed (bundle files optional). */
function project(withBundle: boolean): string {
  const root = mkdtempSync(join(tmpdir(), "sm-guest-"));
  dirs.push(root);
  const pkg = join(root, "node_modules", "@supermachine", "guest-x86_64");
  mkdirSync(join(pkg, "bundle", "kernel"), { recursive: true });
  writeFileSync(
    join(pkg, "package.json"),
    JSON.stringify({
      name: "@supermachine/guest-x86_64",
      version: "1.2.3",
      exports: { "./package.json": "./package.json" },
    }),
  );
  if (withBundle) {
    for (const f of ["manifest.json", "sm-agent", "kernel/bundle.json", "kernel/vmlinuz"])
      writeFileSync(join(pkg, "bundle", f), "{}");
  }
  return root;
}

describe("guest package resolution", () => {
  it("finds the installed package through node resolution from the importing file", () => {
    const root = project(true);
    const p = findGuestPackage("x86_64", join(root, "app.js"));
    expect(p?.version).toBe("1.2.3");
    expect(p?.missing).toEqual([]);
    expect(p?.kernelDir).toBe(join(root, "node_modules/@supermachine/guest-x86_64/bundle/kernel"));
    expect(usableGuestPackage("x86_64", join(root, "app.js"))?.agentPath).toMatch(/bundle\/sm-agent$/);
  });

  it("reports the missing bundle files of a package installed without them", () => {
    const root = project(false);
    const p = findGuestPackage("x86_64", join(root, "app.js"));
    expect(p?.missing.map((m) => m.slice(p.root.length))).toEqual([
      "/bundle/manifest.json",
      "/bundle/sm-agent",
      "/bundle/kernel/bundle.json",
      "/bundle/kernel/vmlinuz",
    ]);
    expect(usableGuestPackage("x86_64", join(root, "app.js"))).toBeUndefined();
  });

  it("is undefined when the package is not installed", () => {
    const root = project(true);
    expect(findGuestPackage("aarch64", join(root, "app.js"))).toBeUndefined();
  });

  it("explicit kernelDir wins; SUPERMACHINE_KERNEL_DIR defers to the hypervisor's own lookup", () => {
    expect(kernelDirFor("/k", "x86_64")).toBe("/k");
    const old = process.env.SUPERMACHINE_KERNEL_DIR;
    process.env.SUPERMACHINE_KERNEL_DIR = "/env/k";
    try {
      expect(kernelDirFor(undefined, "x86_64")).toBeUndefined();
    } finally {
      if (old === undefined) delete process.env.SUPERMACHINE_KERNEL_DIR;
      else process.env.SUPERMACHINE_KERNEL_DIR = old;
    }
  });
});
