import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { validateBuildOptions, validateExecOptions, validatePoolOptions } from "./validate";

/** Temp dirs the cases make; removed at the end. */
const temps: string[] = [];
const tempDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
};
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect((err as { code?: string }).code).toBe("SM_INVALID_OPTIONS");
    return (err as { details?: { field?: string } }).details?.field;
  }
  throw new Error("expected SM_INVALID_OPTIONS");
}

describe("validateBuildOptions", () => {
  it("applies the documented defaults (README BuildOptions)", () => {
    const o = validateBuildOptions({ ref: "busybox:latest" });
    expect(o).toMatchObject({
      memoryMib: 256,
      vcpus: 1,
      pullPolicy: "missing",
      guestPort: 80,
      env: {},
      listenerRequired: false,
      warmupTag: "default",
      source: { type: "registry" },
      network: "public",
      accel: "auto",
    });
    expect(o.volumes).toEqual([]);
  });

  it("names the offending field", () => {
    expect(fieldOf(() => validateBuildOptions({}))).toBe("ref");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", memoryMib: "256" }))).toBe("memoryMib");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", memoryMib: -1 }))).toBe("memoryMib");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", vcpus: 1.5 }))).toBe("vcpus");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", colour: "red" }))).toBe("colour");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", pullPolicy: "sometimes" }))).toBe("pullPolicy");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", cmd: ["sh", 1] }))).toBe("cmd[1]");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", env: { A: 1 } }))).toBe("env.A");
    expect(
      fieldOf(() =>
        validateBuildOptions({ ref: "a", volumes: [{ hostPath: "/x", guestPath: "/d", sizeMib: -5 }] }),
      ),
    ).toBe("volumes[0].sizeMib");
    expect(
      fieldOf(() => validateBuildOptions({ ref: "a", volumes: [{ hostPath: "/x", guestPath: "d" }] })),
    ).toBe("volumes[0].guestPath");
    expect(
      fieldOf(() =>
        validateBuildOptions({ ref: "a", volumes: [{ hostPath: "/x", guestPath: "/d", format: "xfs" }] }),
      ),
    ).toBe("volumes[0].format");
    expect(
      fieldOf(() =>
        validateBuildOptions({ ref: "a", volumes: [{ hostPath: "/x", guestPath: "/d", readOnly: "yes" }] }),
      ),
    ).toBe("volumes[0].readOnly");
    expect(
      fieldOf(() =>
        validateBuildOptions({ ref: "a", volumes: [{ hostPath: "/x", guestPath: "/d", mount: 1 }] }),
      ),
    ).toBe("volumes[0].mount");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", memoryMib: 512, maxMemoryMib: 256 }))).toBe(
      "maxMemoryMib",
    );
    expect(fieldOf(() => validateBuildOptions({ ref: "a", vcpus: 2, maxVcpus: 1 }))).toBe("maxVcpus");
    expect(
      fieldOf(() =>
        validateBuildOptions({ ref: "a", extraFiles: [{ hostPath: "/x", guestPath: "/y", mode: 1 }] }),
      ),
    ).toBe("extraFiles[0].mode");
    expect(
      fieldOf(() =>
        validateBuildOptions({ ref: "a", mounts: [{ hostPath: "/x", guestTag: "t".repeat(36) }] }),
      ),
    ).toBe("mounts[0].guestTag");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", source: { type: "oci-layout" } }))).toBe(
      "source.path",
    );
    expect(fieldOf(() => validateBuildOptions({ ref: "a", source: { type: "ftp" } }))).toBe("source.type");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", warmup: "yes" }))).toBe("warmup");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", network: "bridge" }))).toBe("network");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", guestPort: 70000 }))).toBe("guestPort");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", name: "../up" }))).toBe("name");
    expect(fieldOf(() => validateBuildOptions({ ref: "a", extraKernelArgs: ["a b"] }))).toBe(
      "extraKernelArgs[0]",
    );
    expect(fieldOf(() => validateBuildOptions(null))).toBe("options");
  });

  it("accepts every documented source", () => {
    expect(validateBuildOptions({ ref: "x", source: { type: "archive", path: "/t.tar" } }).source).toEqual({
      type: "archive",
      path: "/t.tar",
    });
    expect(validateBuildOptions({ ref: "x", source: { type: "oci-layout", path: "/l" } }).source.type).toBe(
      "oci-layout",
    );
  });

  it("defaults volume size and mount symlink policy", () => {
    const o = validateBuildOptions({
      ref: "x",
      volumes: [{ hostPath: "/v.img", guestPath: "/data" }],
      mounts: [{ hostPath: tmpdir(), guestTag: "src" }],
    });
    expect(o.volumes[0]).toEqual({
      hostPath: "/v.img",
      guestPath: "/data",
      sizeMib: 1024,
      format: "none",
      mount: false,
      readOnly: false,
    });
    expect(o.mounts[0]?.symlinks).toBe("opaque");
    expect([o.maxMemoryMib, o.maxVcpus]).toEqual([256, 1]);
  });

  it("rejects unusable shares with SM_MOUNT_INVALID naming the field", () => {
    const codeField = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        const e = err as { code?: string; details?: { field?: string } };
        return `${e.code} ${e.details?.field}`;
      }
      return "no error";
    };
    const file = join(tempDir("sm-mnt-"), "f");
    writeFileSync(file, "x");
    expect(
      codeField(() =>
        validateBuildOptions({ ref: "a", mounts: [{ hostPath: "/nonexistent/x", guestTag: "a" }] }),
      ),
    ).toBe("SM_MOUNT_INVALID mounts[0].hostPath");
    expect(
      codeField(() => validateBuildOptions({ ref: "a", mounts: [{ hostPath: file, guestTag: "a" }] })),
    ).toBe("SM_MOUNT_INVALID mounts[0].hostPath");
    expect(
      codeField(() =>
        validateBuildOptions({
          ref: "a",
          mounts: [
            { hostPath: tmpdir(), guestTag: "a" },
            { hostPath: tmpdir(), guestTag: "a" },
          ],
        }),
      ),
    ).toBe("SM_INVALID_OPTIONS mounts[1].guestTag");
    expect(
      codeField(() => validateBuildOptions({ ref: "a", mounts: [{ hostPath: tmpdir(), guestTag: "a/b" }] })),
    ).toBe("SM_INVALID_OPTIONS mounts[0].guestTag");
    expect(
      codeField(() =>
        validateBuildOptions({ ref: "a", mounts: [{ hostPath: tmpdir(), guestTag: "a", guestPath: "rel" }] }),
      ),
    ).toBe("SM_INVALID_OPTIONS mounts[0].guestPath");
  });
});

