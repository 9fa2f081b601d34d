// The kernel step against fake dpkg / apt-get / apt-cache that behave like apt does: packages of a foreign
// architecture are known only after `apt-get update` has run *after* `dpkg --add-architecture`.
// Each test uses its own XDG_CACHE_HOME with ready-made bundles, so nothing is downloaded or installed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

const KERNELS = join(dirname(fileURLToPath(import.meta.url)), "..", "lib", "kernels.mjs");
const temps = [];
after(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const RELEASE = "6.1.0-99";
const VERSION = "6.1.999-1";

/** A temp dir with fake apt tools (logging every call to `log`) and a cache holding both bundles. */
function world() {
  const d = mkdtempSync(join(tmpdir(), "sm-kernels-apt-"));
  temps.push(d);
  const bin = join(d, "bin");
  mkdirSync(bin);
  const state = join(d, "state");
  mkdirSync(state);
  const tool = (name, body) => {
    writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> ${d}/log\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  tool(
    "dpkg",
    `case "$1" in
  --print-foreign-architectures) cat ${state}/arches 2>/dev/null; true ;;
  --add-architecture) echo "$2" >> ${state}/arches ;;
esac`,
  );
  // update: the lists cover the architectures configured at that moment.
  tool(
    "apt-get",
    `[ "$1" = update ] && { echo amd64; cat ${state}/arches 2>/dev/null; } > ${state}/lists; exit 0`,
  );
  tool(
    "apt-cache",
    `pkg="$2"; arch=amd64
case "$pkg" in *:arm64) arch=arm64 ;; esac
grep -qx "$arch" ${state}/lists 2>/dev/null || { echo "E: No packages found" >&2; exit 100; }
case "$1" in
  depends) echo "$pkg"; echo "  Depends: linux-image-${RELEASE}-cloud-$arch" ;;
  policy) echo "$pkg:"; echo "  Candidate: ${VERSION}" ;;
esac`,
  );
  // No lists yet, as on a fresh machine: the first apt-cache query fails, setup runs apt-get update.
  const cache = join(d, "xdg");
  for (const [arch, deb] of [
    ["x86_64", "amd64"],
    ["aarch64", "arm64"],
  ]) {
    const b = join(cache, "supermachine", "kernels", `${RELEASE}-cloud-${deb}-${arch}`);
    mkdirSync(join(b, "modules"), { recursive: true });
    writeFileSync(join(b, "modules", "modules.dep"), "");
    writeFileSync(join(b, "vmlinuz"), Buffer.alloc(1024 * 1024 + 1));
    writeFileSync(join(b, "vmlinux"), "");
    writeFileSync(
      join(b, "bundle.json"),
      JSON.stringify({
        release: `${RELEASE}-cloud-${deb}`,
        arch,
        package: `linux-image-${RELEASE}-cloud-${deb}`,
        debVersion: VERSION,
        kernel: "vmlinuz",
      }),
    );
  }
  // nobody runs a copy of scripts/: the clone may be where nobody cannot read (e.g. under /root).
  cpSync(join(dirname(KERNELS), ".."), join(d, "scripts"), { recursive: true });
  spawnSync("chmod", ["-R", "a+rwX", d]);
  const calls = () =>
    readFileSync(join(d, "log"), "utf8")
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("apt-cache"));
  return { d, bin, cache, state, calls, kernels: join(d, "scripts/lib/kernels.mjs") };
}

const ensureKernels = (w, prefix = []) =>
  spawnSync(
    prefix[0] ?? process.execPath,
    [
      ...prefix.slice(1),
      ...(prefix.length ? [process.execPath] : []),
      "--input-type=module",
      "-e",
      `const m = await import(${JSON.stringify(w.kernels)});
       try { const r = await m.ensureKernels(); console.log(JSON.stringify(Object.keys(r.bundles))); }
       catch (e) { console.error(e.message); process.exit(e.exitCode ?? 1); }`,
    ],
    {
      env: { PATH: `${w.bin}:/usr/bin:/bin`, HOME: w.d, XDG_CACHE_HOME: w.cache },
      encoding: "utf8",
    },
  );

test("root: apt-get update runs after dpkg --add-architecture arm64, so the arm64 kernel resolves", (t) => {
  if (process.getuid?.() !== 0) return t.skip("the root path needs root");
  const w = world();
  const r = ensureKernels(w);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), ["x86_64", "aarch64"]);
  const calls = w.calls();
  const added = calls.indexOf("dpkg --add-architecture arm64");
  assert.ok(added >= 0, calls.join("\n"));
  assert.ok(
    calls.indexOf("apt-get update -q", added) > added,
    `no apt-get update after it:\n${calls.join("\n")}`,
  );
});

test("root, second run: the architecture is there, no dpkg change and no apt-get update", (t) => {
  if (process.getuid?.() !== 0) return t.skip("the root path needs root");
  const w = world();
  assert.equal(ensureKernels(w).status, 0);
  writeFileSync(join(w.d, "log"), "");
  const r = ensureKernels(w);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(w.calls(), ["dpkg --print-foreign-architectures"]);
});

test("not root, arm64 architecture missing: prints the exact commands, exit 2, changes nothing", (t) => {
  if (process.getuid?.() !== 0) return t.skip("needs root to switch to nobody with setpriv");
  const w = world();
  rmSync(join(w.cache, "supermachine", "kernels", `${RELEASE}-cloud-arm64-aarch64`), { recursive: true });
  const r = ensureKernels(w, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /sudo dpkg --add-architecture arm64 && sudo apt-get update\n/);
  assert.deepEqual(
    w.calls().filter((c) => !c.startsWith("dpkg --print")),
    [],
    "no dpkg or apt-get change as non-root",
  );
});
