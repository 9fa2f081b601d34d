import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readSnapshotManifest, sparseCopy } from "./snapshot-files";

const root = mkdtempSync(join(tmpdir(), "sm-snapfiles-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function snapshotDir(): string {
  const d = join(root, `s${n++}`);
  mkdirSync(d);
  const state = Buffer.alloc(100);
  state.writeUInt32BE(0x5145564d, 0);
  writeFileSync(join(d, "state"), state);
  writeFileSync(join(d, "memory"), Buffer.alloc(32 * 1024 * 1024));
  writeFileSync(
    join(d, "vm.json"),
    JSON.stringify({
      format: 1,
      backend: "kvm",
      arch: "x86_64",
      machine: "microvm",
      accel: "tcg",
      memoryMib: 32,
      vcpus: 1,
      kernelPath: "/k",
      initrdPath: "/i",
      cmdline: "",
      devices: [{ kind: "agent-serial" }],
      ramInState: false,
      createdAt: "now",
      stateBytes: 100,
    }),
  );
  return d;
}

describe("readSnapshotManifest", () => {
  it("accepts a complete snapshot, given as the dir or as its state file", () => {
    const d = snapshotDir();
    expect(readSnapshotManifest(d).manifest.memoryMib).toBe(32);
    expect(readSnapshotManifest(join(d, "state")).files.dir).toBe(d);
  });

  const invalid = (d: string, file: string, re: RegExp) =>
    expect(() => readSnapshotManifest(d)).toThrow(
      expect.objectContaining({
        code: "SM_SNAPSHOT_INVALID",
        details: { file },
        message: expect.stringMatching(re),
      }),
    );

  it("names the missing or corrupt file", () => {
    invalid(join(root, "nope"), join(root, "nope"), /missing snapshot/);
    let d = snapshotDir();
    rmSync(join(d, "vm.json"));
    invalid(d, join(d, "vm.json"), /is missing/);
    d = snapshotDir();
    writeFileSync(join(d, "vm.json"), "{ not json");
    invalid(d, join(d, "vm.json"), /not valid JSON/);
    d = snapshotDir();
    rmSync(join(d, "state"));
    invalid(d, join(d, "state"), /is missing/);
    d = snapshotDir();
    writeFileSync(join(d, "state"), Buffer.alloc(100));
    invalid(d, join(d, "state"), /bad magic/);
    d = snapshotDir();
    const st = Buffer.alloc(60);
    st.writeUInt32BE(0x5145564d, 0);
    writeFileSync(join(d, "state"), st);
    invalid(d, join(d, "state"), /truncated or replaced/);
    d = snapshotDir();
    writeFileSync(join(d, "memory"), Buffer.alloc(4096));
    invalid(d, join(d, "memory"), /expected 32 MiB/);
  });
});

describe("sparseCopy", () => {
  it("copies content exactly while leaving zero pages as holes", async () => {
    const src = join(root, "mem-src");
    const size = 16 * 1024 * 1024;
    const buf = Buffer.alloc(size);
    buf.fill(7, 4096, 8192);
    buf.write("tail", size - 10);
    writeFileSync(src, buf);
    const dst = join(root, "mem-dst");
    const written = await sparseCopy(src, dst);
    expect(written).toBe(8192);
    expect(readFileSync(dst).equals(buf)).toBe(true);
    expect(statSync(dst).blocks * 512).toBeLessThan(1024 * 1024);
  });
});
