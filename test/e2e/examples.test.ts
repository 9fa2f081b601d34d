/**
 * Every example runs against the real stack (registry on 127.0.0.1, QEMU TCG, real kernel and agent)
 * and prints what it promises.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { fixtureRefs, sharedSnapshotsDir } from "./_shared";

let logs: string[];
const log = (...args: unknown[]) => {
  logs.push(args.map(String).join(" "));
};

beforeAll(async () => {
  sharedSnapshotsDir();
  await fixtureRefs();
});

async function run(example: string, extra: Record<string, unknown> = {}): Promise<string[]> {
  logs = [];
  const mod = (await import(`../../examples/${example}.mjs`)) as { main: (o: object) => Promise<void> };
  await mod.main({ log, ...extra });
  return logs;
}

describe("examples", () => {
  it("hello prints the greeting and the guest kernel", async () => {
    const out = await run("hello");
    expect(out[0]).toBe("hello from a microVM");
    expect(out[1]).toMatch(/^kernel: Linux 6\.\d+.* \(exit 0\)$/);
  });

  it("pool runs 8 tasks on clean VMs", async () => {
    const out = await run("pool");
    expect(out[0]).toBe("tasks: 8, clean: 8");
    expect(out[1]).toMatch(/"min":2,"max":4/);
  });

  it("snapshot-then-restore sees the state captured mid-flight", async () => {
    const out = await run("snapshot-then-restore");
    expect(out[0]).toMatch(/^snapshot: /);
    expect(out[1]).toBe("restored VM reads: captured mid-flight");
  });

  it("spawn-streaming streams lines and round-trips stdin", async () => {
    const out = await run("spawn-streaming");
    expect(out.filter((l) => l.startsWith("streamed: "))).toEqual([
      "streamed: tick 1",
      "streamed: tick 2",
      "streamed: tick 3",
    ]);
    expect(out).toContain("ticker exit: 0");
    expect(out).toContain("cat says: echoed through cat");
    expect(out).toContain("cat exit: 0");
  });

  it("expose-tcp reaches two different listeners through two forwarders", async () => {
    const out = await run("expose-tcp");
    expect(out).toHaveLength(2);
    expect(out[0]).toMatch(/^port 80 via 127\.0\.0\.1:\d+: HTTP 200 /);
    expect(out[1]).toMatch(/^port 8080 via 127\.0\.0\.1:\d+: HTTP 200 /);
    const body = (l: string) => l.replace(/^.*HTTP 200 /, "");
    expect(body(out[0]!)).not.toBe(body(out[1]!));
  });

  it("volume contents persist across VMs (and across pools)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sm-core-vol-"));
    try {
      const volumePath = join(dir, "data.img");
      const out = await run("volume", { volumePath });
      expect(out[0]).toBe("VM 1: /data/visits has 1 line(s)");
      expect(out[1]).toBe("VM 2: /data/visits has 2 line(s)");
      const st = await stat(volumePath);
      expect(st.size).toBe(64 * 1024 * 1024);
      expect(st.blocks * 512).toBeLessThan(st.size); // sparse
      const again = await run("volume", { volumePath });
      expect(again[0]).toBe("VM 1: /data/visits has 3 line(s)");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("npm-workspace: guest workspace symlinks are real symlinks on the host; edits cross both ways", async () => {
    const projectDir = join(tmpdir(), `sm-core-ws-${process.ppid}`);
    try {
      const out = await run("npm-workspace", { projectDir });
      expect(out).toEqual([
        'guest reads node_modules/pkg-a/index.js: module.exports = "pkg-a v1";',
        "host sees node_modules/pkg-a -> ../packages/pkg-a",
        'after a host edit the guest reads: module.exports = "pkg-b v2";',
        "host reads build.log: built in the guest",
      ]);
    } finally {
      await rm(projectDir, { recursive: true, force: true });
    }
  });
});
