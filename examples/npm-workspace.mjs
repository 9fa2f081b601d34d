// npm-workspace: a live host project directory inside the guest. The guest links the workspace packages
// the way npm/pnpm do (node_modules/<pkg> -> ../packages/<pkg>); the host sees real symlinks with the
// verbatim targets, and edits on either side are visible on the other at once (symlink policy "opaque").
//   node examples/npm-workspace.mjs [project-dir]
import { mkdir, readFile, readlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Image } from "@supermachine/core";
import { registry, runIfMain } from "./_registry.mjs";

export async function main({
  log = console.log,
  projectDir = process.argv[2] ?? join(tmpdir(), "sm-example-workspace"),
} = {}) {
  // A tiny workspace on the host: two packages, no node_modules yet.
  for (const pkg of ["pkg-a", "pkg-b"]) {
    await mkdir(join(projectDir, "packages", pkg), { recursive: true });
    await writeFile(join(projectDir, "packages", pkg, "index.js"), `module.exports = "${pkg} v1";\n`);
  }
  const image = await Image.build({
    ref: `${registry()}/busybox:latest`,
    mounts: [{ hostPath: projectDir, guestTag: "project", symlinks: "opaque" }],
  });
  const pool = await image.pool();
  try {
    const vm = await pool.acquire();
    // The guest mounts the share by its tag, then links the workspace like `npm install` would.
    const link = await vm.exec({
      argv: [
        "sh",
        "-c",
        "mkdir -p /work && mount -t smfs project /work && cd /work && rm -rf node_modules && mkdir node_modules" +
          " && ln -s ../packages/pkg-a node_modules/pkg-a && ln -s ../packages/pkg-b node_modules/pkg-b" +
          " && cat node_modules/pkg-a/index.js",
      ],
    });
    if (link.exitCode !== 0) throw new Error(`guest failed: ${link.stderr}`);
    log(`guest reads node_modules/pkg-a/index.js: ${link.stdout.toString().trim()}`);
    log(`host sees node_modules/pkg-a -> ${await readlink(join(projectDir, "node_modules", "pkg-a"))}`);

    // Host edit → the guest reads the new bytes through the symlink, no remount.
    await writeFile(join(projectDir, "packages", "pkg-b", "index.js"), 'module.exports = "pkg-b v2";\n');
    const read = await vm.exec({ argv: ["cat", "/work/node_modules/pkg-b/index.js"] });
    log(`after a host edit the guest reads: ${read.stdout.toString().trim()}`);

    // Guest write → the host sees it.
    await vm.exec({ argv: ["sh", "-c", "echo built in the guest > /work/build.log"] });
    log(`host reads build.log: ${(await readFile(join(projectDir, "build.log"), "utf8")).trim()}`);
    await vm.release();
  } finally {
    await pool.shutdown();
  }
}

runIfMain(import.meta, main);
