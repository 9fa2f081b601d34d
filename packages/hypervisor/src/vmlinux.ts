/**
 * bzImage → ELF vmlinux with a PVH entry note, for booting x86_64 kernels on QEMU microvm.
 * Setup header layout: Documentation/arch/x86/boot.rst (THE LINUX/x86 BOOT PROTOCOL).
 */
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { decompress as zstdDecompress } from "fzstd";
import { HypervisorError } from "./errors";
import { lz4DecodeLegacy } from "./lz4";

/** Offsets in the bzImage setup header (boot protocol 2.08+). */
const SETUP_SECTS_OFFSET = 0x1f1;
const HEADER_MAGIC_OFFSET = 0x202; // "HdrS"
const PAYLOAD_OFFSET_OFFSET = 0x248;
const PAYLOAD_LENGTH_OFFSET = 0x24c;
/** ELF note type XEN_ELFNOTE_PHYS32_ENTRY (the PVH entry point), owner "Xen". */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export type KernelCompression = "lz4" | "gzip" | "zstd" | "xz" | "none";

export interface BzImagePayload {
  compression: KernelCompression;
  /** Compressed payload bytes (a view into the bzImage). */
  payload: Buffer;
}

function formatError(file: string, what: string, cause?: unknown): HypervisorError {
  return new HypervisorError(
    "SM_KERNEL_FORMAT",
    `${file}: ${what}. Provide an x86_64 bzImage (boot protocol >= 2.08) or an ELF vmlinux with a PVH note.`,
    { cause, details: { file } },
  );
}

/** Detect the compression of a kernel payload from its magic bytes. */
export function detectCompression(b: Uint8Array): KernelCompression | "unknown" {
  if (b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46) return "none";
  if (b[0] === 0x1f && (b[1] === 0x8b || b[1] === 0x9e)) return "gzip";
  if (b[0] === 0x02 && b[1] === 0x21 && b[2] === 0x4c && b[3] === 0x18) return "lz4";
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return "zstd";
  if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58 && b[4] === 0x5a && b[5] === 0x00)
    return "xz";
  return "unknown";
}

/** Locate the compressed kernel inside a bzImage using the setup header. */
export function parseBzImage(image: Buffer, file = "bzImage"): BzImagePayload {
  if (
    image.length < 0x260 ||
    image.toString("latin1", HEADER_MAGIC_OFFSET, HEADER_MAGIC_OFFSET + 4) !== "HdrS"
  ) {
    throw formatError(file, "not a bzImage (no 'HdrS' setup header magic at 0x202)");
  }
  let setupSects = image.readUInt8(SETUP_SECTS_OFFSET);
  if (setupSects === 0) setupSects = 4; // boot protocol: 0 means 4
  const protectedModeStart = (setupSects + 1) * 512;
  const payloadOffset = image.readUInt32LE(PAYLOAD_OFFSET_OFFSET);
  const payloadLength = image.readUInt32LE(PAYLOAD_LENGTH_OFFSET);
  const start = protectedModeStart + payloadOffset;
  if (payloadLength === 0 || start + payloadLength > image.length) {
    throw formatError(
      file,
      `payload ${payloadOffset}+${payloadLength} lies outside the file (boot protocol < 2.08?)`,
    );
  }
  const payload = image.subarray(start, start + payloadLength);
  const compression = detectCompression(payload);
  if (compression === "unknown") {
    throw formatError(
      file,
      `unsupported payload compression (magic ${payload.subarray(0, 6).toString("hex")}); supported: lz4, gzip, zstd, xz`,
    );
  }
  return { compression, payload };
}

