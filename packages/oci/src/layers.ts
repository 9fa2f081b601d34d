import { Transform, type TransformCallback } from "node:stream";
import { createGunzip } from "node:zlib";
import { Decompress } from "fzstd";
import * as tar from "tar-stream";
import { OciError } from "./errors";
import type { Image } from "./image";
import { type Compression, layerCompression } from "./media-types";
import type { OciStore } from "./store";
import type { Descriptor } from "./types";

/** The tar-stream header shape (what rootfs consumes). */
export interface TarHeader {
  name: string;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: Date;
  type?: string | null;
  linkname?: string | null;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string> | null;
}

export interface TarEntry {
  header: TarHeader;
  /** The entry's content. Read it (or leave it: unread content is skipped when the next entry is requested). */
  stream: NodeJS.ReadableStream;
}

/** A layer as @supermachine/rootfs consumes it (structural, no dependency between the packages). */
export interface LayerInput {
  digest: string;
  entries(): AsyncIterable<TarEntry>;
}

/** A Transform that decompresses zstd with fzstd (Node 20's zlib has no zstd). */
export function createZstdDecompress(): Transform {
  let dec: Decompress;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        dec.push(chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        dec.push(new Uint8Array(0), true);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  dec = new Decompress((data) => {
    t.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  });
  return t;
}

function decompressor(c: Compression): Transform | undefined {
  if (c === "gzip") return createGunzip();
  if (c === "zstd") return createZstdDecompress();
  return undefined;
}

/**
 * Iterate the tar entries of a layer blob in `store`: `{ header, stream }` per entry, in archive
 * order. Handles uncompressed, gzip and zstd layers (by media type). Throws
 * `SM_UNSUPPORTED_MEDIA_TYPE` for anything else.
 */
export async function* layerEntries(store: OciStore, descriptor: Descriptor): AsyncGenerator<TarEntry> {
  const compression = layerCompression(descriptor.mediaType);
  const source = store.openBlob(descriptor.digest);
  const extract = tar.extract();
  const dec = decompressor(compression);
  const fail = (err: Error) => extract.destroy(err);
  source.on("error", fail);
  if (dec) {
    dec.on("error", (err) =>
      fail(
        new OciError(
          "SM_INVALID_IMAGE",
          `layer ${descriptor.digest} is not valid ${compression}: ${err.message}`,
        ),
      ),
    );
    source.pipe(dec).pipe(extract);
  } else {
    source.pipe(extract);
  }
  try {
    for await (const entry of extract) {
      const h = entry.header as TarHeader;
      const header: TarHeader = {
        name: h.name,
        mode: h.mode ?? 0,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        size: h.size ?? 0,
        mtime: h.mtime ?? new Date(0),
        type: h.type ?? "file",
        linkname: h.linkname ?? null,
        devmajor: h.devmajor ?? 0,
        devminor: h.devminor ?? 0,
        pax: h.pax ?? null,
      };
      if (h.uname !== undefined) header.uname = h.uname;
      if (h.gname !== undefined) header.gname = h.gname;
      yield { header, stream: entry as unknown as NodeJS.ReadableStream };
      // Skip whatever the consumer did not read.
      entry.resume();
    }
  } finally {
    source.destroy();
    dec?.destroy();
    extract.destroy();
  }
}

/** The image's layers, bottom first, as `LayerInput`s for @supermachine/rootfs. */
export function imageLayers(image: Pick<Image, "store" | "layers">): LayerInput[] {
  return image.layers.map((desc) => {
    layerCompression(desc.mediaType); // fail early on unsupported media types
    return {
      digest: desc.digest,
      mediaType: desc.mediaType,
      size: desc.size,
      entries: () => layerEntries(image.store, desc),
    };
  });
}
