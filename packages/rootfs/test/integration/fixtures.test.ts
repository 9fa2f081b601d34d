// Every fixture image: pulled with skopeo, unpacked by umoci (the oracle), flattened by us, then compared
// through sqfs2tar (squashfs-tools-ng) and sqfsdiff against mksquashfs of umoci's tree.
import { execFile, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { imageLayers, importLayout } from "@supermachine/oci";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fixtures, fixtures, quietSetup } from "../../../../scripts/lib/fixtures.mjs";
import { buildRootfs, tarFileLayer } from "../../src/index";
import { diffListings, listDir, listImage } from "../../src/test-util";

const execFileP = promisify(execFile);
const NAMES = ["busybox", "layers", "httpd", "debian-python", "multiarch"] as const;
const isRoot = process.getuid?.() === 0;
const canMount =
  isRoot &&
  spawnSync("sh", ["-c", "grep -qw squashfs /proc/filesystems && test -e /dev/loop-control"]).status === 0;

interface Descriptor {
  mediaType?: string;
  digest: string;
  platform?: { os: string; architecture: string };
}

/** Reads an OCI image layout (a few lines of our own, no dependency on @supermachine/oci): layers, lowest first. */
async function layoutLayers(layout: string): Promise<Array<{ digest: string; path: string }>> {
  const blob = (d: string) => join(layout, "blobs", ...d.split(":"));
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as { manifests: Descriptor[] };
  let desc = index.manifests[0] as Descriptor;
  for (;;) {
    const doc = JSON.parse(await readFile(blob(desc.digest), "utf8")) as {
      manifests?: Descriptor[];
      layers?: Descriptor[];
    };
    if (doc.manifests) {
      desc = doc.manifests.find((m) => m.platform?.architecture === "amd64") as Descriptor;
      continue;
    }
    return (doc.layers ?? []).map((l) => ({ digest: l.digest, path: blob(l.digest) }));
  }
}

let fx: Fixtures;
let work: string;
beforeAll(async () => {
  quietSetup();
  fx = await fixtures();
  work = await mkdtemp(join(tmpdir(), "sm-rootfs-it-"));
}, 600_000);
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("fixture images: our squashfs == umoci unpack", () => {
  for (const name of NAMES) {
    it(`${name}`, async () => {
      const img = fx.images[name];
      const oci = join(work, `${name}-oci`);
      await execFileP("skopeo", [
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        `docker://${img.ref}`,
        `oci:${oci}:latest`,
      ]);
      const bundle = join(work, `${name}-bundle`);
      // As root, umoci applies the real owners (and device nodes); --rootless cannot chown, so owners are only
      // compared when we are root.
      await execFileP(
        "umoci",
        ["unpack", ...(isRoot ? [] : ["--rootless"]), "--image", `${oci}:latest`, bundle],
        { maxBuffer: 64 << 20 },
      );
      const rootfs = join(bundle, "rootfs");

      const layers = (await layoutLayers(oci)).map((l) => tarFileLayer(l.path, l.digest));
      const out = join(work, `${name}.sqfs`);
      const r = await buildRootfs({ layers, out });
      expect(r.sha256).toMatch(/^[0-9a-f]{64}$/);

      const ours = await listImage(out);
      const theirs = await listDir(rootfs);
      if (!isRoot)
        for (const m of [ours, theirs]) for (const i of m.values()) Object.assign(i, { uid: 0, gid: 0 });
      expect(diffListings(ours, theirs)).toEqual([]);
      expect([...ours.keys()].filter((p) => p.split("/").some((c) => c.startsWith(".wh.")))).toEqual([]);

      await execFileP("rdsquashfs", ["-l", "/", out], { maxBuffer: 256 << 20 });
      const mk = join(work, `${name}-mk.sqfs`);
      await execFileP("mksquashfs", [
        rootfs,
        mk,
        "-comp",
        "gzip",
        "-b",
        "131072",
        "-noappend",
        "-quiet",
        "-no-progress",
      ]);
      // Ignored: the root directory's own mode (umoci's bundle dir vs the image), and "has an extended/basic
      // type" (the same directory encoded with or without a lookup index: the writers pick at slightly
      // different listing sizes; the content is compared in full).
      const d = spawnSync("sqfsdiff", ["-a", out, "-b", mk, ...(isRoot ? [] : ["-O"])], { encoding: "utf8" });
      const report = (d.stdout + d.stderr)
        .split("\n")
        .filter(
          (l) => l && l !== "/ has different permissions" && !/ has an? (extended|basic) type$/.test(l),
        );
      expect(report).toEqual([]);

      // The kernel's own squashfs driver as a second judge (loop mount needs root and loop devices).
      if (canMount) {
        const mnt = join(work, `${name}-mnt`);
        await mkdir(mnt);
        await execFileP("mount", ["-o", "loop,ro", "-t", "squashfs", out, mnt]);
        try {
          expect(diffListings(await listDir(mnt), theirs)).toEqual([]);
        } finally {
          await execFileP("umount", [mnt]);
        }
      }

      // Contract check with @supermachine/oci (test-only import): its LayerInput for the same image gives
      // the byte-identical image.
      if (name === "layers" || name === "busybox") {
        const image = await importLayout(oci, { store: join(work, "oci-store") });
        const viaOci = await buildRootfs({
          layers: imageLayers(image),
          out: join(work, `${name}-via-oci.sqfs`),
        });
        expect(viaOci.sha256).toBe(r.sha256);
      }

      if (name === "layers") {
        const get = (p: string) => ours.get(`data/${p}`);
        expect(get("to-delete.txt")).toBeUndefined();
        expect(get("dir-a/f1")).toBeUndefined();
        expect(get("dir-a/recreated")?.type).toBe("file");
        expect([...ours.keys()].filter((p) => p.startsWith("data/opaque/"))).toEqual(["data/opaque/new1"]);
        expect(get("file-then-dir")?.type).toBe("file");
        expect(get("dir-then-file")?.type).toBe("file");
        expect(get("xlayer-hardlink")).toBe(get("orig.txt"));
        expect(get("hardlink-same-layer")).toBe(get("orig.txt"));
        expect(get("modes/setuid")?.mode).toBe(0o4755);
        expect(get("modes/sticky")?.mode).toBe(0o1777);
        expect(get("modes/readonly")?.mode).toBe(0o640);
      }
    }, 300_000);
  }
});
