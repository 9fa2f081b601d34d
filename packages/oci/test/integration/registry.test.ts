import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Image,
  importArchive,
  layerEntries,
  OciStore,
  type ProgressEvent,
  pull,
  push,
  writeLayout,
} from "../../src/index";
import { buildImage, buildIndex } from "../../src/test-utils";
import { freePort, skopeo, startProxy, startRegistry, type TestRegistry } from "./helpers";

const tmpDirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

async function readLayerFiles(image: Image): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const l of image.layers) {
    for await (const { header, stream } of layerEntries(image.store, l)) {
      const chunks: Buffer[] = [];
      for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
      files.set(header.name, Buffer.concat(chunks).toString("utf8"));
    }
  }
  return files;
}

async function skopeoDigest(ref: string, extra: string[] = []): Promise<string> {
  return (JSON.parse(await skopeo(["inspect", ...extra, ref])) as { Digest: string }).Digest;
}

let reg: TestRegistry;
let src: OciStore;

beforeAll(async () => {
  reg = await startRegistry();
  src = new OciStore(tmp("sm-oci-src-"));
});

afterAll(async () => {
  await reg?.stop();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

describe("push and pull against a real docker-registry", () => {
  it("pushes an image that skopeo sees with the same digest, pulls it back, writes a layout skopeo accepts", async () => {
    const image = await buildImage(src, "local/hello", {
      layers: [
        [
          { name: "bin/", type: "directory" },
          { name: "bin/hello", data: "#!/bin/sh\necho hi\n", mode: 0o755 },
        ],
        [{ name: "etc/motd", data: "welcome\n" }],
      ],
      config: {
        Cmd: ["/bin/hello"],
        Env: ["A=1"],
        WorkingDir: "/srv",
        User: "1000:1000",
        ExposedPorts: { "8080/tcp": {} },
      },
    });
    const pushed = await push(image, `${reg.host}/demo/hello:v1`);
    expect(pushed.digest).toBe(image.digest);
    expect(await skopeoDigest(`docker://${reg.host}/demo/hello:v1`, ["--tls-verify=false"])).toBe(
      image.digest,
    );

    const store = new OciStore(tmp("sm-oci-pull-"));
    const events: ProgressEvent[] = [];
    const pulled = await pull(`${reg.host}/demo/hello:v1`, { store, onProgress: (e) => events.push(e) });
    expect(pulled.digest).toBe(image.digest);
    expect(pulled.runtime).toMatchObject({
      cmd: ["/bin/hello"],
      env: ["A=1"],
      workingDir: "/srv",
      user: "1000:1000",
      exposedPorts: [{ port: 8080, protocol: "tcp" }],
    });
    expect(events.filter((e) => e.type === "blob-done").length).toBe(3);
    const files = await readLayerFiles(pulled);
    expect(files.get("bin/hello")).toBe("#!/bin/sh\necho hi\n");
    expect(files.get("etc/motd")).toBe("welcome\n");

    const layout = tmp("sm-oci-layout-");
    await writeLayout(pulled, layout, { tag: "v1" });
    expect(await skopeoDigest(`oci:${layout}:v1`)).toBe(image.digest);

    // A second pull with the default policy (missing) is served from the store: no downloads.
    const again: ProgressEvent[] = [];
    await pull(`${reg.host}/demo/hello:v1`, { store, onProgress: (e) => again.push(e) });
    expect(again.some((e) => e.type === "blob-start")).toBe(false);
  });

  it("reads the OCI and docker archives skopeo writes", async () => {
    const dir = tmp("sm-oci-arch-");
    await skopeo([
      "copy",
      "-q",
      "--src-tls-verify=false",
      `docker://${reg.host}/demo/hello:v1`,
      `oci-archive:${dir}/o.tar:v1`,
    ]);
    await skopeo([
      "copy",
      "-q",
      "--src-tls-verify=false",
      `docker://${reg.host}/demo/hello:v1`,
      `docker-archive:${dir}/d.tar:demo/hello:v1`,
    ]);
    const store = new OciStore(tmp("sm-oci-pull-"));
    const fromOci = await importArchive(join(dir, "o.tar"), { store, tag: "v1" });
    const remote = await pull(`${reg.host}/demo/hello:v1`, { store });
    expect(fromOci.digest).toBe(remote.digest);
    const fromDocker = await importArchive(join(dir, "d.tar"), { store, tag: "demo/hello:v1" });
    // docker-archive keeps the config and stores layers uncompressed: same config, same diff_ids.
    expect(fromDocker.manifest.config.digest).toBe(remote.manifest.config.digest);
    expect(fromDocker.layers.map((l) => l.digest)).toEqual(remote.config.rootfs.diff_ids);
    expect(await readLayerFiles(fromDocker)).toEqual(await readLayerFiles(remote));
    expect(fromDocker.runtime).toEqual(remote.runtime);
  });

  it("uploads in chunks and mounts blobs across repositories", async () => {
    const big = randomBytes(300_000).toString("base64");
    const image = await buildImage(src, "local/big", {
      layers: [[{ name: "data.txt", data: big }]],
      compression: "none",
    });
    const events: ProgressEvent[] = [];
    await push(image, `${reg.host}/chunk/big:latest`, {
      chunkSizeBytes: 64 * 1024,
      onProgress: (e) => events.push(e),
    });
    const progress = events.filter((e) => e.type === "blob-progress" && e.kind === "layer");
    expect(progress.length).toBeGreaterThan(3); // one per chunk
    expect(await skopeoDigest(`docker://${reg.host}/chunk/big:latest`, ["--tls-verify=false"])).toBe(
      image.digest,
    );

    const mounted: ProgressEvent[] = [];
    await push(image, `${reg.host}/other/big:latest`, {
      mountFrom: "chunk/big",
      onProgress: (e) => mounted.push(e),
    });
    const actions = mounted.flatMap((e) => (e.type === "blob-done" ? [e.action] : []));
    expect(actions).toContain("mounted");
    expect(actions).not.toContain("uploaded");

    const store = new OciStore(tmp("sm-oci-pull-"));
    const pulled = await pull(`${reg.host}/other/big:latest`, { store });
    expect((await readLayerFiles(pulled)).get("data.txt")).toBe(big);
  });

  it("selects the platform from an index: host default, and linux/arm64 on request", async () => {
    const index = await buildIndex(src, "local/multi", [
      { layers: [[{ name: "arch", data: "amd64\n" }]], platform: { os: "linux", architecture: "amd64" } },
      {
        layers: [[{ name: "arch", data: "arm64\n" }]],
        platform: { os: "linux", architecture: "arm64", variant: "v8" },
      },
    ]);
    await push(index, `${reg.host}/multi/arch:latest`);
    expect(
      skopeoDigest(`docker://${reg.host}/multi/arch:latest`, ["--tls-verify=false", "--raw"]) ?? "",
    ).toBeDefined();
    const store = new OciStore(tmp("sm-oci-pull-"));
    const hostArch = process.arch === "arm64" ? "arm64" : "amd64";
    const def = await pull(`${reg.host}/multi/arch:latest`, { store });
    expect(def.digest).toBe(index.digest);
    expect(def.platform.architecture).toBe(hostArch);
    expect((await readLayerFiles(def)).get("arch")).toBe(`${hostArch}\n`);
    const arm = await pull(`${reg.host}/multi/arch:latest`, {
      store,
      platform: "linux/arm64",
      pullPolicy: "always",
    });
    expect(arm.platform).toEqual({ os: "linux", architecture: "arm64", variant: "v8" });
    expect((await readLayerFiles(arm)).get("arch")).toBe("arm64\n");
    expect(arm.manifestDescriptor.digest).not.toBe(def.manifestDescriptor.digest);
    // skopeo resolves the same per-platform manifest for arm64.
    const raw = JSON.parse(
      await skopeo([
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        "--config",
        `docker://${reg.host}/multi/arch:latest`,
      ]),
    ) as { architecture: string; rootfs: { diff_ids: string[] } };
    expect(raw.architecture).toBe("arm64");
    expect(raw.rootfs.diff_ids).toEqual(arm.config.rootfs.diff_ids);
  });

  it("pulls zstd and Docker-media-type layers", async () => {
    const z = await buildImage(src, "local/zstd", {
      layers: [[{ name: "z.txt", data: "zstd layer\n" }]],
      compression: "zstd",
    });
    await push(z, `${reg.host}/fmt/zstd:1`);
    const d = await buildImage(src, "local/docker", {
      layers: [[{ name: "d.txt", data: "docker layer\n" }]],
      dockerMediaTypes: true,
    });
    await push(d, `${reg.host}/fmt/docker:1`);
    const store = new OciStore(tmp("sm-oci-pull-"));
    expect((await readLayerFiles(await pull(`${reg.host}/fmt/zstd:1`, { store }))).get("z.txt")).toBe(
      "zstd layer\n",
    );
    const pd = await pull(`${reg.host}/fmt/docker:1`, { store });
    expect(pd.mediaType).toBe("application/vnd.docker.distribution.manifest.v2+json");
    expect(await skopeoDigest(`docker://${reg.host}/fmt/docker:1`, ["--tls-verify=false"])).toBe(pd.digest);
    expect((await readLayerFiles(pd)).get("d.txt")).toBe("docker layer\n");
  });

  it("reports unknown images, unreachable registries and the never policy with stable codes", async () => {
    const store = new OciStore(tmp("sm-oci-pull-"));
    await expect(pull(`${reg.host}/demo/hello:nope`, { store })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_FOUND",
      message: expect.stringContaining(`${reg.host}/demo/hello:nope`),
    });
    await expect(pull(`${reg.host}/no/such/repo:1`, { store })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_FOUND",
    });
    const closed = `127.0.0.1:${await freePort()}`; // nothing listens there
    await expect(pull(`${closed}/x:1`, { store, retries: 2, retryBaseMs: 10 })).rejects.toMatchObject({
      code: "SM_REGISTRY_UNREACHABLE",
      message: expect.stringContaining(closed),
    });
    await expect(pull(`${reg.host}/demo/hello:v1`, { store, pullPolicy: "never" })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_CACHED",
    });
  });
});

