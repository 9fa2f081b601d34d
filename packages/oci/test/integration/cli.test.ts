import { execFile, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OciStore, push, writeLayout } from "../../src/index";
import { buildImage } from "../../src/test-utils";
import { skopeo, startRegistry, type TestRegistry } from "./helpers";

const run = promisify(execFile);
const PKG = join(__dirname, "../..");
let work: string;
let cli: string;
let binDir: string;
let reg: TestRegistry;

async function oci(args: string[]) {
  try {
    const r = await run(process.execPath, [cli, ...args, "--store", join(work, "store")], {
      encoding: "utf8",
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "sm-oci-cli-"));
  mkdirSync(join(PKG, "node_modules", ".cache"), { recursive: true });
  // Bundle the CLI from the current sources (no type declarations: fast), inside the package so
  // its dependencies resolve; node_modules/.cache is git-ignored.
  binDir = mkdtempSync(join(PKG, "node_modules", ".cache", "sm-oci-cli-"));
  execFileSync(
    join(PKG, "../../node_modules/.bin/tsup"),
    ["src/cli.ts", "--format", "esm", "--target", "node20", "--out-dir", binDir, "--silent"],
    { cwd: PKG, stdio: "ignore" },
  );
  cli = join(binDir, "cli.js");
  reg = await startRegistry();
});

afterAll(async () => {
  await reg?.stop();
  rmSync(work, { recursive: true, force: true });
  if (binDir) rmSync(binDir, { recursive: true, force: true });
});

describe("supermachine-oci CLI", () => {
  it("push LAYOUT REF, inspect REF, pull REF --layout DIR, copy SRC DST", async () => {
    const store = new OciStore(join(work, "build"));
    const image = await buildImage(store, "local/cli", {
      layers: [[{ name: "hello.txt", data: "cli\n" }]],
      config: { Entrypoint: ["/bin/echo"], Cmd: ["hi"], ExposedPorts: { "80/tcp": {} } },
    });
    const layout = join(work, "layout");
    await writeLayout(image, layout, { tag: "v1" });

    const pushed = await oci(["push", `${layout}:v1`, `${reg.host}/cli/app:v1`]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(pushed.stdout).toContain(image.digest);
    // Not a TTY here: plain progress lines, one per blob.
    expect(pushed.stderr).toMatch(/layer [0-9a-f]{12} uploaded/);

    const ins = await oci(["inspect", `${reg.host}/cli/app:v1`]);
    expect(ins.code, ins.stderr).toBe(0);
    const doc = JSON.parse(ins.stdout);
    expect(doc).toMatchObject({
      digest: image.digest,
      platform: "linux/amd64",
      config: { entrypoint: ["/bin/echo"], cmd: ["hi"], exposedPorts: [{ port: 80, protocol: "tcp" }] },
    });

    const out = join(work, "pulled");
    const pulled = await oci(["pull", `${reg.host}/cli/app:v1`, "--layout", out]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(await skopeo(["inspect", `oci:${out}:latest`])).Digest).toBe(image.digest);

    const copied = await oci(["copy", `docker://${reg.host}/cli/app:v1`, `docker://${reg.host}/cli/copy:v2`]);
    expect(copied.code, copied.stderr).toBe(0);
    expect(
      JSON.parse(await skopeo(["inspect", "--tls-verify=false", `docker://${reg.host}/cli/copy:v2`])).Digest,
    ).toBe(image.digest);
  });

  it("two processes pulling the same image into one store both succeed and leave it consistent", async () => {
    const store = new OciStore(join(work, "build2"));
    const image = await buildImage(store, "local/race", {
      layers: [[{ name: "big", data: randomBytes(6 << 20) }], [{ name: "small", data: "s" }]],
      compression: "none",
    });
    await push(image, `${reg.host}/cli/race:1`);
    const shared = join(work, "shared-store");
    const [a, b] = await Promise.all([
      run(process.execPath, [cli, "pull", `${reg.host}/cli/race:1`, "--store", shared, "--quiet"], {
        encoding: "utf8",
      }),
      run(process.execPath, [cli, "pull", `${reg.host}/cli/race:1`, "--store", shared, "--quiet"], {
        encoding: "utf8",
      }),
    ]);
    expect(a.stdout).toContain(image.digest);
    expect(b.stdout).toContain(image.digest);
    expect(readdirSync(join(shared, "tmp"))).toEqual([]);
    const blobs = readdirSync(join(shared, "blobs", "sha256"));
    expect(blobs.sort()).toEqual(
      [image.digest, image.manifest.config.digest, ...image.layers.map((l) => l.digest)]
        .map((d) => d.slice(7))
        .sort(),
    );
    for (const hex of blobs) {
      expect(
        createHash("sha256")
          .update(readFileSync(join(shared, "blobs", "sha256", hex)))
          .digest("hex"),
      ).toBe(hex);
    }
  });

  it("exits 1 with the error code for a missing image and 2 for bad usage", async () => {
    const r = await oci(["pull", `${reg.host}/cli/none:1`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("SM_IMAGE_NOT_FOUND");
    expect(r.stderr).toContain(`${reg.host}/cli/none:1`);
    const u = await oci(["frobnicate"]);
    expect(u.code).toBe(2);
  });
});
