import { createReadStream } from "node:fs";
import { pipeline, Readable, Transform } from "node:stream";
import { createGunzip } from "node:zlib";
import { Decompress } from "fzstd";
import { extract } from "tar-stream";
import type { LayerEntry, LayerInput, TarHeader } from "./types";

/**
 * A LayerInput over a tar stream (plain, gzip or zstd, detected by magic bytes). `open` is called once per
 * `entries()` iteration. Useful for tests, benches and callers that already hold a layer blob on disk.
 */
export function tarLayer(digest: string, open: () => Readable): LayerInput {
  return {
    digest,
    entries: () => iterateTar(open()),
  };
}

/** Streaming zstd decompression (pure JS, fzstd). */
function zstdStream(): Transform {
  const t: Transform = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        d.push(chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb) {
      try {
        d.push(new Uint8Array(0), true);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  const d = new Decompress((data) => {
    t.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  });
  return t;
}

/** A LayerInput reading a tar, tar.gz or tar.zst file from disk. */
export function tarFileLayer(path: string, digest = `file:${path}`): LayerInput {
  return tarLayer(digest, () => createReadStream(path, { highWaterMark: 1 << 20 }));
}

async function* iterateTar(source: Readable): AsyncGenerator<LayerEntry> {
  // Peek at the first chunk: gzip magic → gunzip in between. An empty stream is an empty layer.
  const it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await it.next();
  if (first.done) return;
  const head = first.value;
  const rest = Readable.from(
    (async function* () {
      yield head;
      for (;;) {
        const n = await it.next();
        if (n.done) return;
        yield n.value;
      }
    })(),
    { objectMode: false },
  );
  const ex = extract();
  const isGzip = head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
  const isZstd = head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528;
  // pipeline destroys every stream with the first error (truncated gzip, read error): the iteration below throws it.
  pipeline(isGzip ? [rest, createGunzip(), ex] : isZstd ? [rest, zstdStream(), ex] : [rest, ex], () => {});
  try {
    for await (const entry of ex) {
      yield { header: entry.header as TarHeader, stream: entry as unknown as AsyncIterable<Uint8Array> };
    }
  } finally {
    source.destroy();
  }
}
