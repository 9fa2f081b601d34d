import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, link, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { dirname, join, posix, resolve } from "node:path";
import * as tar from "tar-stream";
import { OciError } from "./errors";
import {
  type Image,
  isIndex,
  isIndexComplete,
  loadImage,
  manifestMediaType,
  parseManifest,
  sha256Digest,
} from "./image";
import { MediaType, ociLayerMediaType, sniffCompression } from "./media-types";
import { hostPlatform, parsePlatform, selectManifest } from "./platform";
import type { ProgressListener } from "./progress";
import { isSha256Digest, parseReference } from "./reference";
import { type OciStore, toStore } from "./store";
import type { Descriptor, ImageIndex, ImageManifest, Platform } from "./types";

export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

export interface LocalOptions {
  store?: OciStore | string;
  /** Image name inside the layout/archive (`org.opencontainers.image.ref.name` or a docker RepoTag). */
  tag?: string;
  platform?: string | Platform;
  onProgress?: ProgressListener;
}

function chooseDescriptor(
  index: ImageIndex,
  tag: string | undefined,
  where: string,
  platform: Platform,
): Descriptor {
  const ms = index.manifests ?? [];
  if (tag !== undefined) {
    const hit = ms.find((m) => m.annotations?.[REF_NAME_ANNOTATION] === tag);
    if (!hit) {
      const names = ms.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter(Boolean);
      throw new OciError(
        "SM_IMAGE_NOT_FOUND",
        `no image named "${tag}" in ${where} (names there: ${names.length ? names.join(", ") : "none"})`,
      );
    }
    return hit;
  }
  if (ms.length === 1) return ms[0]!;
  if (ms.length === 0) throw new OciError("SM_IMAGE_NOT_FOUND", `${where} contains no images`);
  if (ms.every((m) => m.platform)) return selectManifest(ms, platform, where);
  const names = ms.map((m) => m.annotations?.[REF_NAME_ANNOTATION] ?? m.digest);
  throw new OciError(
    "SM_OCI_OPTIONS",
    `${where} holds ${ms.length} images; choose one with tag (one of: ${names.join(", ")})`,
  );
}

/** Copy every blob reachable from `digest` from `read` into the store (verified). */
async function importReachable(
  store: OciStore,
  read: (digest: string) => NodeJS.ReadableStream | Promise<Buffer>,
  desc: Descriptor,
  where: string,
  onProgress?: ProgressListener,
): Promise<void> {
  const put = async (d: Descriptor, kind: "manifest" | "config" | "layer") => {
    if (await store.hasBlob(d.digest, d.size)) {
      onProgress?.({ type: "blob-done", digest: d.digest, size: d.size, kind, action: "cached" });
      return;
    }
    onProgress?.({ type: "blob-start", digest: d.digest, size: d.size, kind });
    const src = read(d.digest);
    let source: Uint8Array | AsyncIterable<Uint8Array>;
    if (src instanceof Promise) source = await src;
    else source = src as AsyncIterable<Uint8Array>;
    try {
      await store.putBlob(source, { digest: d.digest, size: d.size });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new OciError("SM_INVALID_IMAGE", `${where} lacks blob ${d.digest}`, { cause: err });
      }
      throw err;
    }
    onProgress?.({ type: "blob-done", digest: d.digest, size: d.size, kind, action: "downloaded" });
  };
  await put(desc, "manifest");
  const doc = parseManifest(await store.readBlob(desc.digest), where);
  if (isIndex(doc)) {
    for (const m of doc.manifests) {
      try {
        await importReachable(store, read, m, where, onProgress);
      } catch (err) {
        // Attestations and other platforms may be absent from a partial layout: keep going.
        if (!(err as OciError).code) throw err;
      }
    }
    return;
  }
  await put(doc.config, "config");
  for (const l of doc.layers) await put(l, "layer");
}

/** Read an OCI image layout directory into the store. Reference: `oci:<abs dir>[:tag]`. */
export async function importLayout(dir: string, options: LocalOptions = {}): Promise<Image> {
  const abs = resolve(dir);
  const store = toStore(options.store);
  await store.init();
  let index: ImageIndex;
  try {
    const layout = JSON.parse(await readFile(join(abs, "oci-layout"), "utf8")) as {
      imageLayoutVersion?: string;
    };
    if (!layout.imageLayoutVersion) throw new Error("oci-layout lacks imageLayoutVersion");
    index = JSON.parse(await readFile(join(abs, "index.json"), "utf8")) as ImageIndex;
  } catch (err) {
    throw new OciError("SM_INVALID_IMAGE", `${abs} is not an OCI image layout (oci-layout + index.json)`, {
      cause: err,
    });
  }
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const desc = chooseDescriptor(index, options.tag, abs, platform);
  const read = (digest: string) => {
    if (!isSha256Digest(digest)) throw new OciError("SM_INVALID_IMAGE", `unsupported digest ${digest}`);
    return createReadStream(join(abs, "blobs", "sha256", digest.slice(7)));
  };
  await importReachable(store, read, desc, abs, options.onProgress);
  const reference = `oci:${abs}${options.tag !== undefined ? `:${options.tag}` : ""}`;
  await store.setRef(reference, desc.digest, desc.mediaType);
  return loadImage(store, reference, desc.digest, { platform });
}

