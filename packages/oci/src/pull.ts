import { isOciError, OciError } from "./errors";
import { type Image, isIndex, loadImage, manifestMediaType, parseManifest, sha256Digest } from "./image";
import { hostPlatform, parsePlatform, selectManifest } from "./platform";
import { type BlobKind, mapLimit, type ProgressListener } from "./progress";
import { formatReference, type ImageReference, parseReference, referenceTarget } from "./reference";
import { RegistryClient, type RegistryOptions } from "./registry";
import { type OciStore, toStore } from "./store";
import type { Descriptor, ImageManifest, Platform } from "./types";

/** `always`: ask the registry every time; `missing` (default): only when not cached; `never`: cache only. */
export type PullPolicy = "always" | "missing" | "never";

export interface PullOptions extends RegistryOptions {
  /** Store or store directory (default `<cache>/supermachine/oci`). */
  store?: OciStore | string;
  /** `os/arch[/variant]` or a Platform (default: linux on the host architecture). */
  platform?: string | Platform;
  pullPolicy?: PullPolicy;
  /** Blobs downloaded in parallel (default 4). */
  concurrency?: number;
  /** Fetch every platform of an index (for mirroring), not only the selected one. */
  allPlatforms?: boolean;
  onProgress?: ProgressListener;
  /** Reuse a client (tokens, connections) across pulls. */
  client?: RegistryClient;
}

const POLICIES = new Set(["always", "missing", "never"]);
const MAX_CONFIG_BYTES = 8 << 20;

/**
 * Pull an image into the content-addressed store and return it. Every blob is verified
 * (sha256 + size) before it becomes visible in the store.
 */
export async function pull(reference: string | ImageReference, options: PullOptions = {}): Promise<Image> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const key = formatReference(ref);
  const policy = options.pullPolicy ?? "missing";
  if (!POLICIES.has(policy)) {
    throw new OciError(
      "SM_OCI_OPTIONS",
      `pullPolicy must be "always", "missing" or "never", got "${policy}"`,
    );
  }
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  // A malformed mirror list fails now, even when the image is cached: the setting is wrong either way.
  const client = options.client ?? new RegistryClient(options);
  try {
    return await pullWith(client, ref, key, policy, platform, options);
  } finally {
    if (!options.client) await client.close();
  }
}

async function pullWith(
  client: RegistryClient,
  ref: ImageReference,
  key: string,
  policy: PullPolicy,
  platform: Platform,
  options: PullOptions,
): Promise<Image> {
  const store = toStore(options.store);
  await store.init();

  if (policy !== "always") {
    const cached = await fromCache(store, ref, key, platform);
    if (cached) {
      options.onProgress?.({ type: "image-done", reference: key, digest: cached.digest });
      return cached;
    }
    if (policy === "never") {
      throw new OciError(
        "SM_IMAGE_NOT_CACHED",
        `image ${key} is not in the local store (${store.dir}) and pullPolicy is "never". Pull it first, or use pullPolicy "missing".`,
      );
    }
  }

  return pullFromRegistry(client, store, ref, key, platform, options);
}

async function fromCache(store: OciStore, ref: ImageReference, key: string, platform: Platform) {
  let digest: string | undefined;
  if (ref.digest && (await store.hasBlob(ref.digest))) digest = ref.digest;
  else digest = (await store.getRef(key))?.digest;
  if (!digest) return undefined;
  try {
    return await loadImage(store, key, digest, { platform });
  } catch (err) {
    if (isOciError(err, "SM_IMAGE_NOT_CACHED")) return undefined;
    throw err;
  }
}

async function fetchManifestInto(
  client: RegistryClient,
  store: OciStore,
  ref: ImageReference,
  target: string,
  expectedDigest: string | undefined,
) {
  const what = formatReference(ref);
  if (expectedDigest && (await store.hasBlob(expectedDigest))) {
    const bytes = await store.readBlob(expectedDigest);
    return { digest: expectedDigest, doc: parseManifest(bytes, what) };
  }
  const { bytes, contentType } = await client.getManifest(ref, target);
  const digest = sha256Digest(bytes);
  if (expectedDigest && digest !== expectedDigest) {
    throw new OciError(
      "SM_DIGEST_MISMATCH",
      `manifest of ${what} has digest ${digest}, but ${expectedDigest} was requested; refusing it`,
    );
  }
  const doc = parseManifest(bytes, what, contentType);
  await store.putBlob(bytes, { digest, size: bytes.length });
  return { digest, doc };
}

