import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { importLayout, layerEntries, OciStore, pull, writeLayout } from "../../src/index";
import { skopeo } from "./helpers";

// The shared fixture images (scripts/lib/fixtures.mjs) served by the project's test registry.
const FIXTURES_MODULE = join(__dirname, "../../../../scripts/lib/fixtures.mjs");
const haveFixtures = existsSync(FIXTURES_MODULE);

interface FixtureImage {
  ref: string;
  digest: string;
  platforms: string[];
  layout: string;
}

let images: Record<string, FixtureImage> = {};
const dirs: string[] = [];
let store: OciStore;

beforeAll(async () => {
  if (!haveFixtures) return;
  const mod = (await import(FIXTURES_MODULE)) as {
    fixtures(): Promise<{ images: Record<string, FixtureImage> }>;
    quietSetup(q?: boolean): void;
  };
  mod.quietSetup(true);
  images = (await mod.fixtures()).images;
  const d = mkdtempSync(join(tmpdir(), "sm-oci-fx-"));
  dirs.push(d);
  store = new OciStore(d);
});

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// Skipped only when the fixtures module does not exist in this checkout.
describe.skipIf(!haveFixtures)("every fixture image from the shared test registry", () => {
  const names = ["busybox", "layers", "httpd", "multiarch", "debian-python"];
  for (const name of names) {
    it(`pulls ${name}: digest equals the registry's (skopeo) and the written layout passes skopeo`, async () => {
      const fx = images[name];
      expect(fx, `fixture ${name} missing`).toBeDefined();
      const image = await pull(fx!.ref, { store, allPlatforms: true, pullPolicy: "always" });
      const remote = JSON.parse(await skopeo(["inspect", "--tls-verify=false", `docker://${fx!.ref}`])) as {
        Digest: string;
      };
      expect(image.digest).toBe(fx!.digest);
      expect(image.digest).toBe(remote.Digest);

      const layout = mkdtempSync(join(tmpdir(), "sm-oci-fxl-"));
      dirs.push(layout);
      await writeLayout(image, layout, { tag: "latest" });
      const local = JSON.parse(await skopeo(["inspect", `oci:${layout}:latest`])) as {
        Digest: string;
        Layers: string[];
      };
      expect(local.Digest).toBe(remote.Digest);
      expect(local.Layers).toEqual(image.layers.map((l) => l.digest));

      // The fixture's own OCI layout imports to the same image.
      const imported = await importLayout(fx!.layout, { store, tag: "latest" });
      expect(imported.digest).toBe(fx!.digest);

      // Every layer decompresses and parses as tar.
      let entries = 0;
      for (const l of image.layers) {
        for await (const { stream } of layerEntries(store, l)) {
          entries++;
          (stream as NodeJS.ReadableStream).resume();
        }
      }
      expect(entries).toBeGreaterThan(0);
    });
  }

  it("multiarch: arm64 on request, with the manifest skopeo picks for arm64", async () => {
    const fx = images.multiarch!;
    const arm = await pull(fx.ref, { store, platform: "linux/arm64", pullPolicy: "always" });
    expect(arm.platform.architecture).toBe("arm64");
    const raw = JSON.parse(
      await skopeo(["inspect", "--tls-verify=false", "--raw", `docker://${fx.ref}`]),
    ) as {
      manifests: Array<{ digest: string; platform: { architecture: string } }>;
    };
    expect(arm.manifestDescriptor.digest).toBe(
      raw.manifests.find((m) => m.platform.architecture === "arm64")!.digest,
    );
  });
});
