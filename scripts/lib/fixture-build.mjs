// Fixture images built locally from Debian packages, written as OCI image layouts under
// CACHE/fixtures/<name>/ (temp → verify → rename), keyed by the content of their inputs, and pushed to the
// test registry with skopeo (skipped when the registry already serves the same manifest digest).

import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { downloadDeb } from "./kernels.mjs";
import { ensureRegistry } from "./registry.mjs";
import { aptCache } from "./system.mjs";
import {
  cacheDir,
  cleanStaleTemps,
  isRoot,
  note,
  readJson,
  replaceDir,
  run,
  SetupError,
  say,
  sha256,
  sha256File,
  tempName,
  which,
  withLock,
  writeJsonAtomic,
} from "./util.mjs";

export const fixturesDir = () => join(cacheDir(), "fixtures");
export const fixturesJsonPath = () => join(fixturesDir(), "fixtures.json");

const MT = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
};
/** Bump to rebuild every fixture (layout format changes). */
const FORMAT = 1;
const EPOCH = "1970-01-01T00:00:00Z";
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------- OCI layout
class Layout {
  constructor(dir) {
    this.dir = dir;
    this.blobs = join(dir, "blobs", "sha256");
    mkdirSync(this.blobs, { recursive: true });
    writeFileSync(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  }
  json(obj, mediaType) {
    const data = Buffer.from(JSON.stringify(obj));
    const hex = sha256(data);
    writeFileSync(join(this.blobs, hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  }
  /** Copy a blob from another layout (shared layers between fixtures). */
  copyFrom(other, desc) {
    const hex = desc.digest.slice(7);
    const dst = join(this.blobs, hex);
    if (!existsSync(dst)) copyFileSync(join(other.blobs, hex), dst);
    return desc;
  }
  /**
   * Tar `entries` (top-level names inside `root`) deterministically, gzip -n, store as a blob.
   * @returns {{desc, diffId}}
   */
  async layer(root, { format = "posix", deterministic = true, deleteMembers = [] } = {}) {
    const tarPath = join(this.dir, "layer.tar");
    const entries = readdirSync(root).sort();
    const args = [
      "--create",
      "--file",
      tarPath,
      "--sort=name",
      "--numeric-owner",
      `--format=${format}`,
      "-C",
      root,
    ];
    if (deterministic) args.push("--mtime=@0", "--owner=0", "--group=0");
    if (format === "posix") args.push("--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime");
    await run("tar", [...args, "--", ...entries]);
    // Removing a hard link's target member leaves a link entry that refers to a lower layer's file.
    if (deleteMembers.length) await run("tar", ["--delete", "--file", tarPath, "--", ...deleteMembers]);
    const diffId = `sha256:${await sha256File(tarPath)}`;
    await run("gzip", ["-n", "-6", tarPath]);
    const gz = `${tarPath}.gz`;
    const hex = await sha256File(gz);
    const size = statSync(gz).size;
    renameSync(gz, join(this.blobs, hex));
    return { desc: { mediaType: MT.layerGzip, digest: `sha256:${hex}`, size }, diffId };
  }
  /** Write config + manifest for a single-platform image; returns the manifest descriptor. */
  image({ layers, arch, variant, config, history }) {
    const cfg = {
      created: EPOCH,
      architecture: arch,
      ...(variant ? { variant } : {}),
      os: "linux",
      config,
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
      history:
        history ?? layers.map((_, i) => ({ created: EPOCH, created_by: `supermachine fixture layer ${i}` })),
    };
    const cfgDesc = this.json(cfg, MT.config);
    const manifest = {
      schemaVersion: 2,
      mediaType: MT.manifest,
      config: cfgDesc,
      layers: layers.map((l) => l.desc),
    };
    return this.json(manifest, MT.manifest);
  }
  writeIndex(desc, tag = "latest") {
    const index = {
      schemaVersion: 2,
      mediaType: MT.index,
      manifests: [{ ...desc, annotations: { "org.opencontainers.image.ref.name": tag } }],
    };
    writeFileSync(join(this.dir, "index.json"), JSON.stringify(index));
  }
}

/** Every descriptor reachable from index.json exists with the right size and sha256. */
export async function verifyLayout(dir) {
  const index = readJson(join(dir, "index.json"));
  if (!index?.manifests?.length) return "index.json missing or empty";
  const seen = new Set();
  const check = async (desc) => {
    if (seen.has(desc.digest)) return null;
    seen.add(desc.digest);
    const p = join(dir, "blobs", "sha256", desc.digest.replace(/^sha256:/, ""));
    let st;
    try {
      st = statSync(p);
    } catch {
      return `blob ${desc.digest} missing`;
    }
    if (st.size !== desc.size) return `blob ${desc.digest} has size ${st.size}, expected ${desc.size}`;
    if (`sha256:${await sha256File(p)}` !== desc.digest) return `blob ${desc.digest} digest mismatch`;
    if (desc.mediaType === MT.index || desc.mediaType === MT.manifest) {
      const doc = JSON.parse(readFileSync(p, "utf8"));
      const children = desc.mediaType === MT.index ? doc.manifests : [doc.config, ...doc.layers];
      for (const c of children) {
        const e = await check(c);
        if (e) return e;
      }
    }
    return null;
  };
  for (const d of index.manifests) {
    const e = await check(d);
    if (e) return e;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------- rootfs helpers
function put(root, rel, content, mode = 0o644) {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, content);
  chmodSync(p, mode);
}
function dir(root, rel, mode = 0o755) {
  const p = join(root, rel);
  mkdirSync(p, { recursive: true });
  chmodSync(p, mode);
}
function symlink(root, rel, target) {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  symlinkSync(target, p);
}

async function busyboxApplets() {
  const r = await run("busybox", ["--list-full"]);
  return r.stdout
    .split("\n")
    .map((s) => s.trim())
    .filter((s) => s && s !== "bin/busybox");
}

/** A minimal busybox root: /bin/busybox, applet symlinks, passwd/group, the usual dirs. */
async function busyboxRoot(root, busyboxBin, applets) {
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "var", "home"])
    dir(root, d);
  dir(root, "tmp", 0o1777);
  dir(root, "root", 0o700);
  copyFileSync(busyboxBin, join(root, "bin/busybox"));
  chmodSync(join(root, "bin/busybox"), 0o755);
  for (const a of applets) symlink(root, a, "/bin/busybox");
  put(
    root,
    "etc/passwd",
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  put(root, "etc/group", "root:x:0:\nnogroup:x:65534:\n");
  put(root, "etc/hostname", "busybox\n");
}

// ---------------------------------------------------------------------------------------------- fixtures
/** Registry URL the node fixture's npm cache is keyed under (`.invalid`: never resolvable, only cached). */
const NPM_FIXTURE_REGISTRY = "http://npm.fixture.invalid/";
/** The tiny package in the node fixture's npm cache. */
const GREET = {
  name: "sm-greet",
  version: "1.0.0",
  files: {
    "package.json": `${JSON.stringify(
      {
        name: "sm-greet",
        version: "1.0.0",
        description: "supermachine fixture package: installed from the node image's own npm cache",
        main: "index.js",
        license: "MIT",
      },
      null,
      2,
    )}\n`,
    "index.js":
      'exports.greet = (who) => "hello, " + who;\nexports.version = require("./package.json").version;\n',
  },
};

/** Absolute paths of the shared libraries (and the ELF interpreter) `bin` loads, from ldd. */
async function sharedLibs(bin) {
  const out = (await run("ldd", [bin])).stdout;
  const libs = [];
  for (const line of out.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

/**
 * An npm registry of one package, reached as an HTTP proxy (npm sends `GET http://host/path` to it), so the
 * registry URL npm caches under can be any host name. Resolves once listening.
 */
function fakeRegistry(name, version, tgz) {
  const integrity = `sha512-${createHash("sha512").update(tgz).digest("base64")}`;
  const shasum = createHash("sha1").update(tgz).digest("hex");
  const tarPath = `/${name}/-/${name}-${version}.tgz`;
  const packument = {
    name,
    "dist-tags": { latest: version },
    versions: {
      [version]: {
        ...JSON.parse(GREET.files["package.json"]),
        dist: { tarball: new URL(tarPath.slice(1), NPM_FIXTURE_REGISTRY).href, integrity, shasum },
      },
    },
  };
  const server = createServer((req, res) => {
    server.requests.push(`${req.method} ${req.url}`);
    const path = new URL(req.url ?? "/", NPM_FIXTURE_REGISTRY).pathname;
    if (path === `/${name}`) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(packument));
    } else if (path === tarPath) {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.end(tgz);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  server.requests = [];
  return new Promise((resolvePromise, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolvePromise({ server, port: server.address().port }));
  });
}

/**
 * Each fixture: version (bump when its build changes), inputs() → key material (resolved package versions),
 * build(layout, work, inputs, deps).
 * `deps` = built layouts of fixtures this one reuses.
 */
const LAYERS_NAMES = {
  long: `${"l".repeat(100)}-${"o".repeat(100)}-long-name.txt`, // 214 chars
  deep: `deep/${"d".repeat(90)}/${"e".repeat(90)}/${"f".repeat(90)}`, // with the file: > 255 chars
};

/** What the `layers` image must look like once its layers are applied (written into fixtures.json). */
const LAYERS_EXPECTED = {
  absent: [
    "data/to-delete.txt",
    "data/dir-a/f1",
    "data/dir-a/sub",
    "data/opaque/old1",
    "data/opaque/old-sub",
    "data/dir-then-file/child",
    "data/file-then-dir/now-a-dir.txt",
  ],
  files: {
    "data/dir-a/recreated": { content: "dir-a recreated after its whiteout\n", mode: 0o644 },
    "data/opaque/new1": { content: "new1 after opaque\n", mode: 0o644 },
    "data/file-then-dir": { content: "file-then-dir is a file again in layer 3\n", mode: 0o644 },
    "data/dir-then-file": { content: "dir-then-file is a file in layer 2\n", mode: 0o644 },
    "data/orig.txt": { content: "original content\n", mode: 0o644 },
    "data/hardlink-same-layer": { content: "original content\n", mode: 0o644 },
    "data/xlayer-hardlink": { content: "original content\n", mode: 0o644 },
    "data/modified.txt": { content: "version 2\n", mode: 0o644 },
    [`data/${LAYERS_NAMES.long}`]: { content: "long name\n", mode: 0o644 },
    [`data/${LAYERS_NAMES.deep}/file-at-depth.txt`]: { content: "deep path > 255 chars\n", mode: 0o644 },
    "data/modes/setuid": { content: "#!/bin/sh\necho setuid\n", mode: 0o4755 },
    "data/modes/setgid": { content: "#!/bin/sh\necho setgid\n", mode: 0o2755 },
    "data/modes/private": { content: "secret\n", mode: 0o600 },
    "data/modes/readonly": { content: "ro\n", mode: 0o640 },
  },
  dirs: {
    "data/dir-a": { mode: 0o755, entries: ["recreated"] },
    "data/opaque": { mode: 0o755, entries: ["new1"] },
    "data/modes/sticky": { mode: 0o1777, entries: [] },
    "data/empty-dir": { mode: 0o755, entries: [] },
    "data/empty-dir-2": { mode: 0o755, entries: [] },
  },
  symlinks: {
    "data/link-relative": "orig.txt",
    "data/link-absolute": "/data/orig.txt",
    "data/link-dangling": "does/not/exist",
    "data/link-to-dir": "dir-a",
  },
  /** Each group is one inode. */
  hardlinks: [["data/hardlink-same-layer", "data/orig.txt", "data/xlayer-hardlink"]],
  /** No whiteout marker (`.wh.*`) may survive anywhere; all entries are owned by 0:0. */
  noWhiteouts: true,
};

const FIXTURES = {
  busybox: {
    version: 1, // bump when build() changes
    platforms: ["linux/amd64"],
    async inputs() {
      const v = await run("dpkg-query", ["-W", "-f", "$" + "{Version}", "busybox-static"], {
        allowFail: true,
      });
      const bin = (await run("sh", ["-c", "command -v busybox"])).stdout.trim();
      return { busyboxStatic: v.stdout.trim() || "unknown", binSha: await sha256File(bin), bin };
    },
    async build(layout, work, inp) {
      const root = join(work, "root");
      await busyboxRoot(root, inp.bin, await busyboxApplets());
      const l = await layout.layer(root);
      const m = layout.image({
        layers: [l],
        arch: "amd64",
        config: { Env: [PATH_ENV], Cmd: ["/bin/sh"], WorkingDir: "/" },
      });
      layout.writeIndex(m);
    },
  },

  layers: {
    version: 1, // bump when build() changes
    platforms: ["linux/amd64"],
    deps: ["busybox"],
    record: { expected: LAYERS_EXPECTED },
    async inputs(deps) {
      return { base: deps.busybox.key };
    },
    async build(layout, work, _inp, deps) {
      const base = deps.busybox;
      const baseManifest = base.manifest();
      const baseCfg = base.config();
      const baseLayer = {
        desc: layout.copyFrom(base.layout, baseManifest.layers[0]),
        diffId: baseCfg.rootfs.diff_ids[0],
      };
      const { long, deep } = LAYERS_NAMES;
      // Layer 1 (GNU tar format): the starting tree.
      const r1 = join(work, "l1");
      put(r1, "data/dir-a/f1", "a1\n");
      put(r1, "data/dir-a/sub/f3", "a3\n");
      put(r1, "data/opaque/old1", "old1\n");
      put(r1, "data/opaque/old-sub/old2", "old2\n");
      put(r1, "data/file-then-dir", "I am a file in layer 1\n");
      put(r1, "data/dir-then-file/child", "child of a dir in layer 1\n");
      put(r1, "data/orig.txt", "original content\n");
      linkSync(join(r1, "data/orig.txt"), join(r1, "data/hardlink-same-layer"));
      put(r1, "data/to-delete.txt", "deleted in layer 2\n");
      put(r1, "data/modified.txt", "version 1\n");
      put(r1, `data/${long}`, "long name\n");
      put(r1, `data/${deep}/file-at-depth.txt`, "deep path > 255 chars\n");
      put(r1, "data/modes/setuid", "#!/bin/sh\necho setuid\n", 0o4755);
      put(r1, "data/modes/setgid", "#!/bin/sh\necho setgid\n", 0o2755);
      put(r1, "data/modes/private", "secret\n", 0o600);
      put(r1, "data/modes/readonly", "ro\n", 0o444);
      dir(r1, "data/modes/sticky", 0o1777);
      dir(r1, "data/empty-dir");
      symlink(r1, "data/link-relative", "orig.txt");
      symlink(r1, "data/link-absolute", "/data/orig.txt");
      symlink(r1, "data/link-dangling", "does/not/exist");
      symlink(r1, "data/link-to-dir", "dir-a");
      const l1 = await layout.layer(r1, { format: "gnu" });
      // Layer 2 (PAX): whiteouts, opaque dir, file→dir, dir→file, cross-layer hard link, modified file.
      const r2 = join(work, "l2");
      put(r2, "data/.wh.to-delete.txt", "");
      put(r2, "data/.wh.dir-a", "");
      put(r2, "data/opaque/.wh..wh..opq", "");
      put(r2, "data/opaque/new1", "new1 after opaque\n");
      put(r2, "data/file-then-dir/now-a-dir.txt", "file-then-dir is a directory in layer 2\n");
      put(r2, "data/.wh.dir-then-file", "");
      put(r2, "data/dir-then-file", "dir-then-file is a file in layer 2\n");
      put(r2, "data/modified.txt", "version 2\n");
      put(r2, "data/orig.txt", "original content\n");
      linkSync(join(r2, "data/orig.txt"), join(r2, "data/xlayer-hardlink"));
      const l2 = await layout.layer(r2, { deleteMembers: ["data/orig.txt"] });
      // Layer 3 (PAX): the directory becomes a file again, a whited-out dir is recreated, chmod-only change.
      const r3 = join(work, "l3");
      put(r3, "data/.wh.file-then-dir", "");
      put(r3, "data/file-then-dir", "file-then-dir is a file again in layer 3\n");
      put(r3, "data/dir-a/recreated", "dir-a recreated after its whiteout\n");
      put(r3, "data/modes/readonly", "ro\n", 0o640);
      dir(r3, "data/empty-dir-2");
      const l3 = await layout.layer(r3);
      const m = layout.image({
        layers: [baseLayer, l1, l2, l3],
        arch: "amd64",
        config: { Env: [PATH_ENV], Cmd: ["/bin/sh"], WorkingDir: "/data" },
      });
      layout.writeIndex(m);
    },
  },

  httpd: {
    version: 1, // bump when build() changes
    platforms: ["linux/amd64"],
    deps: ["busybox"],
    async inputs(deps) {
      return { base: deps.busybox.key };
    },
    async build(layout, work, _inp, deps) {
      const base = deps.busybox;
      const baseLayer = {
        desc: layout.copyFrom(base.layout, base.manifest().layers[0]),
        diffId: base.config().rootfs.diff_ids[0],
      };
      const r = join(work, "root");
      put(r, "www/index.html", "<h1>supermachine httpd fixture: port 80</h1>\n");
      put(r, "www8080/index.html", "<h1>supermachine httpd fixture: port 8080</h1>\n");
      put(
        r,
        "usr/local/bin/start-httpd",
        "#!/bin/sh\n# second listener (daemonizes), then the main one in the foreground\nbusybox httpd -p 8080 -h /www8080\nexec busybox httpd -f -p 80 -h /www\n",
        0o755,
      );
      const l = await layout.layer(r);
      const m = layout.image({
        layers: [baseLayer, l],
        arch: "amd64",
        config: {
          Env: [PATH_ENV],
          Cmd: ["/usr/local/bin/start-httpd"],
          ExposedPorts: { "80/tcp": {}, "8080/tcp": {} },
          WorkingDir: "/www",
        },
      });
      layout.writeIndex(m);
    },
  },

  multiarch: {
    version: 1, // bump when build() changes
    platforms: ["linux/amd64", "linux/arm64"],
    deps: ["busybox"],
    async inputs(deps) {
      const v = /Candidate:\s*(\S+)/.exec(await aptCache(["policy", "busybox-static:arm64"]))?.[1];
      if (!v || v === "(none)") return null; // apt metadata for arm64 unavailable
      return { base: deps.busybox.key, arm64: v };
    },
    async build(layout, work, _inp, deps) {
      const base = deps.busybox;
      const amdDesc = base.index().manifests[0];
      const amdManifest = base.manifest();
      layout.copyFrom(base.layout, amdDesc);
      layout.copyFrom(base.layout, amdManifest.config);
      for (const l of amdManifest.layers) layout.copyFrom(base.layout, l);
      say("fixture multiarch: apt-get download busybox-static:arm64");
      const x = await downloadDeb("busybox-static:arm64", join(work, "deb"));
      const bin = [join(x, "bin/busybox"), join(x, "usr/bin/busybox")].find((p) => existsSync(p));
      if (!bin) throw new SetupError("busybox-static:arm64 has no bin/busybox");
      const r = join(work, "root");
      // The arm64 binary cannot run here; its applet list equals the amd64 one (same source, same config).
      await busyboxRoot(r, bin, await busyboxApplets());
      const l = await layout.layer(r);
      const armDesc = layout.image({
        layers: [l],
        arch: "arm64",
        variant: "v8",
        config: { Env: [PATH_ENV], Cmd: ["/bin/sh"], WorkingDir: "/" },
      });
      const idx = layout.json(
        {
          schemaVersion: 2,
          mediaType: MT.index,
          manifests: [
            {
              mediaType: MT.manifest,
              digest: amdDesc.digest,
              size: amdDesc.size,
              platform: { architecture: "amd64", os: "linux" },
            },
            { ...armDesc, platform: { architecture: "arm64", os: "linux", variant: "v8" } },
          ],
        },
        MT.index,
      );
      layout.writeIndex(idx);
    },
  },

  "debian-python": {
    version: 2, // bump when build() changes
    platforms: ["linux/amd64"],
    async inputs() {
      // Deliberately not keyed on package versions: debootstrap takes minutes, so this is cached hard.
      return { suite: "bookworm", variant: "minbase", include: "python3-minimal", user: "app:1000:1000" };
    },
    async build(layout, work, inp) {
      if (!isRoot())
        throw new SetupError("the debian-python fixture needs root (debootstrap); run setup as root");
      const mirror = debianMirror();
      const root = join(work, "root");
      const t0 = Date.now();
      say(
        `fixture debian-python: debootstrap --variant=minbase --include=python3-minimal bookworm (takes minutes)`,
      );
      await run("debootstrap", [
        `--variant=${inp.variant}`,
        `--include=${inp.include}`,
        inp.suite,
        root,
        mirror,
      ]);
      say(`fixture debian-python: debootstrap took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      // Add the non-root user `app` (uid/gid 1000) the way useradd would.
      const append = (rel, line) => writeFileSync(join(root, rel), line, { flag: "a" });
      append("etc/passwd", "app:x:1000:1000:app:/home/app:/bin/sh\n");
      append("etc/group", "app:x:1000:\n");
      if (existsSync(join(root, "etc/shadow"))) append("etc/shadow", "app:*:19000:0:99999:7:::\n");
      if (existsSync(join(root, "etc/gshadow"))) append("etc/gshadow", "app:!::\n");
      dir(root, "home/app");
      await run("chown", ["1000:1000", join(root, "home/app")]);
      // Like container images: no device nodes, no apt caches, no debootstrap logs.
      for (const d of ["dev", "proc", "sys", "run", "tmp"]) {
        for (const n of readdirSync(join(root, d)))
          rmSync(join(root, d, n), { recursive: true, force: true });
      }
      for (const d of ["var/cache/apt/archives", "var/lib/apt/lists", "var/log"]) {
        if (!existsSync(join(root, d))) continue;
        for (const n of readdirSync(join(root, d))) {
          if (n === "partial" || n === "lock") continue;
          rmSync(join(root, d, n), { recursive: true, force: true });
        }
      }
      rmSync(join(root, "debootstrap"), { recursive: true, force: true });
      writeFileSync(join(root, "etc/hostname"), "debian-python\n");
      const l = await layout.layer(root, { deterministic: false });
      const m = layout.image({
        layers: [l],
        arch: "amd64",
        config: {
          Env: [PATH_ENV, "LANG=C.UTF-8"],
          Cmd: ["python3"],
          // Like python:slim the default user is root; tests pick `app` (uid 1000) explicitly.
          WorkingDir: "/",
        },
      });
      layout.writeIndex(m);
    },
  },

  node: {
    version: 1, // bump when build() changes
    platforms: ["linux/amd64"],
    deps: ["debian-python"],
    // fixtures.json gets these fields too: what the image's own npm cache can install offline.
    record: { npmCache: { registry: NPM_FIXTURE_REGISTRY, packages: [`${GREET.name}@${GREET.version}`] } },
    async inputs(deps) {
      // The host's own Node (the one running setup) and npm: no download, no second debootstrap.
      const node = realpathSync(process.execPath);
      // npm of that node's prefix (/usr/bin/node → /usr/lib/node_modules/npm), else the one on PATH
      let npmDir = join(dirname(dirname(node)), "lib", "node_modules", "npm");
      if (!existsSync(join(npmDir, "package.json"))) {
        const npmCli = which("npm"); // …/node_modules/npm/bin/npm-cli.js through a symlink
        if (!npmCli) throw new SetupError(`fixture node: no npm next to ${node} and none on PATH`);
        npmDir = dirname(dirname(realpathSync(npmCli)));
      }
      const npmVersion = readJson(join(npmDir, "package.json"))?.version;
      if (!npmVersion) throw new SetupError(`fixture node: ${npmDir}/package.json has no version`);
      return {
        base: deps["debian-python"].key,
        node,
        nodeSha: await sha256File(node),
        nodeVersion: process.version,
        npmDir,
        npmVersion,
        greet: GREET,
      };
    },
    async build(layout, work, inp, deps) {
      const base = deps["debian-python"];
      const baseManifest = base.manifest();
      const baseLayer = {
        desc: layout.copyFrom(base.layout, baseManifest.layers[0]),
        diffId: base.config().rootfs.diff_ids[0],
      };
      const r = join(work, "root");
      dir(r, "usr/bin");
      dir(r, "usr/lib/node_modules");
      dir(r, "root", 0o700);
      copyFileSync(inp.node, join(r, "usr/bin/node"));
      chmodSync(join(r, "usr/bin/node"), 0o755);
      // Shared libraries node needs that the base lacks (Debian 12 host and bookworm base: none, usually).
      const baseFiles = new Set(
        (await run("tar", ["-tzf", join(base.layout.blobs, baseManifest.layers[0].digest.slice(7))])).stdout
          .split("\n")
          .map((l) => l.replace(/\/$/, "")),
      );
      const added = [];
      for (const lib of await sharedLibs(inp.node)) {
        const rel = lib.replace(/^\/+/, "");
        const usrRel = /^(lib|lib64|lib32)\//.test(rel) ? `usr/${rel}` : rel; // merged /usr in the base
        if (baseFiles.has(rel) || baseFiles.has(usrRel)) continue;
        mkdirSync(dirname(join(r, usrRel)), { recursive: true });
        copyFileSync(realpathSync(lib), join(r, usrRel));
        chmodSync(join(r, usrRel), 0o755);
        added.push(usrRel);
      }
      if (added.length) say(`fixture node: added host libraries ${added.join(", ")}`);
      await run("cp", ["-a", inp.npmDir, join(r, "usr/lib/node_modules/npm")]);
      symlink(r, "usr/bin/npm", "../lib/node_modules/npm/bin/npm-cli.js");
      symlink(r, "usr/bin/npx", "../lib/node_modules/npm/bin/npx-cli.js");
      // A tiny package of our own, packed with npm and put into root's npm cache (/root/.npm) through a
      // registry that exists only here: an in-process HTTP proxy answers for NPM_FIXTURE_REGISTRY, so the
      // cache holds the packument and the tarball under that URL. /root/.npmrc names that registry and
      // `offline=true`: in the guest (no network by default) `npm install sm-greet` is served from the cache.
      const pkgDir = join(work, "pkg");
      for (const [rel, text] of Object.entries(GREET.files)) put(pkgDir, rel, text);
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
      env.HOME = work; // no user npmrc of the host
      const npmArgs = ["--userconfig", join(work, "npmrc"), "--loglevel", "error", "--no-update-notifier"];
      writeFileSync(join(work, "npmrc"), "");
      await run("npm", ["pack", "--pack-destination", work, ...npmArgs], { cwd: pkgDir, env });
      const tgz = readFileSync(join(work, `${GREET.name}-${GREET.version}.tgz`));
      const { server, port } = await fakeRegistry(GREET.name, GREET.version, tgz);
      try {
        await run(
          "npm",
          [
            "cache",
            "add",
            `${GREET.name}@${GREET.version}`,
            "--cache",
            join(r, "root/.npm"),
            "--registry",
            NPM_FIXTURE_REGISTRY,
            "--proxy",
            `http://127.0.0.1:${port}`,
            "--noproxy",
            "",
            ...npmArgs,
          ],
          { env },
        );
      } finally {
        server.close();
      }
      if (server.requests.length === 0) throw new SetupError("fixture node: npm cache add made no request");
      rmSync(join(r, "root/.npm/_logs"), { recursive: true, force: true });
      rmSync(join(r, "root/.npm/_update-notifier-last-checked"), { force: true });
      put(
        r,
        "root/.npmrc",
        [
          "# supermachine fixture: no network in the guest by default; packages come from /root/.npm",
          `registry=${NPM_FIXTURE_REGISTRY}`,
          "offline=true",
          "audit=false",
          "fund=false",
          "update-notifier=false",
          "",
        ].join("\n"),
      );
      const l = await layout.layer(r);
      const m = layout.image({
        layers: [baseLayer, l],
        arch: "amd64",
        config: { Env: [PATH_ENV, "LANG=C.UTF-8"], Cmd: ["node"], WorkingDir: "/" },
        history: [
          { created: EPOCH, created_by: "supermachine fixture debian-python" },
          {
            created: EPOCH,
            created_by: `supermachine fixture node: host node ${inp.nodeVersion}, npm ${inp.npmVersion}, npm cache ${GREET.name}@${GREET.version}`,
          },
        ],
      });
      layout.writeIndex(m);
    },
  },
};

export const FIXTURE_NAMES = Object.keys(FIXTURES);

/** The Debian mirror configured for apt on this machine (never hard-coded). */
export function debianMirror() {
  const candidates = [];
  const files = [];
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list");
  if (existsSync("/etc/apt/sources.list.d")) {
    for (const n of readdirSync("/etc/apt/sources.list.d").sort()) {
      if (n.endsWith(".list") || n.endsWith(".sources")) files.push(join("/etc/apt/sources.list.d", n));
    }
  }
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    if (f.endsWith(".sources")) {
      for (const para of text.split(/\n\s*\n/)) {
        const field = (k) =>
          new RegExp(`^${k}:\\s*(.+)$`, "im")
            .exec(
              para
                .split("\n")
                .filter((l) => !l.trimStart().startsWith("#"))
                .join("\n"),
            )?.[1]
            .trim()
            .split(/\s+/) ?? [];
        if (/^Enabled:\s*no/im.test(para)) continue;
        if (!field("Types").includes("deb")) continue;
        for (const uri of field("URIs"))
          candidates.push({ uri, suites: field("Suites"), comps: field("Components") });
      }
    } else {
      for (const line of text.split("\n")) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
        if (m) candidates.push({ uri: m[1], suites: [m[2]], comps: m[3].split(/\s+/) });
      }
    }
  }
  const pick =
    candidates.find((c) => c.suites.includes("bookworm") && c.comps.includes("main")) ??
    candidates.find(
      (c) => c.comps.includes("main") && !c.suites.some((s) => /security|updates|backports/.test(s)),
    );
  if (!pick)
    throw new SetupError("no Debian 'main' apt source found in /etc/apt/sources.list(.d) for debootstrap");
  return pick.uri;
}

// ---------------------------------------------------------------------------------------------- build + push
function loaded(name) {
  const d = join(fixturesDir(), name);
  const layout = { dir: d, blobs: join(d, "blobs", "sha256") };
  const blob = (digest) => JSON.parse(readFileSync(join(layout.blobs, digest.slice(7)), "utf8"));
  const index = () => readJson(join(d, "index.json"));
  return {
    name,
    dir: d,
    layout,
    key: readFileSync(join(d, "key"), "utf8").trim(),
    index,
    manifestDesc: () => index().manifests[0],
    manifest: () => blob(index().manifests[0].digest),
    config: () => blob(blob(index().manifests[0].digest).config.digest),
  };
}

async function ensureFixture(name, built) {
  const fx = FIXTURES[name];
  const target = join(fixturesDir(), name);
  const deps = {};
  for (const d of fx.deps ?? []) deps[d] = built[d];
  const inp = await fx.inputs(deps);
  const haveKey = existsSync(join(target, "index.json"))
    ? (() => {
        try {
          return readFileSync(join(target, "key"), "utf8").trim();
        } catch {
          return null;
        }
      })()
    : null;
  if (inp === null) {
    if (haveKey) return loaded(name); // inputs unresolvable (offline): keep what we have
    throw new SetupError(`fixture ${name}: cannot resolve its inputs through apt`);
  }
  const key = sha256(JSON.stringify({ FORMAT, name, version: fx.version, inp }));
  if (haveKey === key) return loaded(name);
  say(`fixture ${name}: building${haveKey ? " (inputs changed)" : ""}`);
  const work = join(fixturesDir(), tempName(`${name}-work`));
  const out = join(fixturesDir(), tempName(name));
  rmSync(work, { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const layout = new Layout(out);
    await fx.build(layout, work, inp, deps);
    rmSync(join(out, "layer.tar"), { force: true });
    const problem = await verifyLayout(out);
    if (problem) throw new SetupError(`fixture ${name} failed verification: ${problem}`);
    writeFileSync(join(out, "key"), `${key}\n`);
    replaceDir(out, target);
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
  return loaded(name);
}

const ACCEPT = [
  MT.index,
  MT.manifest,
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
].join(", ");

/** Manifest digest the registry serves for name:tag, or null. */
export async function remoteDigest(host, name, tag = "latest") {
  try {
    const r = await fetch(`http://${host}/v2/${name}/manifests/${tag}`, {
      method: "HEAD",
      headers: { Accept: ACCEPT },
      signal: AbortSignal.timeout(5000),
    });
    return r.ok ? r.headers.get("docker-content-digest") : null;
  } catch {
    return null;
  }
}

async function push(fx, host) {
  const digest = fx.manifestDesc().digest;
  if ((await remoteDigest(host, fx.name)) === digest) return digest;
  say(`fixture ${fx.name}: pushing to ${host}`);
  await run("skopeo", [
    "copy",
    "-q",
    "--all",
    "--preserve-digests",
    "--dest-tls-verify=false",
    `oci:${fx.dir}:latest`,
    `docker://${host}/${fx.name}:latest`,
  ]);
  const got = await remoteDigest(host, fx.name);
  if (got !== digest)
    throw new SetupError(`fixture ${fx.name}: registry serves ${got} after push, expected ${digest}`);
  return digest;
}

/** Build (cached) and push every fixture; write fixtures.json. Returns its content. */
export async function ensureFixtures() {
  return withLock("fixtures", async () => {
    mkdirSync(fixturesDir(), { recursive: true });
    cleanStaleTemps(fixturesDir());
    const built = {};
    for (const name of FIXTURE_NAMES) built[name] = await ensureFixture(name, built);
    const reg = await ensureRegistry();
    const images = {};
    for (const name of FIXTURE_NAMES) {
      const digest = await push(built[name], reg.host);
      images[name] = {
        ref: `${reg.host}/${name}:latest`,
        digest,
        platforms: FIXTURES[name].platforms,
        layout: built[name].dir,
        ...(FIXTURES[name].record ?? {}),
      };
    }
    const doc = { registry: reg.host, images };
    const prev = readJson(fixturesJsonPath());
    if (JSON.stringify(prev) !== JSON.stringify(doc)) writeJsonAtomic(fixturesJsonPath(), doc);
    return doc;
  });
}

/** Fast check (no lock, no build): fixtures.json matches what the running registry serves. */
export async function fixturesReady(host) {
  const doc = readJson(fixturesJsonPath());
  if (!doc || doc.registry !== host) return null;
  for (const name of FIXTURE_NAMES) {
    const img = doc.images?.[name];
    if (!img || (await remoteDigest(host, name)) !== img.digest) return null;
  }
  return doc;
}

export { note };