describe("disk full mid-pull", () => {
  it("fails with the file system's error and leaves the store consistent", async (ctx) => {
    const dir = tmp("sm-oci-full-");
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir], { stdio: "ignore" });
    } catch (err) {
      ctx.skip(`cannot mount a 1 MiB tmpfs to fill up (needs root): ${(err as Error).message}`);
    }
    try {
      // 2 MiB is written on the main thread, 6 MiB through the worker-thread writer: both must fail cleanly.
      for (const mib of [2, 6]) {
        const image = await buildImage(src, `local/full${mib}`, {
          layers: [[{ name: "small", data: "fits" }], [{ name: "big", data: randomBytes(mib << 20) }]],
          compression: "none",
        });
        await push(image, `${reg.host}/full/img:${mib}`);
        const store = new OciStore(dir);
        await expect(pull(`${reg.host}/full/img:${mib}`, { store })).rejects.toMatchObject({
          code: "ENOSPC",
        });
        expect(readdirSync(join(dir, "tmp"))).toEqual([]);
        expect(await store.hasBlob(image.layers[1]!.digest)).toBe(false);
        expect(await store.getRef(`${reg.host}/full/img:${mib}`)).toBeUndefined();
        for (const hex of readdirSync(join(dir, "blobs", "sha256"))) {
          expect(
            createHash("sha256")
              .update(readFileSync(join(dir, "blobs", "sha256", hex)))
              .digest("hex"),
          ).toBe(hex);
        }
      }
    } finally {
      execFileSync("umount", [dir], { stdio: "ignore" });
    }
  });
});

