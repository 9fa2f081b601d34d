import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseImageConfig, runtimeConfig } from "./config";
import { parseManifest } from "./image";
import { createZstdDecompress, layerEntries } from "./layers";
import { classifyManifest, layerCompression, MediaType, sniffCompression } from "./media-types";
import { formatPlatform, parsePlatform, selectManifest } from "./platform";
import { OciStore } from "./store";

describe("media types", () => {
  it("maps every OCI and Docker layer type to its compression", () => {
    expect(layerCompression(MediaType.OciLayer)).toBe("none");
    expect(layerCompression(MediaType.OciLayerGzip)).toBe("gzip");
    expect(layerCompression(MediaType.OciLayerZstd)).toBe("zstd");
    expect(layerCompression(MediaType.DockerLayerGzip)).toBe("gzip");
    expect(layerCompression(MediaType.OciLayerNondistributableZstd)).toBe("zstd");
  });

  it("rejects unknown layer and manifest types with SM_UNSUPPORTED_MEDIA_TYPE", () => {
    expect(() => layerCompression("application/vnd.oci.image.layer.v1.tar+lz4")).toThrow(
      expect.objectContaining({ code: "SM_UNSUPPORTED_MEDIA_TYPE" }),
    );
    expect(() => classifyManifest(MediaType.DockerSchema1Signed, {}, "x")).toThrow(
      expect.objectContaining({ code: "SM_UNSUPPORTED_MEDIA_TYPE" }),
    );
    expect(() =>
      parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 1, fsLayers: [] })), "old:1"),
    ).toThrow(
      expect.objectContaining({
        code: "SM_UNSUPPORTED_MEDIA_TYPE",
        message: expect.stringContaining("schema 1"),
      }),
    );
    const artifact = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: {
        mediaType: "application/vnd.cncf.helm.config.v1+json",
        digest: `sha256:${"0".repeat(64)}`,
        size: 1,
      },
      layers: [],
    };
    expect(() => parseManifest(Buffer.from(JSON.stringify(artifact)), "chart:1")).toThrow(
      expect.objectContaining({ code: "SM_UNSUPPORTED_MEDIA_TYPE" }),
    );
  });

  it("classifies manifests by header, then mediaType field, then shape", () => {
    expect(classifyManifest(`${MediaType.DockerManifestList}; charset=utf-8`, {}, "x")).toBe("index");
    expect(classifyManifest("application/json", { mediaType: MediaType.OciManifest }, "x")).toBe("manifest");
    expect(classifyManifest(undefined, { manifests: [] }, "x")).toBe("index");
    expect(classifyManifest(undefined, { layers: [] }, "x")).toBe("manifest");
  });

  it("sniffs compression from magic bytes", () => {
    expect(sniffCompression(Buffer.from([0x1f, 0x8b, 8, 0]))).toBe("gzip");
    expect(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe("zstd");
    expect(sniffCompression(Buffer.from("ustar"))).toBe("none");
  });

  it("decompresses zstd streams made by the zstd tool", async () => {
    const input = Buffer.from("zstd ".repeat(50_000));
    const z = execFileSync("zstd", ["-q", "-c"], { input });
    const t = createZstdDecompress();
    const out: Buffer[] = [];
    t.on("data", (c: Buffer) => out.push(c));
    const done = new Promise((r) => t.on("end", r));
    for (let i = 0; i < z.length; i += 1000) t.write(z.subarray(i, i + 1000));
    t.end();
    await done;
    expect(Buffer.concat(out).equals(input)).toBe(true);
  });

  it("layerEntries refuses a layer with an unsupported media type", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sm-oci-mt-"));
    try {
      const store = new OciStore(dir);
      const r = await store.putBlob(Buffer.from("x"));
      const it = layerEntries(store, { mediaType: "application/x-foo", digest: r.digest, size: r.size });
      await expect(it.next()).rejects.toMatchObject({ code: "SM_UNSUPPORTED_MEDIA_TYPE" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("platforms", () => {
  const d = (architecture: string, variant?: string) => ({
    mediaType: MediaType.OciManifest,
    digest: `sha256:${architecture}${variant ?? ""}`,
    size: 1,
    platform: { os: "linux", architecture, ...(variant ? { variant } : {}) },
  });
  const list = [
    { ...d("unknown"), platform: { os: "unknown", architecture: "unknown" } },
    d("amd64"),
    d("arm64", "v8"),
    d("arm", "v6"),
  ];

  it("parses os/arch[/variant] with aliases", () => {
    expect(parsePlatform("linux/arm64")).toEqual({ os: "linux", architecture: "arm64", variant: "v8" });
    expect(parsePlatform("linux/aarch64")).toEqual({ os: "linux", architecture: "arm64", variant: "v8" });
    expect(parsePlatform("linux/x86_64")).toEqual({ os: "linux", architecture: "amd64" });
    expect(formatPlatform(parsePlatform("linux/arm/7"))).toBe("linux/arm/v7");
    expect(() => parsePlatform("linux")).toThrow(expect.objectContaining({ code: "SM_OCI_OPTIONS" }));
  });

  it("selects the matching manifest, never an attestation", () => {
    expect(selectManifest(list, parsePlatform("linux/amd64"), "x").digest).toBe("sha256:amd64");
    expect(selectManifest(list, parsePlatform("linux/arm64/v8"), "x").digest).toBe("sha256:arm64v8");
    expect(selectManifest([d("arm64")], parsePlatform("linux/arm64"), "x").digest).toBe("sha256:arm64");
    expect(selectManifest(list, parsePlatform("linux/arm/v7"), "x").digest).toBe("sha256:armv6");
    expect(() => selectManifest(list, parsePlatform("linux/s390x"), "img:1")).toThrow(
      expect.objectContaining({
        code: "SM_PLATFORM_NOT_FOUND",
        message: expect.stringContaining("linux/amd64"),
      }),
    );
  });
});

describe("image config", () => {
  it("parses the runtime fields with defaults", () => {
    const cfg = parseImageConfig({
      architecture: "amd64",
      os: "linux",
      config: { Entrypoint: null, Cmd: ["sh"], ExposedPorts: { "8080": {}, "443/tcp": {}, bogus: {} } },
      rootfs: { type: "layers", diff_ids: [] },
    });
    expect(runtimeConfig(cfg)).toEqual({
      entrypoint: [],
      cmd: ["sh"],
      env: [],
      workingDir: "/",
      user: "",
      exposedPorts: [
        { port: 443, protocol: "tcp" },
        { port: 8080, protocol: "tcp" },
      ],
      labels: {},
      stopSignal: undefined,
    });
  });

  it("rejects malformed configs with SM_INVALID_IMAGE", () => {
    expect(() => parseImageConfig({ os: "linux" })).toThrow(
      expect.objectContaining({ code: "SM_INVALID_IMAGE" }),
    );
    expect(() =>
      parseImageConfig({
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [] },
        config: { Cmd: "sh" },
      }),
    ).toThrow(expect.objectContaining({ code: "SM_INVALID_IMAGE", message: expect.stringContaining("Cmd") }));
  });
});