describe("validatePoolOptions", () => {
  it("defaults", () => {
    expect(validatePoolOptions(undefined)).toEqual({
      min: 1,
      max: 1,
      acquireTimeoutMs: 60000,
      idleTimeoutMs: undefined,
      restoreOnRelease: true,
      memoryMib: undefined,
      vcpus: undefined,
      restoreTimeoutMs: 30000,
    });
    expect(validatePoolOptions({ min: 3 }).max).toBe(3);
  });
  it("rejects bad values", () => {
    expect(fieldOf(() => validatePoolOptions({ min: 3, max: 2 }))).toBe("min");
    expect(fieldOf(() => validatePoolOptions({ max: 0 }))).toBe("max");
    expect(fieldOf(() => validatePoolOptions({ acquireTimeoutMs: -1 }))).toBe("acquireTimeoutMs");
    expect(fieldOf(() => validatePoolOptions({ restoreOnRelease: "yes" }))).toBe("restoreOnRelease");
    expect(fieldOf(() => validatePoolOptions({ maxSize: 3 }))).toBe("maxSize");
  });
});

describe("validateExecOptions", () => {
  it("defaults and merges staged files", () => {
    const o = validateExecOptions({
      argv: ["cat", "/a"],
      stageFiles: { "/a": "hi" },
      stageFilesMode: [{ guestPath: "/b.sh", bytes: Buffer.from("x"), mode: 0o755 }],
    });
    expect(o).toMatchObject({ timeoutMs: 60000, cwd: "/", tty: false, cols: 80, rows: 24, chain: null });
    expect(o.stage).toEqual([
      { path: "/a", data: Buffer.from("hi"), mode: 0o644 },
      { path: "/b.sh", data: Buffer.from("x"), mode: 0o755 },
    ]);
  });
  it("durations longer than a Node timer can wait (~24.8 days) are refused, not fired at once", () => {
    expect(validateExecOptions({ argv: ["true"], timeoutMs: 2 ** 31 - 1 }).timeoutMs).toBe(2 ** 31 - 1);
    expect(fieldOf(() => validateExecOptions({ argv: ["true"], timeoutMs: 2 ** 31 }))).toBe("timeoutMs");
    for (const f of ["acquireTimeoutMs", "idleTimeoutMs", "restoreTimeoutMs"]) {
      expect(fieldOf(() => validatePoolOptions({ [f]: 3e9 }))).toBe(f);
    }
    expect(
      validatePoolOptions({ acquireTimeoutMs: 2 ** 31 - 1, restoreTimeoutMs: 86_400_000 }),
    ).toMatchObject({
      acquireTimeoutMs: 2 ** 31 - 1,
      restoreTimeoutMs: 86_400_000,
    });
  });
  it("staged files above 4 MiB in total: SM_FILE_TOO_LARGE before anything is sent", () => {
    const half = Buffer.alloc(2 << 20);
    expect(
      validateExecOptions({ argv: ["true"], stageFiles: { "/a": half, "/b": half } }).stage,
    ).toHaveLength(2);
    expect(() =>
      validateExecOptions({
        argv: ["true"],
        stageFiles: { "/a": half, "/b": half },
        stageFilesMode: [{ guestPath: "/c", bytes: "one byte too many" }],
      }),
    ).toThrow(
      expect.objectContaining({
        code: "SM_FILE_TOO_LARGE",
        details: { field: "stageFiles", bytes: (4 << 20) + 17 },
      }),
    );
  });
  it("rejects bad values", () => {
    expect(fieldOf(() => validateExecOptions({}))).toBe("argv");
    expect(fieldOf(() => validateExecOptions({ argv: [] }))).toBe("argv");
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], timeoutMs: -1 }))).toBe("timeoutMs");
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], winsize: { cols: -1, rows: 2 } }))).toBe(
      "winsize.cols",
    );
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], stageFiles: { rel: "x" } }))).toBe(
      'stageFiles["rel"]',
    );
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], chain: {} }))).toBe("chain.argv");
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], stdin: "x" }))).toBe("stdin");
  });
});

