import { OciError } from "./errors";

/** Media types this package understands (OCI image-spec v1.1 and Docker image manifest v2 schema 2). */
export const MediaType = {
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciLayerNondistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  OciLayerNondistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  OciLayerNondistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  DockerSchema1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  DockerSchema1: "application/vnd.docker.distribution.manifest.v1+json",
} as const;

/** The Accept header sent for manifest requests, most specific first. */
export const MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.OciManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
].join(", ");

export type Compression = "none" | "gzip" | "zstd";

const LAYER_COMPRESSION: Record<string, Compression> = {
  [MediaType.OciLayer]: "none",
  [MediaType.OciLayerGzip]: "gzip",
  [MediaType.OciLayerZstd]: "zstd",
  [MediaType.OciLayerNondistributable]: "none",
  [MediaType.OciLayerNondistributableGzip]: "gzip",
  [MediaType.OciLayerNondistributableZstd]: "zstd",
  [MediaType.DockerLayerGzip]: "gzip",
  [MediaType.DockerForeignLayerGzip]: "gzip",
  // Docker uses this for uncompressed layers in some tools (e.g. buildkit without compression).
  "application/vnd.docker.image.rootfs.diff.tar": "none",
};

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

export function isConfigMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciConfig || mt === MediaType.DockerConfig;
}

/** Compression of a layer media type; throws `SM_UNSUPPORTED_MEDIA_TYPE` for anything else. */
export function layerCompression(mediaType: string): Compression {
  const c = LAYER_COMPRESSION[mediaType];
  if (c === undefined) {
    throw new OciError(
      "SM_UNSUPPORTED_MEDIA_TYPE",
      `unsupported layer media type "${mediaType}": supported are OCI/Docker tar layers, uncompressed, gzip or zstd.`,
    );
  }
  return c;
}

export function isLayerMediaType(mediaType: string): boolean {
  return mediaType in LAYER_COMPRESSION;
}

/** Detect compression from the first bytes of a blob (gzip 1f 8b, zstd 28 b5 2f fd). */
export function sniffCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) {
    return "zstd";
  }
  return "none";
}

/** The OCI layer media type for a compression. */
export function ociLayerMediaType(c: Compression): string {
  return c === "gzip" ? MediaType.OciLayerGzip : c === "zstd" ? MediaType.OciLayerZstd : MediaType.OciLayer;
}

/**
 * Decide what a fetched manifest document is: the Content-Type header first, then the
 * document's own `mediaType` field, then its shape. Throws `SM_UNSUPPORTED_MEDIA_TYPE`.
 */
export function classifyManifest(
  contentType: string | undefined,
  doc: { mediaType?: unknown; manifests?: unknown; layers?: unknown; schemaVersion?: unknown },
  what: string,
): "index" | "manifest" {
  const ct = contentType?.split(";")[0]?.trim();
  const candidates = [ct, typeof doc.mediaType === "string" ? doc.mediaType : undefined];
  for (const mt of candidates) {
    if (mt === undefined || mt === "" || mt === "application/json" || mt === "application/octet-stream")
      continue;
    if (isIndexMediaType(mt)) return "index";
    if (isManifestMediaType(mt)) return "manifest";
    throw new OciError(
      "SM_UNSUPPORTED_MEDIA_TYPE",
      `${what}: unsupported manifest media type "${mt}" (supported: OCI image index/manifest, Docker manifest list / v2 schema 2). Docker schema 1 images must be converted first.`,
    );
  }
  if (Array.isArray(doc.manifests)) return "index";
  if (Array.isArray(doc.layers)) return "manifest";
  throw new OciError(
    "SM_UNSUPPORTED_MEDIA_TYPE",
    `${what}: the document is neither an image index nor a manifest.`,
  );
}
