import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sha256Digest } from "./image";
import { imageLayers, layerEntries } from "./layers";
import { importArchive, importLayout, writeLayout } from "./local";
import { MediaType } from "./media-types";
import { OciStore } from "./store";
import { buildImage, buildIndex, makeTar, type TestEntry } from "./test-utils";

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "sm-oci-local-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function files(image: { store: OciStore; layers: import("./types").Descriptor[] }) {
  const out: Record<string, string> = {};
  for (const layer of imageLayers(image)) {
    for await (const { header, stream } of layer.entries()) {
      const chunks: Buffer[] = [];
      for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
      out[header.name] =
        header.type === "symlink" ? `-> ${header.linkname}` : Buffer.concat(chunks).toString();
    }
  }
  return out;
}

/** Pack a directory tree given as name → content into a tar (like `tar -C dir -cf - .`). */
async function tarOf(entries: Array<[string, Buffer | string]>): Promise<Buffer> {
  return makeTar(entries.map(([name, data]): TestEntry => ({ name, data })));
}

describe("OCI image layout directories", () => {
  it("writes a layout and imports it back into another store with the same digest and files", async () => {
    const a = new OciStore(tmp());
    const image = await buildImage(a, "src:1", {
      layers: [
        [
          { name: "etc/", type: "directory" },
          { name: "etc/hostname", data: "vm\n" },
        ],
        [{ name: "x", type: "symlink", linkname: "etc/hostname" }],
      ],
    });
    const layout = tmp();
    const desc = await writeLayout(image, layout, { tag: "v1" });
    expect(desc.digest).toBe(image.digest);
    const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
    expect(index.manifests[0].annotations["org.opencontainers.image.ref.name"]).toBe("v1");
    expect(JSON.parse(readFileSync(join(layout, "oci-layout"), "utf8"))).toEqual({
      imageLayoutVersion: "1.0.0",
    });

    const b = new OciStore(tmp());
    const back = await importLayout(layout, { store: b, tag: "v1" });
    expect(back.digest).toBe(image.digest);
    expect(await files(back)).toEqual({ "etc/": "", "etc/hostname": "vm\n", x: "-> etc/hostname" });
    await expect(importLayout(layout, { store: b, tag: "v2" })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_FOUND",
    });
    await expect(importLayout(tmp(), { store: b })).rejects.toMatchObject({ code: "SM_INVALID_IMAGE" });
  });

  it("writes a whole index when every platform is present, and selects a platform on import", async () => {
    const a = new OciStore(tmp());
    const idx = await buildIndex(a, "multi:1", [
      { layers: [[{ name: "arch", data: "amd64" }]], platform: { os: "linux", architecture: "amd64" } },
      { layers: [[{ name: "arch", data: "arm64" }]], platform: { os: "linux", architecture: "arm64" } },
    ]);
    const layout = tmp();
    expect((await writeLayout(idx, layout)).digest).toBe(idx.digest);
    const arm = await importLayout(layout, { store: new OciStore(tmp()), platform: "linux/arm64" });
    expect(arm.digest).toBe(idx.digest);
    expect((await files(arm)).arch).toBe("arm64");
  });
});

