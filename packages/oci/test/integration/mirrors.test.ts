// Docker Hub names served by a mirror: a real docker-registry on 127.0.0.1 stands in for the mirror
// (Docker Hub itself is not reachable from the test machines).
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type Image, importLayout, MIRRORS_ENV, OciStore, pull, push } from "../../src/index";
import { freePort, startRegistry, startTokenIssuer, type TestRegistry, type TokenIssuer } from "./helpers";

const FIXTURES_MODULE = join(__dirname, "../../../../scripts/lib/fixtures.mjs");

const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

let busybox: Image;

beforeAll(async () => {
  const mod = (await import(FIXTURES_MODULE)) as {
    fixtures(): Promise<{ images: Record<string, { layout: string }> }>;
    quietSetup(q?: boolean): void;
  };
  mod.quietSetup(true);
  const fx = (await mod.fixtures()).images.busybox;
  if (!fx) throw new Error("the busybox fixture is missing: run node scripts/setup.mjs");
  busybox = await importLayout(fx.layout, { store: new OciStore(tmp("sm-oci-mir-src-")) });
});

afterEach(() => {
  vi.unstubAllEnvs();
});

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("docker.io mapped to a mirror with SUPERMACHINE_REGISTRY_MIRRORS", () => {
  let mirror: TestRegistry;
  let pushed: string;
  beforeAll(async () => {
    mirror = await startRegistry();
    pushed = (await push(busybox, `${mirror.host}/library/alpine:latest`, { dockerConfig: false })).digest;
  });
  afterAll(async () => {
    await mirror?.stop();
  });

  for (const ref of [
    "alpine:latest",
    "alpine",
    "library/alpine",
    "docker.io/library/alpine:latest",
    "index.docker.io/library/alpine",
  ]) {
    it(`${ref} resolves at the mirror and keeps the name docker.io/library/alpine:latest`, async () => {
      vi.stubEnv(MIRRORS_ENV, `docker.io=http://${mirror.host}`);
      const store = new OciStore(tmp("sm-oci-mir-"));
      const image = await pull(ref, { store, dockerConfig: false });
      expect(image.digest).toBe(pushed);
      expect(image.reference).toBe("docker.io/library/alpine:latest");
      expect((await store.listRefs()).map((r) => r.reference)).toEqual(["docker.io/library/alpine:latest"]);
      expect(image.runtime.cmd.length + image.runtime.entrypoint.length).toBeGreaterThan(0);
    });
  }

  it("user/img names go to the same mirror (docker.io/user/img)", async () => {
    await push(busybox, `${mirror.host}/someone/tool:1`, { dockerConfig: false });
    const image = await pull("someone/tool:1", {
      store: new OciStore(tmp("sm-oci-mir-")),
      dockerConfig: false,
      mirrors: { "docker.io": `http://${mirror.host}/` }, // the option form, no environment
    });
    expect(image.reference).toBe("docker.io/someone/tool:1");
    expect(image.digest).toBe(pushed);
  });

  it("an unreachable mirror fails with SM_REGISTRY_UNREACHABLE naming the variable; nothing is left in the store", async () => {
    const port = await freePort(); // nothing listens there
    vi.stubEnv(MIRRORS_ENV, `docker.io=http://127.0.0.1:${port}`);
    const dir = tmp("sm-oci-mir-down-");
    const err = await pull("alpine:latest", { store: dir, dockerConfig: false, retryBaseMs: 20 }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: "SM_REGISTRY_UNREACHABLE",
      message: expect.stringMatching(
        new RegExp(
          `mirror http://127\\.0\\.0\\.1:${port} \\(for docker\\.io, from ${MIRRORS_ENV}\\).*fix or remove`,
        ),
      ),
    });
    const blobs = join(dir, "blobs", "sha256");
    expect(existsSync(blobs) ? readdirSync(blobs) : []).toEqual([]);
    expect(await new OciStore(dir).listRefs()).toEqual([]);
    expect(readdirSync(join(dir, "tmp"))).toEqual([]);
  });

  it("an https:// mirror that speaks plain HTTP: SM_REGISTRY_UNREACHABLE saying the TLS handshake failed", async () => {
    vi.stubEnv(MIRRORS_ENV, `docker.io=https://${mirror.host}`);
    await expect(
      pull("alpine", { store: tmp("sm-oci-mir-"), dockerConfig: false, retryBaseMs: 20 }),
    ).rejects.toMatchObject({
      code: "SM_REGISTRY_UNREACHABLE",
      message: expect.stringMatching(
        /^registry mirror https:.*the TLS handshake with .* failed .*use an http:\/\/ URL/,
      ),
    });
  });

  it("a malformed mirror list fails with SM_OCI_OPTIONS before any request, even for a cached image", async () => {
    const store = new OciStore(tmp("sm-oci-mir-"));
    vi.stubEnv(MIRRORS_ENV, `docker.io=http://${mirror.host}`);
    await pull("alpine", { store, dockerConfig: false });
    vi.stubEnv(MIRRORS_ENV, `docker.io=${mirror.host}`);
    await expect(pull("alpine", { store, dockerConfig: false })).rejects.toMatchObject({
      code: "SM_OCI_OPTIONS",
      message: expect.stringContaining(`needs a scheme: http://${mirror.host}`),
    });
    vi.stubEnv(MIRRORS_ENV, `hub=http://${mirror.host}`);
    await expect(pull("127.0.0.1:1/x", { store, dockerConfig: false })).rejects.toMatchObject({
      code: "SM_OCI_OPTIONS",
      message: expect.stringContaining("not a registry an image name can refer to"),
    });
  });

  it("push ignores the environment's mirrors (it goes to the registry named)", async () => {
    vi.stubEnv(MIRRORS_ENV, "docker.io=http://127.0.0.1:1");
    const r = await push(busybox, `${mirror.host}/library/other:1`, { dockerConfig: false });
    expect(r.digest).toBe(pushed);
  });
});

describe("a mirror behind the bearer-token flow", () => {
  let issuer: TokenIssuer;
  let mirror: TestRegistry;
  beforeAll(async () => {
    issuer = await startTokenIssuer({ username: "mirror-user", password: "mirror-pw" });
    mirror = await startRegistry({
      kind: "token",
      realm: issuer.realm,
      service: issuer.service,
      issuer: issuer.issuer,
      certPath: issuer.certPath,
    });
  });
  afterAll(async () => {
    await mirror?.stop();
    await issuer?.stop();
  });

  it("gets a token for the mirror with the mirror host's credentials and pulls alpine from it", async () => {
    const credentials = { [mirror.host]: { username: "mirror-user", password: "mirror-pw" } };
    await push(busybox, `${mirror.host}/library/alpine:3`, { credentials, dockerConfig: false });
    vi.stubEnv(MIRRORS_ENV, `docker.io=http://${mirror.host}`);
    const before = issuer.requests.length;
    const image = await pull("alpine:3", {
      store: new OciStore(tmp("sm-oci-mir-tok-")),
      credentials,
      dockerConfig: false,
    });
    expect(image.reference).toBe("docker.io/library/alpine:3");
    expect(image.digest).toBe(busybox.digest);
    expect(issuer.requests.slice(before)).toEqual([
      { scopes: ["repository:library/alpine:pull"], authorized: true },
    ]);
  });
});
