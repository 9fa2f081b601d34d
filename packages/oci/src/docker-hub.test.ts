// The requests a Docker Hub name really makes: to registry-1.docker.io, with Docker Hub's token flow
// (auth.docker.io). Docker Hub is not reachable from the test machines, so FakeDockerHub (an undici
// MockAgent on the client's dispatcher) answers as Docker Hub does, from a locally built image.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MockAgent } from "undici";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { MIRRORS_ENV } from "./mirrors";
import { pull } from "./pull";
import { RegistryClient } from "./registry";
import { OciStore } from "./store";
import { buildImage } from "./test-utils";

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "sm-oci-hub-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
afterEach(() => {
  vi.unstubAllEnvs();
});

/** Answers like registry-1.docker.io + auth.docker.io for one repository (blobs from `store`). */
async function fakeDockerHub(store: OciStore, repository: string, tag: string, digest: string) {
  const blobs = new Map<string, Buffer>();
  const reachable = new Set<string>();
  await store.reachable(digest, reachable);
  for (const d of reachable) blobs.set(d, await store.readBlob(d));
  const agent = new MockAgent();
  agent.disableNetConnect();
  const log: string[] = [];
  const TOKEN = "hub-token-123";
  const hub = agent.get("https://registry-1.docker.io");
  hub
    .intercept({ path: (p) => p.startsWith("/v2/"), method: (m) => m === "GET" || m === "HEAD" })
    .reply((req) => {
      const auth = (req.headers as Record<string, string>).authorization;
      log.push(`${req.method} registry-1.docker.io${req.path}${auth ? ` (${auth})` : ""}`);
      if (auth !== `Bearer ${TOKEN}`) {
        return {
          statusCode: 401,
          data: JSON.stringify({ errors: [{ code: "UNAUTHORIZED" }] }),
          responseOptions: {
            headers: {
              "www-authenticate": `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:${repository}:pull"`,
            },
          },
        };
      }
      const m = new RegExp(`^/v2/${repository}/(manifests|blobs)/(.+)$`).exec(req.path);
      const target = m?.[2] === tag ? digest : m?.[2];
      const bytes = target ? blobs.get(target) : undefined;
      if (!m || !target || !bytes) return { statusCode: 404, data: "{}" };
      const headers: Record<string, string> = { "docker-content-digest": target };
      if (m[1] === "manifests") headers["content-type"] = JSON.parse(String(bytes)).mediaType;
      return { statusCode: 200, data: bytes, responseOptions: { headers } };
    })
    .persist();
  agent
    .get("https://auth.docker.io")
    .intercept({ path: (p) => p.startsWith("/token"), method: "GET" })
    .reply((req) => {
      log.push(`GET auth.docker.io${req.path}`);
      return { statusCode: 200, data: JSON.stringify({ token: TOKEN, expires_in: 300 }) };
    })
    .persist();
  return { agent, log };
}

describe("Docker Hub names", () => {
  it("alpine is fetched from registry-1.docker.io after the token dance with auth.docker.io", async () => {
    vi.stubEnv(MIRRORS_ENV, "");
    const src = new OciStore(tmp());
    const built = await buildImage(src, "x", { layers: [[{ name: "etc/os-release", data: "ID=alpine\n" }]] });
    const { agent, log } = await fakeDockerHub(src, "library/alpine", "latest", built.digest);
    const client = new RegistryClient({ dispatcher: agent, dockerConfig: false, retries: 1 });
    const image = await pull("alpine", { store: new OciStore(tmp()), client });
    expect(image.reference).toBe("docker.io/library/alpine:latest");
    expect(image.digest).toBe(built.digest);
    expect(log[0]).toBe("GET registry-1.docker.io/v2/library/alpine/manifests/latest");
    expect(log[1]).toBe(
      "GET auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull",
    );
    expect(
      log
        .slice(2)
        .every(
          (l) =>
            l.startsWith("GET registry-1.docker.io/v2/library/alpine/") &&
            l.endsWith("(Bearer hub-token-123)"),
        ),
    ).toBe(true);
    expect(log.some((l) => l.includes("docker.io/v2") && !l.includes("registry-1.docker.io"))).toBe(false);
    await client.close();
    await agent.close();
  });
});