describe("image archives", () => {
  it("reads an OCI archive (tar of a layout)", async () => {
    const a = new OciStore(tmp());
    const image = await buildImage(a, "src:1", {
      layers: [[{ name: "hello", data: "from oci-archive" }]],
      compression: "zstd",
    });
    const layout = tmp();
    await writeLayout(image, layout, { tag: "latest" });
    const blobs = [image.digest, image.manifest.config.digest, ...image.layers.map((l) => l.digest)];
    const archive = join(tmp(), "img.tar");
    writeFileSync(
      archive,
      await tarOf([
        ["oci-layout", readFileSync(join(layout, "oci-layout"))],
        ...blobs.map((d): [string, Buffer] => [`blobs/sha256/${d.slice(7)}`, readFileSync(a.blobPath(d))]),
        ["index.json", readFileSync(join(layout, "index.json"))],
      ]),
    );
    const got = await importArchive(archive, { store: new OciStore(tmp()), tag: "latest" });
    expect(got.digest).toBe(image.digest);
    expect(got.reference).toBe(`oci-archive:${archive}:latest`);
    expect(await files(got)).toEqual({ hello: "from oci-archive" });
  });

  it("rejects an OCI archive whose blob does not match its name", async () => {
    const archive = join(tmp(), "bad.tar");
    writeFileSync(
      archive,
      await tarOf([
        ["oci-layout", '{"imageLayoutVersion":"1.0.0"}'],
        [`blobs/sha256/${"0".repeat(64)}`, "not what the name says"],
        ["index.json", '{"schemaVersion":2,"manifests":[]}'],
      ]),
    );
    const store = new OciStore(tmp());
    await expect(importArchive(archive, { store })).rejects.toMatchObject({ code: "SM_DIGEST_MISMATCH" });
    expect(await store.hasBlob(`sha256:${"0".repeat(64)}`)).toBe(false);
  });

  it("reads a docker save archive (legacy layout: <id>/layer.tar, config json, symlinked layer)", async () => {
    const layer1 = await makeTar([
      { name: "bin/", type: "directory" },
      { name: "bin/tool", data: "tool", mode: 0o755 },
    ]);
    const layer2 = await makeTar([{ name: "etc/conf", data: "conf" }]);
    const config = Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: {
          Entrypoint: ["/bin/tool"],
          Cmd: ["--help"],
          Env: ["PATH=/bin"],
          User: "app",
          WorkingDir: "/work",
          ExposedPorts: { "53/udp": {}, "80/tcp": {} },
        },
        rootfs: {
          type: "layers",
          diff_ids: [sha256Digest(layer1), sha256Digest(layer2), sha256Digest(layer1)],
        },
      }),
    );
    const cfgName = `${sha256Digest(config).slice(7)}.json`;
    const manifest = JSON.stringify([
      {
        Config: cfgName,
        RepoTags: ["tool:1.0"],
        Layers: ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
      },
    ]);
    const archive = join(tmp(), "docker.tar");
    const tarBuf = await makeTar([
      { name: "aaa/", type: "directory" },
      { name: "aaa/layer.tar", data: layer1 },
      { name: "bbb/layer.tar", data: layer2 },
      { name: "ccc/layer.tar", type: "symlink", linkname: "../aaa/layer.tar" },
      { name: cfgName, data: config },
      { name: "manifest.json", data: manifest },
      { name: "repositories", data: '{"tool":{"1.0":"ccc"}}' },
    ]);
    writeFileSync(archive, tarBuf);
    const img = await importArchive(archive, { store: new OciStore(tmp()), tag: "tool:1.0" });
    expect(img.reference).toBe(`docker-archive:${archive}:tool:1.0`);
    expect(img.layers.map((l) => l.mediaType)).toEqual([
      MediaType.OciLayer,
      MediaType.OciLayer,
      MediaType.OciLayer,
    ]);
    expect(img.layers.map((l) => l.digest)).toEqual(img.config.rootfs.diff_ids);
    expect(img.runtime).toMatchObject({
      entrypoint: ["/bin/tool"],
      cmd: ["--help"],
      user: "app",
      workingDir: "/work",
      exposedPorts: [
        { port: 53, protocol: "udp" },
        { port: 80, protocol: "tcp" },
      ],
    });
    expect(await files(img)).toEqual({ "bin/": "", "bin/tool": "tool", "etc/conf": "conf" });
    const entries = [];
    for await (const e of layerEntries(img.store, img.layers[0]!)) {
      entries.push(e.header);
      (e.stream as NodeJS.ReadableStream).resume();
    }
    expect(entries[1]).toMatchObject({
      name: "bin/tool",
      mode: 0o755,
      type: "file",
      size: 4,
      uid: 0,
      gid: 0,
    });
    expect(entries[1]!.mtime).toBeInstanceOf(Date);
    await expect(
      importArchive(archive, { store: new OciStore(tmp()), tag: "other:1" }),
    ).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_FOUND",
    });
  });

  it("says clearly when a file is no image archive", async () => {
    const p = join(tmp(), "junk.tar");
    writeFileSync(p, await tarOf([["readme.txt", "hi"]]));
    await expect(importArchive(p, { store: new OciStore(tmp()) })).rejects.toMatchObject({
      code: "SM_INVALID_IMAGE",
      message: expect.stringContaining("neither an OCI archive"),
    });
  });
});
