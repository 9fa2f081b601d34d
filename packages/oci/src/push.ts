import { OciError } from "./errors";
import { type Image, isIndex, isIndexComplete, parseManifest } from "./image";
import { mapLimit, type ProgressListener } from "./progress";
import { formatReference, type ImageReference, parseReference } from "./reference";
import { RegistryClient, type RegistryOptions } from "./registry";
import type { OciStore } from "./store";
import type { Descriptor } from "./types";

export interface PushOptions extends RegistryOptions {
  /** Blobs above this size are uploaded in chunks (PATCH); default 64 MiB. */
  chunkSizeBytes?: number;
  /** Blobs uploaded in parallel (default 3). */
  concurrency?: number;
  /**
   * Repository on the same registry to mount blobs from instead of uploading. Default: the
   * image's own repository when it was pulled from the same registry.
   */
  mountFrom?: string;
  /** Push the whole index when every platform is in the store (default true). */
  allPlatforms?: boolean;
  onProgress?: ProgressListener;
  client?: RegistryClient;
}

export interface PushResult {
  reference: string;
  /** Digest of the pushed top-level manifest or index. */
  digest: string;
  mediaType: string;
}

async function pushManifestTree(
  client: RegistryClient,
  store: OciStore,
  ref: ImageReference,
  desc: Descriptor,
  target: string,
  options: PushOptions,
  mountFrom: string | undefined,
): Promise<void> {
  const bytes = await store.readBlob(desc.digest);
  const doc = parseManifest(bytes, formatReference(ref));
  const emit = options.onProgress;
  if (isIndex(doc)) {
    for (const m of doc.manifests) {
      await pushManifestTree(client, store, ref, m, m.digest, options, mountFrom);
    }
  } else {
    const blobs = [
      { d: doc.config, kind: "config" as const },
      ...doc.layers.map((d) => ({ d, kind: "layer" as const })),
    ];
    await mapLimit(blobs, options.concurrency ?? 3, async ({ d, kind }) => {
      emit?.({ type: "blob-start", digest: d.digest, size: d.size, kind });
      if (await client.blobExists(ref, d.digest, true)) {
        emit?.({ type: "blob-done", digest: d.digest, size: d.size, kind, action: "exists" });
        return;
      }
      if (!(await store.hasBlob(d.digest, d.size))) {
        throw new OciError("SM_IMAGE_NOT_CACHED", `cannot push ${d.digest}: it is not in the store`);
      }
      const uploadOptions: Parameters<RegistryClient["uploadBlob"]>[3] = {
        onBytes: (done) => emit?.({ type: "blob-progress", digest: d.digest, done, total: d.size, kind }),
      };
      if (mountFrom !== undefined) uploadOptions.mountFrom = mountFrom;
      if (options.chunkSizeBytes !== undefined) uploadOptions.chunkSize = options.chunkSizeBytes;
      const how = await client.uploadBlob(ref, d, (s, e) => store.openBlob(d.digest, s, e), uploadOptions);
      emit?.({ type: "blob-done", digest: d.digest, size: d.size, kind, action: how });
    });
  }
  await client.putManifest(
    ref,
    target,
    bytes,
    desc.mediaType,
    `pushing manifest ${desc.digest} to ${formatReference(ref)}`,
  );
}

/**
 * Push an image from the store to a registry: blobs (HEAD, cross-repo mount, monolithic or
 * chunked upload), then manifests (platform manifests by digest, the top level by tag).
 */
export async function push(
  image: Image,
  reference: string | ImageReference,
  options: PushOptions = {},
): Promise<PushResult> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  // Mirrors serve pulls; a push goes to the registry itself (docker and containerd do the same).
  const client = options.client ?? new RegistryClient({ mirrorsFromEnv: false, ...options });
  let mountFrom = options.mountFrom;
  if (mountFrom === undefined) {
    try {
      const src = parseReference(image.reference);
      if (src.registry === ref.registry && src.repository !== ref.repository) mountFrom = src.repository;
    } catch {
      // local image (oci:..., archive): nothing to mount from
    }
  }
  try {
    const store = image.store;
    let top: Descriptor;
    let complete = false;
    if (image.index && options.allPlatforms !== false) {
      complete = await isIndexComplete(store, image.index);
    }
    if (complete) {
      const bytes = await store.readBlob(image.digest);
      top = { mediaType: image.mediaType, digest: image.digest, size: bytes.length };
    } else {
      top = image.manifestDescriptor;
    }
    const target = ref.tag ?? ref.digest ?? "latest";
    if (ref.digest && ref.digest !== top.digest) {
      throw new OciError(
        "SM_DIGEST_MISMATCH",
        `cannot push to ${formatReference(ref)}: the image's digest is ${top.digest}`,
      );
    }
    await pushManifestTree(client, store, ref, top, target, options, mountFrom);
    options.onProgress?.({ type: "image-done", reference: formatReference(ref), digest: top.digest });
    return { reference: formatReference(ref), digest: top.digest, mediaType: top.mediaType };
  } finally {
    if (!options.client) await client.close();
  }
}
