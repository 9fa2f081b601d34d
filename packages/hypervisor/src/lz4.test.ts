import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { LZ4_LEGACY_MAGIC, lz4DecodeBlock, lz4DecodeLegacy } from "./lz4";
import { findExecutable } from "./process";

describe("LZ4", () => {
  it("decodes a hand-made block with an overlapping match (run-length)", () => {
    // token: 1 literal, match len 15+extra; literal 'a'; offset 1; extra length 5 → 4+15+5 = 24 copies
    const block = Buffer.from([0x1f, 0x61, 0x01, 0x00, 0x05, 0x10, 0x62]);
    expect(lz4DecodeBlock(block).toString()).toBe(`${"a".repeat(25)}b`);
  });

  it("rejects an offset pointing before the output start", () => {
    expect(() => lz4DecodeBlock(Buffer.from([0x10, 0x61, 0x05, 0x00]))).toThrow(/offset/);
  });

  it("rejects data without the legacy magic", () => {
    expect(() => lz4DecodeLegacy(Buffer.from([1, 2, 3, 4, 5, 6]))).toThrow(/magic/);
  });

  it.skipIf(!findExecutable("lz4"))("round-trips multi-block legacy frames made by the lz4 CLI", () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 40; i++) {
      parts.push(randomBytes(100_000));
      parts.push(Buffer.alloc(200_000, i));
      parts.push(Buffer.from("supermachine ".repeat(10_000)));
    }
    const input = Buffer.concat(parts); // ~16 MB → several 8 MiB legacy blocks
    const framed = execFileSync("lz4", ["-l", "-c", "-1"], { input, maxBuffer: 1 << 28 });
    expect(framed.readUInt32LE(0)).toBe(LZ4_LEGACY_MAGIC);
    expect(lz4DecodeLegacy(framed).equals(input)).toBe(true);
  });
});