interface ArchiveFile {
  digest: string;
  size: number;
}

/**
 * Read an image archive into the store: an OCI archive (a tar of an OCI layout) or a
 * `docker save` tar (manifest.json + config + layer tars; newer docker writes both forms).
 * Reference: `oci-archive:<abs path>[:tag]` or `docker-archive:<abs path>[:tag]`.
 */
export async function importArchive(file: string, options: LocalOptions = {}): Promise<Image> {
  const abs = resolve(file);
  const src = createReadStream(abs);
  const suffix = options.tag !== undefined ? `:${options.tag}` : "";
  return importArchiveStream(src, abs, (kind) => `${kind}:${abs}${suffix}`, options);
}

/**
 * Read an archive from a stream (a file, a daemon's `GET /images/{name}/get`) into the store and
 * record it under `reference(kind)`. `where` names the source in error messages.
 */
export async function importArchiveStream(
  src: NodeJS.ReadableStream,
  where: string,
  reference: (kind: "oci-archive" | "docker-archive") => string,
  options: LocalOptions = {},
): Promise<Image> {
  const abs = where;
  const store = toStore(options.store);
  await store.init();
  const files = new Map<string, ArchiveFile>();
  const links = new Map<string, string>();
  const json = new Map<string, Buffer>();
  const extract = tar.extract();
  src.on("error", (err) => extract.destroy(err));
  src.pipe(extract);
  try {
    for await (const entry of extract) {
      const name = posix.normalize(entry.header.name).replace(/^\.?\/+/, "");
      const type = entry.header.type;
      if (type === "symlink" || type === "link") {
        const target = entry.header.linkname ?? "";
        links.set(name, type === "link" ? posix.normalize(target) : posix.join(posix.dirname(name), target));
        entry.resume();
        continue;
      }
      if (type !== "file" && type !== "contiguous-file") {
        entry.resume();
        continue;
      }
      if (/^(index\.json|oci-layout|manifest\.json|repositories)$/.test(name)) {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        json.set(name, Buffer.concat(chunks));
        continue;
      }
      const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
      const r = await store.putBlob(
        entry as AsyncIterable<Uint8Array>,
        m ? { digest: `sha256:${m[1]}` } : {},
      );
      files.set(name, r);
    }
  } catch (err) {
    if ((err as OciError).code === "SM_DIGEST_MISMATCH") throw err;
    throw new OciError(
      "SM_INVALID_IMAGE",
      `${abs} is not a readable image archive (tar): ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const lookup = (p: string): ArchiveFile | undefined => {
    let name = posix.normalize(p).replace(/^\.?\/+/, "");
    for (let i = 0; i < 8 && links.has(name); i++) name = links.get(name)!;
    return files.get(name);
  };
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();

  const indexBytes = json.get("index.json");
  if (indexBytes && json.has("oci-layout")) {
    const index = JSON.parse(indexBytes.toString("utf8")) as ImageIndex;
    let desc: Descriptor;
    if (
      options.tag !== undefined &&
      !index.manifests.some((m) => m.annotations?.[REF_NAME_ANNOTATION] === options.tag)
    ) {
      // Docker ≥ 25 names images with io.containerd.image.name; match a RepoTag there too.
      const want = normaliseTag(options.tag);
      const hit = index.manifests.find(
        (m) =>
          normaliseTag(m.annotations?.["io.containerd.image.name"] ?? "") === want ||
          normaliseTag(m.annotations?.[REF_NAME_ANNOTATION] ?? "") === want,
      );
      if (!hit) throw new OciError("SM_IMAGE_NOT_FOUND", `no image named "${options.tag}" in ${abs}`);
      desc = hit;
    } else {
      desc = chooseDescriptor(index, options.tag, abs, platform);
    }
    await importReachable(store, (d) => store.readBlob(d), desc, abs, options.onProgress);
    const ref = reference("oci-archive");
    await store.setRef(ref, desc.digest, desc.mediaType);
    return loadImage(store, ref, desc.digest, { platform });
  }

  const dm = dockerManifest(json);
  if (!dm) {
    throw new OciError(
      "SM_INVALID_IMAGE",
      `${abs} is neither an OCI archive (index.json + oci-layout) nor a docker save archive (manifest.json)`,
    );
  }
  let entry = dm[0];
  if (options.tag !== undefined) {
    const want = normaliseTag(options.tag);
    entry = dm.find((e) => (e.RepoTags ?? []).some((t) => normaliseTag(t) === want));
    if (!entry) throw new OciError("SM_IMAGE_NOT_FOUND", `no image tagged "${options.tag}" in ${abs}`);
  }
  if (!entry) throw new OciError("SM_IMAGE_NOT_FOUND", `${abs} contains no images`);
  const cfg = lookup(entry.Config);
  if (!cfg) throw new OciError("SM_INVALID_IMAGE", `${abs}: config ${entry.Config} is missing`);
  const layers: Descriptor[] = [];
  for (const l of entry.Layers) {
    const f = lookup(l);
    if (!f) throw new OciError("SM_INVALID_IMAGE", `${abs}: layer ${l} is missing`);
    const head = await readHead(store, f.digest);
    layers.push({ mediaType: ociLayerMediaType(sniffCompression(head)), digest: f.digest, size: f.size });
  }
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256Digest(bytes);
  await store.putBlob(bytes, { digest, size: bytes.length });
  const ref = reference("docker-archive");
  await store.setRef(ref, digest, MediaType.OciManifest);
  return loadImage(store, ref, digest, { platform });
}

function normaliseTag(t: string): string {
  try {
    const r = parseReference(t);
    return `${r.registry}/${r.repository}:${r.tag ?? ""}`;
  } catch {
    return t;
  }
}

interface DockerSaveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

function dockerManifest(json: Map<string, Buffer>): DockerSaveEntry[] | undefined {
  const b = json.get("manifest.json");
  if (!b) return undefined;
  const doc = JSON.parse(b.toString("utf8")) as DockerSaveEntry[];
  if (!Array.isArray(doc))
    throw new OciError("SM_INVALID_IMAGE", "docker archive manifest.json is not an array");
  return doc;
}

async function readHead(store: OciStore, digest: string): Promise<Buffer> {
  const s = store.openBlob(digest, 0, 3);
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function placeBlob(store: OciStore, digest: string, destDir: string): Promise<void> {
  const dest = join(destDir, "blobs", "sha256", digest.slice(7));
  try {
    await stat(dest);
    return; // content-addressed: present means identical
  } catch {
    // copy below
  }
  const tmp = `${dest}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  try {
    await link(store.blobPath(digest), tmp);
  } catch {
    await copyFile(store.blobPath(digest), tmp);
  }
  await rename(tmp, dest);
}

/**
 * Write an image as an OCI image layout directory (created or extended; an entry with the same
 * tag is replaced). When every platform of an index is in the store the whole index is written,
 * else the selected platform's manifest. Returns the descriptor written into index.json.
 */
export async function writeLayout(
  image: Image,
  dir: string,
  options: { tag?: string } = {},
): Promise<Descriptor> {
  const abs = resolve(dir);
  const store = image.store;
  await mkdir(join(abs, "blobs", "sha256"), { recursive: true });
  let top: Descriptor;
  const blobs = new Set<string>();
  if (image.index && (await isIndexComplete(store, image.index))) {
    const bytes = await store.readBlob(image.digest);
    top = { mediaType: image.mediaType, digest: image.digest, size: bytes.length };
    await store.reachable(image.digest, blobs);
  } else {
    const d = image.manifestDescriptor;
    top = { mediaType: d.mediaType || manifestMediaType(image.manifest), digest: d.digest, size: d.size };
    if (image.index) top.platform = image.platform;
    await store.reachable(d.digest, blobs);
  }
  for (const b of blobs) await placeBlob(store, b, abs);
  if (options.tag !== undefined) top.annotations = { [REF_NAME_ANNOTATION]: options.tag };

  let index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  try {
    index = JSON.parse(await readFile(join(abs, "index.json"), "utf8")) as ImageIndex;
  } catch {
    // new layout
  }
  index.manifests = (index.manifests ?? []).filter((m) =>
    options.tag === undefined
      ? m.annotations?.[REF_NAME_ANNOTATION] !== undefined && m.digest !== top.digest
      : m.annotations?.[REF_NAME_ANNOTATION] !== options.tag,
  );
  index.manifests.push(top);
  await atomicWrite(join(abs, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await atomicWrite(join(abs, "index.json"), JSON.stringify(index));
  return top;
}

async function atomicWrite(path: string, data: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}
