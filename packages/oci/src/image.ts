import { createHash } from "node:crypto";
import { parseImageConfig, runtimeConfig } from "./config";
import { OciError } from "./errors";
import { classifyManifest, isConfigMediaType, MediaType } from "./media-types";
import { hostPlatform, normalizePlatform, parsePlatform, selectManifest } from "./platform";
import type { OciStore } from "./store";
import type {
  Descriptor,
  ImageConfigFile,
  ImageIndex,
  ImageManifest,
  Platform,
  RuntimeConfig,
} from "./types";

/** A resolved image in a store: one platform's manifest, its config and layers. */
export interface Image {
  /** The store holding every blob of this image. */
  readonly store: OciStore;
  /** The reference it was loaded under (normalised), e.g. `127.0.0.1:5000/busybox:latest`. */
  readonly reference: string;
  /** Digest of what the reference points at (an index or a manifest) — what registries report. */
  readonly digest: string;
  /** Media type of that top-level document. */
  readonly mediaType: string;
  /** The index, when the reference points at one. */
  readonly index: ImageIndex | undefined;
  /** Descriptor of the chosen platform manifest. */
  readonly manifestDescriptor: Descriptor;
  readonly manifest: ImageManifest;
  readonly platform: Platform;
  readonly config: ImageConfigFile;
  /** The config as a runner needs it (entrypoint, cmd, env, workingDir, user, exposedPorts). */
  readonly runtime: RuntimeConfig;
  readonly layers: Descriptor[];
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Parse and validate a manifest document. */
export function parseManifest(bytes: Buffer, what: string, contentType?: string): ImageManifest | ImageIndex {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new OciError("SM_INVALID_IMAGE", `${what}: manifest is not valid JSON`, { cause: err });
  }
  if (typeof doc !== "object" || doc === null)
    throw new OciError("SM_INVALID_IMAGE", `${what}: not a JSON object`);
  if (doc.schemaVersion === 1) {
    throw new OciError(
      "SM_UNSUPPORTED_MEDIA_TYPE",
      `${what}: Docker image manifest schema 1 is not supported; re-push the image with a current tool`,
    );
  }
  const kind = classifyManifest(contentType, doc, what);
  if (kind === "index") {
    if (!Array.isArray(doc.manifests))
      throw new OciError("SM_INVALID_IMAGE", `${what}: index without manifests`);
    return doc as unknown as ImageIndex;
  }
  const m = doc as unknown as ImageManifest;
  if (!m.config || typeof m.config.digest !== "string" || !Array.isArray(m.layers)) {
    throw new OciError("SM_INVALID_IMAGE", `${what}: manifest lacks config or layers`);
  }
  if (m.config.mediaType && !isConfigMediaType(m.config.mediaType)) {
    throw new OciError(
      "SM_UNSUPPORTED_MEDIA_TYPE",
      `${what}: config media type "${m.config.mediaType}" is not a container image (an OCI artifact?)`,
    );
  }
  return m;
}

export function isIndex(doc: ImageManifest | ImageIndex): doc is ImageIndex {
  return Array.isArray((doc as ImageIndex).manifests);
}

export function manifestMediaType(doc: ImageManifest | ImageIndex): string {
  if (doc.mediaType) return doc.mediaType;
  return isIndex(doc) ? MediaType.OciIndex : MediaType.OciManifest;
}

/**
 * Assemble an Image from a store given the top-level digest. Every blob must be present
 * (else `SM_IMAGE_NOT_CACHED`), except layers when `requireLayers` is false (inspect).
 */
export async function loadImage(
  store: OciStore,
  reference: string,
  digest: string,
  options: { platform?: string | Platform; requireLayers?: boolean } = {},
): Promise<Image> {
  const want = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const top = parseManifest(await store.readBlob(digest), reference);
  let index: ImageIndex | undefined;
  let manifestDescriptor: Descriptor;
  let manifest: ImageManifest;
  if (isIndex(top)) {
    index = top;
    manifestDescriptor = selectManifest(top.manifests, want, reference);
    if (!(await store.hasBlob(manifestDescriptor.digest))) {
      throw new OciError(
        "SM_IMAGE_NOT_CACHED",
        `${reference}: the manifest for this platform (${manifestDescriptor.digest}) is not in the store`,
      );
    }
    const inner = parseManifest(await store.readBlob(manifestDescriptor.digest), reference);
    if (isIndex(inner)) throw new OciError("SM_UNSUPPORTED_MEDIA_TYPE", `${reference}: nested image indexes`);
    manifest = inner;
  } else {
    manifest = top;
    manifestDescriptor = {
      mediaType: manifestMediaType(top),
      digest,
      size: (await store.readBlob(digest)).length,
    };
  }
  const config = parseImageConfig(await store.readJson(manifest.config.digest));
  if (options.requireLayers !== false) {
    for (const l of manifest.layers) {
      if (!(await store.hasBlob(l.digest, l.size))) {
        throw new OciError("SM_IMAGE_NOT_CACHED", `${reference}: layer ${l.digest} is not in the store`);
      }
    }
  }
  const platform = normalizePlatform(
    manifestDescriptor.platform ?? {
      os: config.os,
      architecture: config.architecture,
      ...(config.variant ? { variant: config.variant } : {}),
    },
  );
  return {
    store,
    reference,
    digest,
    mediaType: manifestMediaType(top),
    index,
    manifestDescriptor,
    manifest,
    platform,
    config,
    runtime: runtimeConfig(config),
    layers: manifest.layers,
  };
}

/** Whether every manifest of an index (recursively) and all their blobs are in the store. */
export async function isIndexComplete(store: OciStore, index: ImageIndex): Promise<boolean> {
  for (const m of index.manifests) {
    if (!(await store.hasBlob(m.digest))) return false;
    const doc = parseManifest(await store.readBlob(m.digest), m.digest);
    if (isIndex(doc)) {
      if (!(await isIndexComplete(store, doc))) return false;
      continue;
    }
    if (!(await store.hasBlob(doc.config.digest))) return false;
    for (const l of doc.layers) if (!(await store.hasBlob(l.digest))) return false;
  }
  return true;
}
