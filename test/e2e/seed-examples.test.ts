import { mkdir, mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures } from "../../scripts/lib/fixtures.mjs";
import { EXIT_AFTER_LAST_LINE_MS, runSeedProgram, type SeedRun } from "./_seed-run";
import { fixtureRefs, sharedSnapshotsDir } from "./_shared";

let busyboxRef: string;
let nodeRef: string;
let work: string;

beforeAll(async () => {
  sharedSnapshotsDir();
  busyboxRef = (await fixtureRefs()).busybox;
  const f = (await fixtures()) as {
    images: Record<string, { ref: string; npmCache?: { packages: string[] } }>;
  };
  nodeRef = f.images.node!.ref;
  // the package example 07 installs must be the one the image's npm cache holds
  expect(f.images.node!.npmCache?.packages).toContain("sm-greet@1.0.0");
  work = await mkdtemp(join(tmpdir(), "sm-seed-examples-"));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Run test/e2e/seed/<file> in a child node with `cwd` as its current directory. */
function runProgram(file: string, cwd: string, ref: string, timeoutMs: number): Promise<SeedRun> {
  return runSeedProgram(file, { cwd, env: { SM_SEED_REF: ref }, timeoutMs });
}

function report(name: string, r: SeedRun): void {
  console.log(`${name}: ${(r.totalMs / 1000).toFixed(1)} s, last line → exit ${r.lastLineToExitMs} ms`);
}

describe("the original's examples 06 and 07 run verbatim and exit by themselves", () => {
  it("06: a host directory shared by tag, mounted with `mount -t virtiofs` in the guest; the host sees the guest's file", async () => {
    const cwd = join(work, "ex06");
    await mkdir(cwd);
    const r = await runProgram("example06.mjs", cwd, busyboxRef, 300_000);
    report("example 06", r);
    expect(r.stderr).not.toMatch(/Error|No such device/);
    // `ls /work` in the guest lists the host's file (out.txt is written after the ls)
    expect(r.lines).toEqual(["from-host.txt", "host sees out.txt: from-guest"]);
    expect(r.code).toBe(0);
    expect(r.lastLineToExitMs).toBeLessThan(EXIT_AFTER_LAST_LINE_MS);
    // the guest's write landed in the host directory, owned by the host user running the library
    const outTxt = join(cwd, "workspace", "out.txt");
    expect(await readFile(outTxt, "utf8")).toBe("from-guest\n");
    expect((await stat(outTxt)).uid).toBe(process.getuid?.());
  }, 330_000);

  it("07: the warmup formats /dev/vdb and npm-installs into it; every VM finds the package; the host file keeps it for the next program", async () => {
    const cwd = join(work, "ex07");
    await mkdir(cwd);
    const img = join(cwd, "data.img");

    const first = await runProgram("example07.mjs", cwd, nodeRef, 480_000);
    report("example 07, first run (bake: mkfs + npm install)", first);
    expect(first.stderr).not.toMatch(/Error/);
    expect(first.lines).toEqual([
      "warmup: formatting /dev/vdb and installing into /data",
      "hello, from /data 1.0.0",
    ]);
    expect(first.code).toBe(0);
    expect(first.lastLineToExitMs).toBeLessThan(EXIT_AFTER_LAST_LINE_MS);

    // The host file: sizeMib, sparse, an ext4 filesystem made by the guest, holding what npm installed.
    const st = await stat(img);
    expect(st.size).toBe(256 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(st.size);
    const fh = await open(img, "r");
    try {
      const sb = Buffer.alloc(2);
      await fh.read(sb, 0, 2, 1024 + 0x38); // ext2/3/4 superblock magic
      expect(sb.readUInt16LE(0)).toBe(0xef53);
    } finally {
      await fh.close();
    }
    const bytes = await readFile(img);
    expect(bytes.includes('exports.greet = (who) => "hello, " + who;')).toBe(true); // sm-greet/index.js
    expect(bytes.includes('"sm-greet": "^1.0.0"')).toBe(true); // /data/package.json after npm install

    // A second program: the snapshot is reused (the warmup does not run again) and the package comes
    // from the volume file the first program left.
    const second = await runProgram("example07.mjs", cwd, nodeRef, 300_000);
    report("example 07, second run (snapshot reused)", second);
    expect(second.stderr).not.toMatch(/Error/);
    expect(second.lines).toEqual(["hello, from /data 1.0.0"]);
    expect(second.code).toBe(0);
    expect(second.lastLineToExitMs).toBeLessThan(EXIT_AFTER_LAST_LINE_MS);
  }, 780_000);
});