/** Decompress a kernel payload. The kernel build appends a 4-byte size to lz4/zstd/xz payloads. */
export function decompressPayload(p: BzImagePayload, file = "bzImage"): Buffer {
  const { payload } = p;
  const sizeHint = payload.length >= 4 ? payload.readUInt32LE(payload.length - 4) : undefined;
  try {
    switch (p.compression) {
      case "none":
        return payload;
      case "lz4":
        return lz4DecodeLegacy(payload, sizeHint && sizeHint < 1 << 30 ? sizeHint : undefined);
      case "gzip":
        return gunzipSync(payload);
      case "zstd": {
        try {
          return Buffer.from(zstdDecompress(payload));
        } catch {
          return Buffer.from(zstdDecompress(payload.subarray(0, payload.length - 4)));
        }
      }
      case "xz": {
        try {
          return execFileSync("xz", ["-dc", "--single-stream"], { input: payload, maxBuffer: 1 << 30 });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") {
            throw new HypervisorError(
              "SM_KERNEL_FORMAT",
              `${file}: the kernel payload is xz-compressed and the 'xz' tool is not installed. Install it (apt-get install xz-utils / brew install xz) or provide an uncompressed vmlinux.`,
              { cause: err, details: { file } },
            );
          }
          throw err;
        }
      }
    }
  } catch (err) {
    if (err instanceof HypervisorError) throw err;
    throw formatError(file, `${p.compression} payload failed to decompress`, err);
  }
}

/** Find the PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY) in an ELF64 image; undefined when absent. */
export function findPvhEntry(elf: Buffer): number | undefined {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) return undefined;
  if (elf[4] !== 2 || elf[5] !== 1) return undefined; // ELFCLASS64, little-endian
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) return undefined;
    if (elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const off = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 32));
    let p = off;
    const end = Math.min(off + size, elf.length);
    while (p + 12 <= end) {
      const namesz = elf.readUInt32LE(p);
      const descsz = elf.readUInt32LE(p + 4);
      const type = elf.readUInt32LE(p + 8);
      const nameStart = p + 12;
      const descStart = nameStart + ((namesz + 3) & ~3);
      const name = elf.toString("latin1", nameStart, nameStart + Math.max(0, namesz - 1));
      if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY && descStart + 4 <= end) {
        return descsz >= 8 ? Number(elf.readBigUInt64LE(descStart)) : elf.readUInt32LE(descStart);
      }
      p = descStart + ((descsz + 3) & ~3);
    }
  }
  return undefined;
}

/** Convert a bzImage (buffer) to an ELF vmlinux with a PVH note, verifying the result. */
export function bzImageToVmlinux(image: Buffer, file = "bzImage"): Buffer {
  if (detectCompression(image) === "none") {
    if (findPvhEntry(image) === undefined)
      throw formatError(file, "ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
    return image;
  }
  const elf = decompressPayload(parseBzImage(image, file), file);
  if (elf.length < 4 || elf.readUInt32BE(0) !== 0x7f454c46)
    throw formatError(file, "decompressed payload is not an ELF file");
  if (findPvhEntry(elf) === undefined) {
    throw formatError(file, "decompressed vmlinux has no PVH entry note (kernel built without CONFIG_PVH)");
  }
  return elf;
}

/**
 * Ensure an ELF `vmlinux` exists next to the bzImage `kernelPath` (or at `outPath`) and return its path.
 * Written atomically (temp file + rename); re-derived when older than the bzImage.
 */
export function ensureVmlinux(kernelPath: string, outPath = join(dirname(kernelPath), "vmlinux")): string {
  if (!existsSync(kernelPath)) {
    throw new HypervisorError(
      "SM_KERNEL_NOT_FOUND",
      `kernel ${kernelPath} does not exist. Run \`npx supermachine setup\` to provision a kernel bundle.`,
      {
        details: { file: kernelPath },
      },
    );
  }
  if (existsSync(outPath) && statSync(outPath).mtimeMs >= statSync(kernelPath).mtimeMs) return outPath;
  const image = readFileSync(kernelPath);
  const elf = bzImageToVmlinux(image, kernelPath);
  mkdirSync(dirname(outPath), { recursive: true });
  const tmp = `${outPath}.tmp-${process.pid}-${Date.now()}`;
  try {
    writeFileSync(tmp, elf, { mode: 0o644 });
    renameSync(tmp, outPath);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw err;
  }
  return outPath;
}
