// The README's example is code users copy: run it as written (the import resolves to this package's source).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it, vi } from "vitest";

const dir = mkdtempSync(join(tmpdir(), "sm-pool-readme-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("the README example runs and prints the documented stats", async () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const code = /## Example\n\n```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  const file = join(dir, "example.mjs");
  writeFileSync(file, code!);
  const log = vi.spyOn(console, "log").mockImplementation(() => {});
  try {
    await import(/* @vite-ignore */ file);
    expect(log).toHaveBeenCalledWith("got", 1, {
      alive: 1,
      inUse: 1,
      idle: 0,
      waiting: 0,
      creating: 0,
      min: 1,
      max: 4,
    });
  } finally {
    log.mockRestore();
  }
});
