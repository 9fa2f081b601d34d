// The README's example is code users copy: run it as written (the import resolves to this package's source).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it, vi } from "vitest";

const dir = mkdtempSync(join(tmpdir(), "sm-base-readme-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("the README example runs and prints what the README says", async () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const code = /## Example\n\n```js\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  const file = join(dir, "example.mjs");
  writeFileSync(file, code!);
  const log = vi.spyOn(console, "log").mockImplementation(() => {});
  try {
    await import(/* @vite-ignore */ file);
    expect(log.mock.calls).toEqual([
      [true, false, "SM_WIDGET_BROKEN", "gear"],
      ["/tmp/cache/supermachine", "string", 2147483647],
    ]);
    expect(readme).toContain(
      "prints `true false SM_WIDGET_BROKEN gear`, then `/tmp/cache/supermachine string 2147483647`",
    );
  } finally {
    log.mockRestore();
  }
});
