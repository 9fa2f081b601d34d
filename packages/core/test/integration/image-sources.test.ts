/**
 * Where Image.build reads the image from, end to end on real VMs:
 * - SUPERMACHINE_REGISTRY_MIRRORS: a Docker Hub name (`alpine:<tag>`) resolved at a mirror (a real
 *   docker-registry on 127.0.0.1); the snapshot name and metadata keep the name as given.
 * - SUPERMACHINE_IMAGE_SOURCE=docker: the image read through a Docker-API daemon socket. The daemon is
 *   FakeDockerDaemon (no docker/podman daemon runs here) serving a real `docker save` archive.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { importLayout, OciStore, push } from "@supermachine/oci";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { fixtures } from "../../../../scripts/lib/fixtures.mjs";
import { FakeDockerDaemon } from "../../../oci/test/integration/fake-docker-daemon";
import { startRegistry, type TestRegistry } from "../../../oci/test/integration/helpers";
import { Image } from "../../src/index";
import { createDefaultRuntime } from "../../src/runtime";
import { validateBuildOptions } from "../../src/validate";

const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

// A tag of this run only: what these tests put in the shared image store cannot be mistaken for a real alpine.
const TAG = `sm-test-${process.pid}`;
let fx: Record<string, { ref: string; layout: string }>;
let snapshotsDir: string;

beforeAll(async () => {
  fx = ((await fixtures()) as { images: typeof fx }).images;
  snapshotsDir = tmp("sm-core-imgsrc-");
});

afterEach(() => {
  vi.unstubAllEnvs();
});

afterAll(async () => {
  const store = new OciStore();
  for (const r of await store.listRefs()) if (r.reference.includes(TAG)) await store.deleteRef(r.reference);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function meta(image: Image): { ref: string; imageDigest: string; name: string } {
  return JSON.parse(readFileSync(join(image.snapshotPath, "metadata.json"), "utf8"));
}

describe("Docker Hub names through SUPERMACHINE_REGISTRY_MIRRORS", () => {
  let mirror: TestRegistry;
  let digest: string;
  beforeAll(async () => {
    mirror = await startRegistry();
    const busybox = await importLayout(fx.busybox!.layout, {
      store: new OciStore(tmp("sm-core-imgsrc-st-")),
    });
    digest = (await push(busybox, `${mirror.host}/library/alpine:${TAG}`, { dockerConfig: false })).digest;
  });
  afterAll(async () => {
    await mirror?.stop();
  });

  it("alpine:<tag> bakes from the mirror; snapshot name and metadata keep the name as given", async () => {
    vi.stubEnv("SUPERMACHINE_REGISTRY_MIRRORS", `docker.io=http://${mirror.host}`);
    const image = await Image.build({ ref: `alpine:${TAG}`, snapshotsDir });
    expect(basename(image.snapshotPath)).toMatch(new RegExp(`^alpine-${TAG}-[0-9a-f]{12}$`));
    expect(meta(image)).toMatchObject({ ref: `alpine:${TAG}`, imageDigest: digest });
    // the same image under its full name: the same snapshot content, found in the image store by that name
    vi.stubEnv("SUPERMACHINE_REGISTRY_MIRRORS", "");
    const rt = createDefaultRuntime();
    const resolved = await rt.resolveImage(
      validateBuildOptions({ ref: `docker.io/library/alpine:${TAG}`, pullPolicy: "never" }),
    );
    expect(resolved.reference).toBe(`docker.io/library/alpine:${TAG}`);
    expect(resolved.digest).toBe(digest);
  });

  it("a malformed mirror list fails Image.build at once with SM_OCI_OPTIONS naming the variable", async () => {
    vi.stubEnv("SUPERMACHINE_REGISTRY_MIRRORS", "docker.io=127.0.0.1:5000");
    const t0 = Date.now();
    await expect(Image.build({ ref: `alpine:${TAG}-x`, snapshotsDir })).rejects.toMatchObject({
      code: "SM_OCI_OPTIONS",
      message: expect.stringContaining("SUPERMACHINE_REGISTRY_MIRRORS"),
    });
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe("SUPERMACHINE_IMAGE_SOURCE=docker", () => {
  let daemon: FakeDockerDaemon;
  let tarball: string;
  beforeAll(async () => {
    const work = tmp("sm-core-imgsrc-d-");
    tarball = join(work, "busybox.tar");
    execFileSync("skopeo", [
      "copy",
      "--quiet",
      "--src-tls-verify=false",
      `docker://${fx.busybox!.ref}`,
      `docker-archive:${tarball}:alpine:${TAG}`,
    ]);
    daemon = await FakeDockerDaemon.start(join(work, "docker.sock"));
    await daemon.load({ names: [`docker.io/library/alpine:${TAG}`], tarball });
  });
  afterAll(async () => {
    await daemon?.stop();
  });

  it("Image.build reads the image through the daemon socket (DOCKER_HOST), bakes and runs it", async () => {
    vi.stubEnv("SUPERMACHINE_IMAGE_SOURCE", "docker");
    vi.stubEnv("DOCKER_HOST", daemon.dockerHost);
    daemon.requests.length = 0;
    const image = await Image.build({ ref: `alpine:${TAG}`, snapshotsDir });
    expect(daemon.requests.some((r) => /^GET \/images\/sha256:[0-9a-f]{64}\/get$/.test(r))).toBe(true);
    expect(basename(image.snapshotPath)).toMatch(new RegExp(`^alpine-${TAG}-`));
    const pool = await image.pool({ min: 0, max: 1 });
    try {
      const vm = await pool.acquire();
      const out = await vm.exec({ argv: ["busybox", "echo", "from-the-daemon"] });
      expect(out.stdout.toString()).toBe("from-the-daemon\n");
      await vm.release();
    } finally {
      await pool.shutdown();
    }
    // again: the daemon's image is unchanged, so nothing is exported a second time
    daemon.requests.length = 0;
    const again = await Image.build({ ref: `alpine:${TAG}`, snapshotsDir });
    expect(again.snapshotPath).toBe(image.snapshotPath);
    expect(daemon.requests.filter((r) => r.endsWith("/get"))).toEqual([]);
  });

  it("an explicit archive source wins over the variable", async () => {
    vi.stubEnv("SUPERMACHINE_IMAGE_SOURCE", "docker");
    vi.stubEnv("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    const resolved = await createDefaultRuntime().resolveImage(
      validateBuildOptions({ ref: `alpine:${TAG}`, source: { type: "archive", path: tarball } }),
    );
    expect(resolved.reference).toMatch(/^docker-archive:/);
  });

  it("no daemon answering: SM_DAEMON_UNREACHABLE naming the socket and DOCKER_HOST, before any bake", async () => {
    vi.stubEnv("SUPERMACHINE_IMAGE_SOURCE", "docker");
    vi.stubEnv("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    const phases: string[] = [];
    await expect(
      Image.build({ ref: `alpine:${TAG}-none`, snapshotsDir, onProgress: (e) => phases.push(e.phase) }),
    ).rejects.toMatchObject({
      code: "SM_DAEMON_UNREACHABLE",
      message: expect.stringContaining(
        "tried unix:///nonexistent/docker.sock (no such socket). DOCKER_HOST=unix:///nonexistent/docker.sock is set",
      ),
    });
    expect(phases).not.toContain("boot");
  });

  it("an unknown SUPERMACHINE_IMAGE_SOURCE is SM_OCI_OPTIONS", async () => {
    vi.stubEnv("SUPERMACHINE_IMAGE_SOURCE", "dockerd");
    await expect(Image.build({ ref: `alpine:${TAG}`, snapshotsDir })).rejects.toMatchObject({
      code: "SM_OCI_OPTIONS",
      message: expect.stringContaining('SUPERMACHINE_IMAGE_SOURCE="dockerd" is not an image source'),
    });
  });
});