async function pullFromRegistry(
  client: RegistryClient,
  store: OciStore,
  ref: ImageReference,
  key: string,
  platform: Platform,
  options: PullOptions,
): Promise<Image> {
  const emit = options.onProgress;
  const top = await fetchManifestInto(client, store, ref, referenceTarget(ref), ref.digest);
  const mediaType = manifestMediaType(top.doc);
  emit?.({ type: "manifest-resolved", reference: key, digest: top.digest, mediaType });

  const manifests: ImageManifest[] = [];
  if (isIndex(top.doc)) {
    const chosen = selectManifest(top.doc.manifests, platform, key);
    const wanted = options.allPlatforms
      ? top.doc.manifests.filter((m) => m.platform?.os !== "unknown")
      : [chosen];
    for (const d of wanted) {
      const child = await fetchManifestInto(client, store, ref, d.digest, d.digest);
      if (isIndex(child.doc)) throw new OciError("SM_UNSUPPORTED_MEDIA_TYPE", `${key}: nested image indexes`);
      manifests.push(child.doc);
    }
  } else {
    manifests.push(top.doc);
  }

  const blobs = new Map<string, { desc: Descriptor; kind: BlobKind }>();
  for (const m of manifests) {
    if (m.config.size > MAX_CONFIG_BYTES) {
      throw new OciError(
        "SM_INVALID_IMAGE",
        `${key}: config blob of ${m.config.size} bytes is implausibly large`,
      );
    }
    blobs.set(m.config.digest, { desc: m.config, kind: "config" });
    for (const l of m.layers) if (!blobs.has(l.digest)) blobs.set(l.digest, { desc: l, kind: "layer" });
  }

  await mapLimit([...blobs.values()], options.concurrency ?? 4, async ({ desc, kind }) => {
    emit?.({ type: "blob-start", digest: desc.digest, size: desc.size, kind });
    if (await store.hasBlob(desc.digest, desc.size)) {
      emit?.({ type: "blob-done", digest: desc.digest, size: desc.size, kind, action: "cached" });
      return;
    }
    const writer = await store.beginBlob({ digest: desc.digest, size: desc.size });
    try {
      let last = 0;
      await client.fetchBlob(ref, desc, writer, (done) => {
        // Throttle: an event per MiB (and at the end) is plenty for a progress bar.
        if (done - last >= 1 << 20 || done === desc.size || done < last) {
          last = done;
          emit?.({ type: "blob-progress", digest: desc.digest, done, total: desc.size, kind });
        }
      });
      await writer.commit();
    } catch (err) {
      await writer.abort();
      throw err;
    }
    emit?.({ type: "blob-done", digest: desc.digest, size: desc.size, kind, action: "downloaded" });
  });

  await store.setRef(key, top.digest, mediaType);
  const image = await loadImage(store, key, top.digest, { platform });
  emit?.({ type: "image-done", reference: key, digest: top.digest });
  return image;
}

/**
 * Resolve an image's manifest and config from the registry without downloading layers.
 * Blobs fetched (manifests, config) are kept in the store.
 */
export async function inspect(
  reference: string | ImageReference,
  options: Omit<PullOptions, "pullPolicy" | "concurrency"> = {},
): Promise<Image> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const key = formatReference(ref);
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const store = toStore(options.store);
  await store.init();
  const client = options.client ?? new RegistryClient(options);
  try {
    const top = await fetchManifestInto(client, store, ref, referenceTarget(ref), ref.digest);
    let m: ImageManifest;
    if (isIndex(top.doc)) {
      const chosen = selectManifest(top.doc.manifests, platform, key);
      const child = await fetchManifestInto(client, store, ref, chosen.digest, chosen.digest);
      if (isIndex(child.doc)) throw new OciError("SM_UNSUPPORTED_MEDIA_TYPE", `${key}: nested image indexes`);
      m = child.doc;
    } else {
      m = top.doc;
    }
    if (!(await store.hasBlob(m.config.digest, m.config.size))) {
      const w = await store.beginBlob({ digest: m.config.digest, size: m.config.size });
      try {
        await client.fetchBlob(ref, m.config, w);
        await w.commit();
      } catch (err) {
        await w.abort();
        throw err;
      }
    }
    return await loadImage(store, key, top.digest, { platform, requireLayers: false });
  } finally {
    if (!options.client) await client.close();
  }
}