describe("integrity and resumption through a tampering proxy", () => {
  let image: Image;
  beforeAll(async () => {
    // A small layer (hashed inline), a 6 MiB one (hashed on the worker thread) and a 17 MiB one
    // (fetched as two parallel byte ranges).
    image = await buildImage(src, "local/tamper", {
      layers: [
        [{ name: "payload", data: randomBytes(200_000).toString("hex") }],
        [{ name: "big", data: randomBytes(6 << 20) }],
        [{ name: "huge", data: randomBytes(17 << 20) }],
      ],
      compression: "none",
    });
    await push(image, `${reg.host}/tamper/img:1`);
  });

  it("rejects a blob with a flipped byte and leaves nothing corrupt in the store", async () => {
    const proxy = await startProxy(reg.host, { flip: true });
    const dir = tmp("sm-oci-pull-");
    const store = new OciStore(dir);
    try {
      await expect(pull(`${proxy.host}/tamper/img:1`, { store })).rejects.toMatchObject({
        code: "SM_DIGEST_MISMATCH",
      });
    } finally {
      await proxy.stop();
    }
    for (const l of image.layers) expect(await store.hasBlob(l.digest)).toBe(false);
    expect(await store.hasBlob(image.manifest.config.digest)).toBe(false);
    expect(readdirSync(join(dir, "tmp"))).toEqual([]);
    expect(await store.getRef(`${proxy.host}/tamper/img:1`)).toBeUndefined();
    // What is in the store hashes to its name.
    for (const hex of readdirSync(join(dir, "blobs", "sha256"))) {
      expect(
        createHash("sha256")
          .update(readFileSync(join(dir, "blobs", "sha256", hex)))
          .digest("hex"),
      ).toBe(hex);
    }
  });

  it("falls back to one stream when the server ignores Range", async () => {
    const proxy = await startProxy(reg.host, { noRanges: true });
    try {
      const pulled = await pull(`${proxy.host}/tamper/img:1`, { store: new OciStore(tmp("sm-oci-pull-")) });
      expect(pulled.digest).toBe(image.digest);
    } finally {
      await proxy.stop();
    }
  });

  it("follows blob redirects to another origin", async () => {
    const proxy = await startProxy(reg.host, { redirect: true });
    try {
      const pulled = await pull(`${proxy.host}/tamper/img:1`, { store: new OciStore(tmp("sm-oci-pull-")) });
      expect(pulled.digest).toBe(image.digest);
    } finally {
      await proxy.stop();
    }
  });

  it("resumes a blob download with Range after the connection drops mid-blob", async () => {
    const proxy = await startProxy(reg.host, { dropOnce: true });
    const store = new OciStore(tmp("sm-oci-pull-"));
    try {
      const pulled = await pull(`${proxy.host}/tamper/img:1`, { store, retryBaseMs: 10 });
      expect(pulled.digest).toBe(image.digest);
    } finally {
      await proxy.stop();
    }
    for (const layer of image.layers) {
      expect(proxy.rangeRequests.some((r) => r.includes(layer.digest) && /bytes=\d+-/.test(r))).toBe(true);
      expect(await store.hasBlob(layer.digest, layer.size)).toBe(true);
    }
    // The 17 MiB layer: two range requests, each dropped once and resumed mid-range.
    const huge = image.layers[2]!;
    const starts = proxy.rangeRequests
      .filter((r) => r.includes(huge.digest))
      .map((r) => Number(/bytes=(\d+)-/.exec(r)![1]));
    expect(starts.length).toBe(4);
    expect(starts.filter((x) => x === 0 || x === Math.ceil(huge.size / 2)).length).toBe(2);
  });
});
