import { homedir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { cacheRoot, hostArch } from "./paths";
import { MAX_TIMER_MS } from "./timers";

describe("cacheRoot", () => {
  it("is $XDG_CACHE_HOME/supermachine, else ~/.cache/supermachine (an empty XDG_CACHE_HOME counts as unset)", () => {
    expect(cacheRoot({ XDG_CACHE_HOME: "/tmp/xdg" })).toBe("/tmp/xdg/supermachine");
    expect(cacheRoot({})).toBe(join(homedir(), ".cache", "supermachine"));
    expect(cacheRoot({ XDG_CACHE_HOME: "" })).toBe(join(homedir(), ".cache", "supermachine"));
  });
  it("reads process.env by default", () => {
    vi.stubEnv("XDG_CACHE_HOME", "/tmp/xdg-default");
    try {
      expect(cacheRoot()).toBe("/tmp/xdg-default/supermachine");
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe("hostArch", () => {
  const arch = process.arch;
  afterEach(() => Object.defineProperty(process, "arch", { value: arch }));
  for (const [node, ours] of [
    ["x64", "x86_64"],
    ["arm64", "aarch64"],
    ["riscv64", undefined],
  ] as const) {
    it(`process.arch ${node} → ${ours}`, () => {
      Object.defineProperty(process, "arch", { value: node });
      expect(hostArch()).toBe(ours);
    });
  }
});

describe("MAX_TIMER_MS", () => {
  it("is 2^31−1, the longest delay a Node timer keeps (one more fires after 1 ms)", async () => {
    expect(MAX_TIMER_MS).toBe(2 ** 31 - 1);
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    try {
      const fired = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(true), MAX_TIMER_MS + 1);
        setTimeout(() => {
          clearTimeout(t);
          resolve(false);
        }, 50);
      });
      expect(fired).toBe(true);
    } finally {
      warn.mockRestore();
    }
  });
});