describe("the original's looser inputs (null for an optional field, as its declarations allow)", () => {
  it("null in an optional field means the field is left out", () => {
    expect(validatePoolOptions(null)).toEqual(validatePoolOptions(undefined));
    expect(validatePoolOptions({ min: null, idleTimeoutMs: null })).toEqual(validatePoolOptions({}));
    const b = validateBuildOptions({ ref: "a", name: null, memoryMib: null, pullPolicy: null, warmup: null });
    expect(b).toMatchObject({ name: undefined, memoryMib: 256, pullPolicy: "missing", warmup: undefined });
    const e = validateExecOptions({
      argv: ["x"],
      env: null,
      cwd: null,
      chain: null,
      winsize: null,
      stageFiles: null,
      stageFilesMode: [{ guestPath: "/f", bytes: Buffer.from("x"), mode: null }],
    });
    expect(e).toMatchObject({ cwd: "/", chain: null, cols: 80, rows: 24, env: {} });
    expect(e.stage).toEqual([{ path: "/f", data: Buffer.from("x"), mode: 0o644 }]);
    // required fields stay required
    expect(fieldOf(() => validateExecOptions({ argv: null }))).toBe("argv");
    expect(fieldOf(() => validateBuildOptions({ ref: null }))).toBe("ref");
    expect(fieldOf(() => validateExecOptions({ argv: ["x", null] }))).toBe("argv[1]");
  });

  it("string-typed enums are still checked at run time", () => {
    const policy: string = "sometimes";
    expect(fieldOf(() => validateBuildOptions({ ref: "a", pullPolicy: policy }))).toBe("pullPolicy");
    const dir = tempDir("sm-val-");
    const symlinks: string = "maybe";
    expect(
      fieldOf(() => validateBuildOptions({ ref: "a", mounts: [{ hostPath: dir, guestTag: "t", symlinks }] })),
    ).toBe("mounts[0].symlinks");
    expect(
      validateBuildOptions({ ref: "a", mounts: [{ hostPath: dir, guestTag: "t", symlinks: "deny" }] })
        .mounts[0]?.symlinks,
    ).toBe("deny");
  });

  it("chain takes the original's argv array, and the richer object", () => {
    expect(validateExecOptions({ argv: ["x"], chain: ["echo", "ok"] }).chain).toEqual({
      argv: ["echo", "ok"],
    });
    expect(validateExecOptions({ argv: ["x"], chain: { argv: ["y"], cwd: "/tmp" } }).chain).toEqual({
      argv: ["y"],
      cwd: "/tmp",
    });
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], chain: [] }))).toBe("chain");
    expect(fieldOf(() => validateExecOptions({ argv: ["x"], chain: ["echo", 1] }))).toBe("chain[1]");
  });

  it("winsize 0/0 lets the agent pick 80x24", () => {
    expect(validateExecOptions({ argv: ["x"], tty: true, winsize: { cols: 0, rows: 0 } })).toMatchObject({
      cols: 80,
      rows: 24,
    });
    expect(validateExecOptions({ argv: ["x"], winsize: { cols: 120, rows: 40 } })).toMatchObject({
      cols: 120,
      rows: 40,
    });
  });
});
