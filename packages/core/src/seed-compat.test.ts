/**
 * Programs written against the ORIGINAL @supermachine/core's published declarations
 * (test/seed/original/index.d.ts, a rendering of those declarations) compile unchanged against our
 * published types (dist/index.d.ts: run the build first, as `npm test` does). tsc runs on
 * test/seed/tsconfig.*.json:
 * - original: program.ts against the original's declarations — it is a valid original program;
 * - dist: program.ts and cross.ts (our values where the original's types are expected, and the
 *   reverse for inputs) against ours with zero errors, and wrong.ts with an error on each marked line.
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SEED = fileURLToPath(new URL("../test/seed/", import.meta.url));
const DIST_DTS = fileURLToPath(new URL("../dist/index.d.ts", import.meta.url));
const TSC = join(dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc");

interface Diagnostic {
  file: string;
  line: number;
  code: string;
  text: string;
}

function tsc(config: string): Promise<Diagnostic[]> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [TSC, "-p", join(SEED, config), "--pretty", "false"],
      { maxBuffer: 16 << 20 },
      (err, stdout) => {
        // tsc exits 2 when it reports errors; anything without diagnostics is a failure to run
        const diags = [...stdout.matchAll(/^(.+?)\((\d+),\d+\): error (TS\d+): (.*)$/gm)].map((m) => ({
          file: (m[1] as string).split("/").pop() as string,
          line: Number(m[2]),
          code: m[3] as string,
          text: m[4] as string,
        }));
        if (err && diags.length === 0) reject(new Error(`tsc -p ${config} failed: ${stdout}${err.message}`));
        else resolve(diags);
      },
    );
  });
}

/** Line numbers of wrong.ts marked `// WRONG`. */
function wrongLines(): number[] {
  return readFileSync(join(SEED, "wrong.ts"), "utf8")
    .split("\n")
    .flatMap((l, i) => (l.includes("// WRONG") ? [i + 1] : []));
}

describe("programs typed with the original's declarations", () => {
  it("compile unchanged against our published types; a wrong program does not", async () => {
    expect(existsSync(DIST_DTS), `${DIST_DTS} is missing: run \`npx lerna run build\` first`).toBe(true);
    const [original, ours] = await Promise.all([tsc("tsconfig.original.json"), tsc("tsconfig.dist.json")]);
    // the program is a valid program for the original (so the check below means something)
    expect(original).toEqual([]);
    // ... and for ours: zero errors outside wrong.ts
    expect(ours.filter((d) => d.file !== "wrong.ts")).toEqual([]);
    // wrong.ts fails, on each marked line and only there
    const lines = wrongLines();
    expect(lines.length).toBe(7);
    expect([...new Set(ours.map((d) => d.line))].sort((a, b) => a - b)).toEqual(lines);
    expect(ours.find((d) => d.code === "TS2673")?.text).toMatch(/Constructor of class 'Pool' is private/);
  }, 300_000);
});
