import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { pull } from "./pull";
import { OciStore } from "./store";
import { buildImage } from "./test-utils";

const dirs: string[] = [];
function newStore(): OciStore {
  const d = mkdtempSync(join(tmpdir(), "sm-oci-store-"));
  dirs.push(d);
  return new OciStore(d);
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("OciStore", () => {
  it("stores verified content under blobs/sha256/<hex>", async () => {
    const s = newStore();
    const data = Buffer.from("hello");
    const r = await s.putBlob(data, { digest: sha(data), size: 5 });
    expect(r).toEqual({ digest: sha(data), size: 5 });
    expect(readFileSync(join(s.dir, "blobs", "sha256", sha(data).slice(7)), "utf8")).toBe("hello");
  });

  it("rejects content that does not match the digest and leaves nothing behind", async () => {
    const s = newStore();
    const claimed = sha(Buffer.from("expected"));
    await expect(s.putBlob(Buffer.from("tampered"), { digest: claimed })).rejects.toMatchObject({
      code: "SM_DIGEST_MISMATCH",
    });
    expect(await s.hasBlob(claimed)).toBe(false);
    expect(readdirSync(join(s.dir, "blobs", "sha256"))).toEqual([]);
    expect(readdirSync(join(s.dir, "tmp"))).toEqual([]);
  });

  it("rejects a blob longer or shorter than its descriptor size", async () => {
    const s = newStore();
    const data = Buffer.from("0123456789");
    await expect(s.putBlob(data, { digest: sha(data), size: 4 })).rejects.toMatchObject({
      code: "SM_DIGEST_MISMATCH",
    });
    await expect(s.putBlob(data, { digest: sha(data), size: 40 })).rejects.toMatchObject({
      code: "SM_DIGEST_MISMATCH",
    });
    expect(readdirSync(join(s.dir, "tmp"))).toEqual([]);
  });

  it("never exposes a partial blob while many writers race on the same digest", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sm-oci-store-"));
    dirs.push(dir);
    const data = randomBytes(4 << 20);
    const digest = sha(data);
    const writers = Array.from({ length: 6 }, () => {
      const store = new OciStore(dir); // separate instances, like separate processes
      async function* chunks() {
        for (let i = 0; i < data.length; i += 65536) {
          yield data.subarray(i, i + 65536);
          await new Promise((r) => setImmediate(r));
        }
      }
      return store.beginBlob({ digest, size: data.length }).then(async (w) => {
        for await (const c of chunks()) await w.write(c);
        return w.commit();
      });
    });
    const reader = new OciStore(dir);
    let observed = 0;
    let done = false;
    const poll = (async () => {
      while (!done) {
        if (await reader.hasBlob(digest)) {
          const got = readFileSync(reader.blobPath(digest));
          expect(got.length).toBe(data.length);
          expect(sha(got)).toBe(digest);
          observed++;
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    const results = await Promise.all(writers);
    done = true;
    await poll;
    expect(results.every((r) => r.digest === digest)).toBe(true);
    expect(observed).toBeGreaterThan(0);
    expect(readdirSync(join(dir, "tmp"))).toEqual([]);
  });

  it("assembles a blob written as parallel parts in any order, and verifies it", async () => {
    const s = newStore();
    const data = randomBytes((9 << 20) + 12345);
    const w = await s.beginBlob({ digest: sha(data), size: data.length });
    expect(w.supportsParts).toBe(true);
    const bounds = await w.useParts(3);
    expect(bounds[0]![0]).toBe(0);
    expect(bounds[2]![1]).toBe(data.length);
    // Last part first, then interleave the first two in small chunks.
    await w.writePart(2, data.subarray(bounds[2]![0], bounds[2]![1]));
    const step = 300_000;
    for (let o = 0; o < bounds[1]![1] - bounds[1]![0]; o += step) {
      const a0 = bounds[0]![0] + o;
      const a1 = bounds[1]![0] + o;
      if (a1 < bounds[1]![1]) await w.writePart(1, data.subarray(a1, Math.min(a1 + step, bounds[1]![1])));
      if (a0 < bounds[0]![1]) await w.writePart(0, data.subarray(a0, Math.min(a0 + step, bounds[0]![1])));
    }
    expect(await w.commit()).toEqual({ digest: sha(data), size: data.length });
    expect(sha(readFileSync(s.blobPath(sha(data))))).toBe(sha(data));

    const bad = Buffer.from(data);
    bad[bad.length - 10]! ^= 1;
    const w2 = await s.beginBlob({ digest: sha(data), size: data.length });
    const b2 = await w2.useParts(2);
    await w2.writePart(1, bad.subarray(b2[1]![0], b2[1]![1]));
    await w2.writePart(0, bad.subarray(b2[0]![0], b2[0]![1]));
    await expect(w2.commit()).rejects.toMatchObject({ code: "SM_DIGEST_MISMATCH" });
    await expect(w2.writePart(0, Buffer.alloc(1))).rejects.toThrow();
    expect(readdirSync(join(s.dir, "tmp"))).toEqual([]);
  });

  it("refuses more bytes than a part's range", async () => {
    const s = newStore();
    const data = randomBytes(8 << 20);
    const w = await s.beginBlob({ digest: sha(data), size: data.length });
    const b = await w.useParts(2);
    await expect(w.writePart(0, data.subarray(0, b[0]![1] + 1))).rejects.toMatchObject({
      code: "SM_DIGEST_MISMATCH",
    });
    await w.abort();
    expect(readdirSync(join(s.dir, "tmp"))).toEqual([]);
  });

  it("records refs atomically and lists them", async () => {
    const s = newStore();
    await s.setRef(
      "127.0.0.1:5000/a:1",
      `sha256:${"1".repeat(64)}`,
      "application/vnd.oci.image.manifest.v1+json",
    );
    await s.setRef(
      "127.0.0.1:5000/a:1",
      `sha256:${"2".repeat(64)}`,
      "application/vnd.oci.image.manifest.v1+json",
    );
    expect((await s.getRef("127.0.0.1:5000/a:1"))?.digest).toBe(`sha256:${"2".repeat(64)}`);
    expect((await s.listRefs()).map((r) => r.reference)).toEqual(["127.0.0.1:5000/a:1"]);
    expect(await s.getRef("nope")).toBeUndefined();
  });

  it("garbage-collects blobs no ref reaches, keeping referenced and young ones", async () => {
    const s = newStore();
    const keep = await buildImage(s, "keep:1", { layers: [[{ name: "k", data: "keep" }]] });
    const drop = await buildImage(s, "drop:1", { layers: [[{ name: "d", data: "drop" }]] });
    await s.deleteRef("drop:1");
    const young = await s.gc(); // default grace: everything was just written
    expect(young.removed).toEqual([]);
    // Age every blob past the grace period.
    for (const hex of readdirSync(join(s.dir, "blobs", "sha256"))) {
      utimesSync(join(s.dir, "blobs", "sha256", hex), new Date(0), new Date(0));
    }
    const r = await s.gc();
    const dropped = [drop.digest, drop.manifest.config.digest, ...drop.layers.map((l) => l.digest)];
    expect(r.removed.sort()).toEqual(dropped.sort());
    expect(r.freedBytes).toBeGreaterThan(0);
    for (const d of [keep.digest, keep.manifest.config.digest, ...keep.layers.map((l) => l.digest)]) {
      expect(await s.hasBlob(d)).toBe(true);
    }
  });

  it("pullPolicy never with nothing cached fails with SM_IMAGE_NOT_CACHED (no network)", async () => {
    const s = newStore();
    await expect(pull("127.0.0.1:9/none:1", { store: s, pullPolicy: "never" })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_CACHED",
      message: expect.stringContaining("127.0.0.1:9/none:1"),
    });
    const img = await buildImage(s, "127.0.0.1:9/cached:1", { layers: [[{ name: "f", data: "x" }]] });
    const got = await pull("127.0.0.1:9/cached:1", { store: s, pullPolicy: "never" });
    expect(got.digest).toBe(img.digest);
    await expect(
      pull("127.0.0.1:9/cached:1", { store: s, pullPolicy: "sometimes" as never }),
    ).rejects.toMatchObject({
      code: "SM_OCI_OPTIONS",
    });
  });
});
