/** Progress events emitted by pull, push, import and copy (a CLI renders them as bars). */
export type ProgressEvent =
  | { type: "manifest-resolved"; reference: string; digest: string; mediaType: string }
  | { type: "blob-start"; digest: string; size: number; kind: BlobKind }
  | { type: "blob-progress"; digest: string; done: number; total: number; kind: BlobKind }
  | {
      type: "blob-done";
      digest: string;
      size: number;
      kind: BlobKind;
      action: "downloaded" | "cached" | "uploaded" | "mounted" | "exists";
    }
  | { type: "image-done"; reference: string; digest: string };

export type BlobKind = "manifest" | "config" | "layer";

export type ProgressListener = (event: ProgressEvent) => void;

/** Run `fn` over `items` with at most `limit` in flight; the first error stops new work and is thrown. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed: { err: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failed.err;
  return results;
}
