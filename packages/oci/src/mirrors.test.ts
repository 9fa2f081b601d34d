import { afterEach, describe, expect, it, vi } from "vitest";
import { MIRRORS_ENV, parseMirrorList, resolveMirrors } from "./mirrors";
import { DOCKER_HUB_API, normaliseRegistry } from "./reference";
import { RegistryClient } from "./registry";

function err(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error("expected an error");
}

describe("SUPERMACHINE_REGISTRY_MIRRORS parsing", () => {
  it("maps registries to endpoints: http = plain HTTP, https = TLS, a path prefix is kept", () => {
    const m = parseMirrorList(
      " docker.io=http://127.0.0.1:5000 , ghcr.io=https://mirror.internal/ghcr/,quay.io=https://q.example:8443/v2,",
    );
    expect([...m.keys()]).toEqual(["docker.io", "ghcr.io", "quay.io"]);
    expect(m.get("docker.io")).toMatchObject({ url: "http://127.0.0.1:5000", host: "127.0.0.1:5000" });
    expect(m.get("ghcr.io")).toMatchObject({ url: "https://mirror.internal/ghcr", host: "mirror.internal" });
    expect(m.get("quay.io")?.url).toBe("https://q.example:8443");
  });

  it("accepts Docker Hub's other host names and localhost/host:port keys, normalised", () => {
    expect([...parseMirrorList("index.docker.io=https://a.example").keys()]).toEqual(["docker.io"]);
    expect([...parseMirrorList("registry-1.docker.io=https://a.example").keys()]).toEqual(["docker.io"]);
    expect([...parseMirrorList("localhost=https://a.example,Reg.Example:5000=http://b").keys()]).toEqual([
      "localhost",
      "reg.example:5000",
    ]);
    expect(parseMirrorList("")).toEqual(new Map());
  });

  const bad: Array<[string, RegExp]> = [
    ["docker.io", /no `=`/],
    ["=http://x", /registry name is missing/],
    ["docker.io=", /mirror URL is missing/],
    ["docker.io=127.0.0.1:5000", /needs a scheme: http:\/\/127.0.0.1:5000 for plain HTTP/],
    ["docker.io=ftp://m.example", /scheme must be http/],
    ["docker.io=http://not a url", /not a URL/],
    ["docker.io=http:///v2", /no host/],
    ["docker.io=https://user:pw@m.example", /credentials do not belong/],
    ["docker.io=https://m.example/?x=1", /query or fragment/],
    ["dockerhub=https://m.example", /not a registry an image name can refer to/],
    ["https://docker.io=https://m.example", /not a URL|registry name such as/],
    ["ho_st.io=https://m.example", /not a registry/],
    ["docker.io=http://a,index.docker.io=http://b", /docker.io is mapped twice/],
  ];
  for (const [spec, why] of bad) {
    it(`rejects ${JSON.stringify(spec)} with SM_OCI_OPTIONS naming the variable`, () => {
      const e = err(() => parseMirrorList(spec));
      expect(e.code).toBe("SM_OCI_OPTIONS");
      expect(e.message).toMatch(why);
      expect(e.message).toContain(MIRRORS_ENV);
      expect(e.message).toMatch(/fix the entry or remove it/);
    });
  }

  it("the option map overrides the environment per registry and names itself in errors", () => {
    const env = { [MIRRORS_ENV]: "docker.io=http://127.0.0.1:5000,ghcr.io=https://g.example" };
    const m = resolveMirrors({ "docker.io": "https://hub-mirror.example" }, "mirrors", true, env);
    expect(m.get("docker.io")?.url).toBe("https://hub-mirror.example");
    expect(m.get("ghcr.io")?.url).toBe("https://g.example");
    expect(resolveMirrors(undefined, "mirrors", false, env).size).toBe(0);
    const e = err(() => resolveMirrors({ "docker.io": "nope" }, "mirrors", true, {}));
    expect(e).toMatchObject({
      code: "SM_OCI_OPTIONS",
      message: expect.stringContaining("the mirrors option"),
    });
  });

  it("normaliseRegistry follows Docker's rule for what can be a registry", () => {
    expect(normaliseRegistry("docker.io")).toBe("docker.io");
    expect(normaliseRegistry("index.docker.io")).toBe("docker.io");
    expect(normaliseRegistry("[::1]:5000")).toBe("[::1]:5000");
    expect(normaliseRegistry("library")).toBeUndefined();
  });
});

describe("RegistryClient endpoints", () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it("sends docker.io to Docker Hub's registry API, not to docker.io", async () => {
    vi.stubEnv(MIRRORS_ENV, "");
    const c = new RegistryClient({ dockerConfig: false });
    expect(c.baseUrl("docker.io")).toBe(DOCKER_HUB_API);
    expect(DOCKER_HUB_API).toBe("https://registry-1.docker.io");
    expect(c.authHost("docker.io")).toBe("docker.io");
    await c.close();
  });

  it("uses the mirror from the environment, plain HTTP when it says http://, with the mirror's credentials", async () => {
    vi.stubEnv(MIRRORS_ENV, "docker.io=http://10.1.2.3:5000/hub,ghcr.io=https://mirror.internal");
    const seen: string[] = [];
    const c = new RegistryClient({
      dockerConfig: false,
      credentials: (host) => {
        seen.push(host);
        return undefined;
      },
    });
    expect(c.baseUrl("docker.io")).toBe("http://10.1.2.3:5000/hub");
    expect(c.baseUrl("ghcr.io")).toBe("https://mirror.internal");
    expect(c.baseUrl("quay.io")).toBe("https://quay.io");
    expect(c.mirrorFor("docker.io")?.from).toBe(MIRRORS_ENV);
    await c.credentialsFor("docker.io");
    await c.credentialsFor("quay.io");
    expect(seen).toEqual(["10.1.2.3:5000", "quay.io"]);
    await c.close();
    // push builds its client without the environment's mirrors
    expect(new RegistryClient({ mirrorsFromEnv: false }).baseUrl("docker.io")).toBe(DOCKER_HUB_API);
  });

  it("a malformed environment fails when the client is made, before any request", () => {
    vi.stubEnv(MIRRORS_ENV, "docker.io=mirror.internal");
    expect(() => new RegistryClient()).toThrow(expect.objectContaining({ code: "SM_OCI_OPTIONS" }));
  });
});
