// Helpers for this package's tests (not exported from the package entry).
import { execFileSync } from "node:child_process";
import { gzipSync } from "node:zlib";
import * as tar from "tar-stream";
import { type Image, loadImage, sha256Digest } from "./image";
import { type Compression, MediaType, ociLayerMediaType } from "./media-types";
import type { OciStore } from "./store";
import type { ContainerConfig, ImageIndex, ImageManifest, Platform } from "./types";

export interface TestEntry {
  name: string;
  data?: string | Buffer;
  type?: "file" | "directory" | "symlink" | "link";
  linkname?: string;
  mode?: number;
}

export async function makeTar(entries: TestEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const data = e.data === undefined ? undefined : Buffer.from(e.data);
    await new Promise<void>((resolve, reject) => {
      const header: Partial<tar.Header> & { name: string } = {
        name: e.name,
        type: e.type ?? "file",
        mode: e.mode ?? (e.type === "directory" ? 0o755 : 0o644),
        mtime: new Date(1_700_000_000_000),
        uid: 0,
        gid: 0,
      };
      if (e.linkname !== undefined) header.linkname = e.linkname;
      pack.entry(header, data ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function compress(buf: Buffer, c: Compression): Buffer {
  if (c === "gzip") return gzipSync(buf);
  if (c === "zstd") return execFileSync("zstd", ["-q", "-c", "-3"], { input: buf, maxBuffer: 1 << 30 });
  return buf;
}

export interface BuildOptions {
  layers: TestEntry[][];
  compression?: Compression;
  config?: ContainerConfig;
  platform?: Platform;
  dockerMediaTypes?: boolean;
}

/** Build a single-platform image into the store; returns its manifest digest + bytes. */
export async function buildManifest(
  store: OciStore,
  o: BuildOptions,
): Promise<{ digest: string; size: number; mediaType: string; manifest: ImageManifest }> {
  const c = o.compression ?? "gzip";
  const layers = [];
  const diffIds = [];
  for (const entries of o.layers) {
    const raw = await makeTar(entries);
    diffIds.push(sha256Digest(raw));
    const blob = compress(raw, c);
    const r = await store.putBlob(blob);
    layers.push({
      mediaType: o.dockerMediaTypes ? MediaType.DockerLayerGzip : ociLayerMediaType(c),
      digest: r.digest,
      size: r.size,
    });
  }
  const platform = o.platform ?? { os: "linux", architecture: "amd64" };
  const configDoc = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created: "2024-01-01T00:00:00Z",
    config: o.config ?? { Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: diffIds },
  };
  const cfgBytes = Buffer.from(JSON.stringify(configDoc));
  const cfg = await store.putBlob(cfgBytes);
  const mediaType = o.dockerMediaTypes ? MediaType.DockerManifest : MediaType.OciManifest;
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: o.dockerMediaTypes ? MediaType.DockerConfig : MediaType.OciConfig, ...cfg },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const r = await store.putBlob(bytes);
  return { digest: r.digest, size: r.size, mediaType, manifest };
}

export async function buildImage(store: OciStore, reference: string, o: BuildOptions): Promise<Image> {
  const m = await buildManifest(store, o);
  await store.setRef(reference, m.digest, m.mediaType);
  return loadImage(store, reference, m.digest, o.platform ? { platform: o.platform } : {});
}

/** An index over several single-platform images. */
export async function buildIndex(
  store: OciStore,
  reference: string,
  images: BuildOptions[],
  platform: Platform = { os: "linux", architecture: "amd64" },
): Promise<Image> {
  const manifests = [];
  for (const o of images) {
    const m = await buildManifest(store, o);
    manifests.push({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: o.platform! });
  }
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  const r = await store.putBlob(Buffer.from(JSON.stringify(index)));
  await store.setRef(reference, r.digest, MediaType.OciIndex);
  return loadImage(store, reference, r.digest, { platform });
}
