import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { listCachedBundles } from "./kernel";
import { findExecutable } from "./process";
import { bzImageToVmlinux, ensureVmlinux, findPvhEntry, parseBzImage } from "./vmlinux";

/** A minimal ELF64 with one PT_NOTE holding a Xen PHYS32_ENTRY note (entry 0x1000000) + padding payload. */
function fakePvhElf(entry = 0x1000000, padding = 50_000): Buffer {
  const note = Buffer.alloc(12 + 4 + 4);
  note.writeUInt32LE(4, 0); // namesz "Xen\0"
  note.writeUInt32LE(4, 4); // descsz
  note.writeUInt32LE(18, 8); // XEN_ELFNOTE_PHYS32_ENTRY
  note.write("Xen\0", 12, "latin1");
  note.writeUInt32LE(entry, 16);
  const eh = Buffer.alloc(64);
  eh.writeUInt32BE(0x7f454c46, 0);
  eh[4] = 2;
  eh[5] = 1;
  eh[6] = 1;
  eh.writeBigUInt64LE(64n, 0x20); // phoff
  eh.writeUInt16LE(56, 0x36);
  eh.writeUInt16LE(1, 0x38);
  const ph = Buffer.alloc(56);
  ph.writeUInt32LE(4, 0); // PT_NOTE
  ph.writeBigUInt64LE(BigInt(64 + 56), 8);
  ph.writeBigUInt64LE(BigInt(note.length), 32);
  const pad = Buffer.alloc(padding);
  for (let i = 0; i < padding; i++) pad[i] = (i * 7) % 13 === 0 ? i & 0xff : 0x41 + (i % 5);
  return Buffer.concat([eh, ph, note, pad]);
}

/** Wrap a payload in a minimal bzImage setup header (setup_sects = 3). */
function fakeBzImage(payload: Buffer, appendSize?: number): Buffer {
  const setupSects = 3;
  const head = Buffer.alloc((setupSects + 1) * 512);
  head[0x1f1] = setupSects;
  head.write("HdrS", 0x202, "latin1");
  const pm = Buffer.alloc(0x100); // decompressor stub stand-in
  const full =
    appendSize === undefined
      ? payload
      : Buffer.concat([payload, Buffer.from(new Uint32Array([appendSize]).buffer)]);
  head.writeUInt32LE(pm.length, 0x248);
  head.writeUInt32LE(full.length, 0x24c);
  return Buffer.concat([head, pm, full, Buffer.alloc(64)]);
}

const tmp = mkdtempSync(join(tmpdir(), "sm-vmlinux-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function cli(tool: string, args: string[], input: Buffer): Buffer {
  return execFileSync(tool, args, { input, maxBuffer: 1 << 28 });
}

describe("bzImage → vmlinux", () => {
  const elf = fakePvhElf();

  it("finds the PVH entry note", () => {
    expect(findPvhEntry(elf)).toBe(0x1000000);
    expect(findPvhEntry(Buffer.from("not an elf at all, really not"))).toBeUndefined();
  });

  it("decompresses gzip payloads", () => {
    expect(bzImageToVmlinux(fakeBzImage(gzipSync(elf)))).toEqual(elf);
  });

  for (const [tool, args, name] of [
    ["lz4", ["-l", "-c", "-9"], "lz4 legacy"],
    ["zstd", ["-c", "-q"], "zstd"],
    ["xz", ["-c", "--check=crc32"], "xz"],
  ] as const) {
    it.skipIf(!findExecutable(tool))(
      `decompresses ${name} payloads with the kernel's appended size (made by the ${tool} CLI)`,
      () => {
        const compressed = cli(tool, [...args], elf);
        const image = fakeBzImage(compressed, elf.length);
        expect(parseBzImage(image).compression).toBe(name === "lz4 legacy" ? "lz4" : name);
        expect(bzImageToVmlinux(image)).toEqual(elf);
      },
    );
  }

  it("rejects a non-bzImage, an unknown compression and an ELF without PVH note with SM_KERNEL_FORMAT", () => {
    expect(() => bzImageToVmlinux(Buffer.alloc(4096))).toThrow(
      expect.objectContaining({ code: "SM_KERNEL_FORMAT" }),
    );
    expect(() => bzImageToVmlinux(fakeBzImage(Buffer.from("BZh91AY&SY-bzip2-not-supported")))).toThrow(
      /unsupported payload compression/,
    );
    const noNote = fakePvhElf();
    noNote.writeUInt32LE(99, 64 + 56 + 8); // change the note type
    expect(() => bzImageToVmlinux(fakeBzImage(gzipSync(noNote)))).toThrow(/PVH/);
  });

  it("ensureVmlinux writes next to the kernel atomically and reuses the result", () => {
    const k = join(tmp, "vmlinuz");
    writeFileSync(k, fakeBzImage(gzipSync(elf)));
    const out = ensureVmlinux(k);
    expect(out).toBe(join(tmp, "vmlinux"));
    expect(readFileSync(out)).toEqual(elf);
    const m1 = statSync(out).mtimeMs;
    utimesSync(k, new Date(m1 - 10_000), new Date(m1 - 10_000));
    expect(ensureVmlinux(k)).toBe(out);
    expect(statSync(out).mtimeMs).toBe(m1);
    expect(() => ensureVmlinux(join(tmp, "missing"))).toThrow(
      expect.objectContaining({ code: "SM_KERNEL_NOT_FOUND" }),
    );
  });

  const real = listCachedBundles("x86_64")[0];
  it.skipIf(!real)(
    "converts the real cached Debian kernel (LZ4) to an ELF with a PVH note, identical to `lz4 -dc`",
    () => {
      const image = readFileSync((real as { kernelPath: string }).kernelPath);
      const p = parseBzImage(image);
      expect(p.compression).toBe("lz4");
      const t0 = performance.now();
      const out = bzImageToVmlinux(image);
      const ms = performance.now() - t0;
      expect(findPvhEntry(out)).toBeGreaterThan(0);
      if (findExecutable("lz4")) {
        // lz4 exits non-zero on the kernel's appended 4-byte size but has written the full stream by then.
        const ref = spawnSync("lz4", ["-dc"], { input: p.payload, maxBuffer: 1 << 28 }).stdout;
        expect(out.equals(ref)).toBe(true);
      }
      expect(ms).toBeLessThan(20_000);
    },
  );
});
