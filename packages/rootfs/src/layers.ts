import { createReadStream } from "node:fs";
import { PassThrough, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { extract } from "tar-stream";
import type { LayerEntry, LayerInput, TarHeader } from "./types";

/**
 * A LayerInput over a tar stream (plain or gzip, detected by magic bytes). `open` is called once per
 * `entries()` iteration. Useful for tests, benches and callers that already hold a layer blob on disk.
 */
export function tarLayer(digest: string, open: () => Readable): LayerInput {
  return {
    digest,
    entries: () => iterateTar(open()),
  };
}

/** A LayerInput reading a tar or tar.gz file from disk. */
export function tarFileLayer(path: string, digest = `file:${path}`): LayerInput {
  return tarLayer(digest, () => createReadStream(path, { highWaterMark: 1 << 20 }));
}

async function* iterateTar(source: Readable): AsyncGenerator<LayerEntry> {
  const input = await sniffGzip(source);
  const ex = extract();
  input.on("error", (err) => ex.destroy(err));
  input.pipe(ex);
  try {
    for await (const entry of ex) {
      yield { header: entry.header as TarHeader, stream: entry as unknown as AsyncIterable<Uint8Array> };
    }
  } finally {
    source.destroy();
  }
}

/** Peeks at the first bytes; pipes through gunzip when they are the gzip magic. */
async function sniffGzip(source: Readable): Promise<Readable> {
  const first: Buffer | null = await new Promise((resolve, reject) => {
    const onReadable = () => {
      cleanup();
      resolve(source.read() as Buffer | null);
    };
    const onEnd = () => {
      cleanup();
      resolve(null);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      source.off("readable", onReadable);
      source.off("end", onEnd);
      source.off("error", onError);
    };
    source.on("readable", onReadable);
    source.on("end", onEnd);
    source.on("error", onError);
  });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const isGzip = first !== null && first.length >= 2 && first[0] === 0x1f && first[1] === 0x8b;
  const sink = isGzip ? createGunzip() : out;
  if (isGzip) {
    sink.on("error", (err) => out.destroy(err));
    sink.pipe(out);
  }
  source.on("error", (err) => sink.destroy(err));
  if (first) sink.write(first);
  source.pipe(sink);
  return out;
}
