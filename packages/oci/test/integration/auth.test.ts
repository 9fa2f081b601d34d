import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Image, OciStore, pull, push, RegistryClient } from "../../src/index";
import { buildImage } from "../../src/test-utils";
import { skopeo, startRegistry, startTokenIssuer, type TestRegistry, type TokenIssuer } from "./helpers";

const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

const USER = "alice";
const PASS = "s3cret-Pa55";
let image: Image;

beforeAll(async () => {
  const store = new OciStore(tmp("sm-oci-auth-src-"));
  image = await buildImage(store, "local/auth", {
    layers: [[{ name: "a.txt", data: "auth test\n" }], [{ name: "b.txt", data: "second layer\n" }]],
  });
});

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("registry with htpasswd basic auth", () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ kind: "htpasswd", username: USER, password: PASS });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it("pushes and pulls with credentials; skopeo with the same credentials sees the same digest", async () => {
    const credentials = { [reg.host]: { username: USER, password: PASS } };
    await push(image, `${reg.host}/private/app:1`, { credentials, dockerConfig: false });
    const pulled = await pull(`${reg.host}/private/app:1`, {
      store: new OciStore(tmp("sm-oci-auth-")),
      credentials,
      dockerConfig: false,
    });
    expect(pulled.digest).toBe(image.digest);
    const out = JSON.parse(
      await skopeo([
        "inspect",
        "--tls-verify=false",
        "--creds",
        `${USER}:${PASS}`,
        `docker://${reg.host}/private/app:1`,
      ]),
    ) as { Digest: string };
    expect(out.Digest).toBe(image.digest);
  });

  it("fails with SM_REGISTRY_AUTH naming what was tried, never the secret", async () => {
    const store = new OciStore(tmp("sm-oci-auth-"));
    await expect(pull(`${reg.host}/private/app:1`, { store, dockerConfig: false })).rejects.toMatchObject({
      code: "SM_REGISTRY_AUTH",
      message: expect.stringContaining("anonymous"),
    });
    const err = (await pull(`${reg.host}/private/app:1`, {
      store,
      dockerConfig: false,
      credentials: { [reg.host]: { username: USER, password: "wrong-password-xyz" } },
    }).catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe("SM_REGISTRY_AUTH");
    expect(err.message).toContain(`"${USER}"`);
    expect(err.message).not.toContain("wrong-password-xyz");
  });

  it("reads ~/.docker/config.json auths", async () => {
    const dir = tmp("sm-oci-dockercfg-");
    const auth = Buffer.from(`${USER}:${PASS}`).toString("base64");
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ auths: { [`http://${reg.host}/v1/`]: { auth } } }),
    );
    const pulled = await pull(`${reg.host}/private/app:1`, {
      store: new OciStore(tmp("sm-oci-auth-")),
      dockerConfig: join(dir, "config.json"),
    });
    expect(pulled.digest).toBe(image.digest);
  });

  it("runs a docker-credential-* helper named in credHelpers", async () => {
    const dir = tmp("sm-oci-helper-");
    const helper = join(dir, "docker-credential-smtest");
    // A real executable speaking the credential-helper protocol: `get`, server URL on stdin, JSON out.
    writeFileSync(
      helper,
      `#!/bin/sh\nread server\nif [ "$1" = get ] && [ "$server" = "${reg.host}" ]; then\n  printf '{"ServerURL":"%s","Username":"${USER}","Secret":"${PASS}"}' "$server"\nelse\n  echo "credentials not found in native keychain"; exit 1\nfi\n`,
    );
    chmodSync(helper, 0o755);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ credHelpers: { [reg.host]: "smtest" } }));
    const oldPath = process.env.PATH;
    process.env.PATH = `${dir}:${oldPath}`;
    try {
      const client = new RegistryClient({ dockerConfig: join(dir, "config.json") });
      const creds = await client.credentialsFor(reg.host);
      expect(creds).toMatchObject({
        kind: "basic",
        username: USER,
        source: expect.stringContaining("smtest"),
      });
      const pulled = await pull(`${reg.host}/private/app:1`, {
        store: new OciStore(tmp("sm-oci-auth-")),
        client,
      });
      expect(pulled.digest).toBe(image.digest);
      await client.close();
    } finally {
      process.env.PATH = oldPath;
    }
  });
});

describe("registry with bearer token auth (token issuer signing JWTs the registry trusts)", () => {
  let issuer: TokenIssuer;
  let reg: TestRegistry;
  beforeAll(async () => {
    issuer = await startTokenIssuer({
      username: USER,
      password: PASS,
      refreshToken: "rt-identity-123",
      anonymousPull: true,
    });
    reg = await startRegistry({
      kind: "token",
      realm: issuer.realm,
      service: issuer.service,
      issuer: issuer.issuer,
      certPath: issuer.certPath,
    });
  });
  afterAll(async () => {
    await reg?.stop();
    await issuer?.stop();
  });

  it("pushes and pulls through the token flow, caching one token per scope", async () => {
    const credentials = { [reg.host]: { username: USER, password: PASS } };
    await push(image, `${reg.host}/tok/app:1`, { credentials, dockerConfig: false });
    const before = issuer.requests.length;
    const client = new RegistryClient({ credentials, dockerConfig: false });
    const pulled = await pull(`${reg.host}/tok/app:1`, { store: new OciStore(tmp("sm-oci-tok-")), client });
    expect(pulled.digest).toBe(image.digest);
    const pullTokens = issuer.requests.slice(before);
    // manifest + config + 2 layers, all under one pull scope → one token request.
    expect(pullTokens).toHaveLength(1);
    expect(pullTokens[0]).toEqual({ scopes: ["repository:tok/app:pull"], authorized: true });
    await client.close();
    const out = JSON.parse(
      await skopeo([
        "inspect",
        "--tls-verify=false",
        "--creds",
        `${USER}:${PASS}`,
        `docker://${reg.host}/tok/app:1`,
      ]),
    ) as { Digest: string };
    expect(out.Digest).toBe(image.digest);
  });

  it("reuses a cached token while valid and fetches a new one once it expires", async () => {
    const credentials = { [reg.host]: { username: USER, password: PASS } };
    const client = new RegistryClient({ credentials, dockerConfig: false });
    const store = new OciStore(tmp("sm-oci-tok-"));
    issuer.expiresInS = 3; // the client refreshes early: this token is reused for ~1 s
    try {
      await pull(`${reg.host}/tok/app:1`, { store, client, pullPolicy: "always" });
      const n = issuer.requests.length;
      await pull(`${reg.host}/tok/app:1`, { store, client, pullPolicy: "always" });
      expect(issuer.requests.length).toBe(n); // cached
      await new Promise((r) => setTimeout(r, 1200));
      await pull(`${reg.host}/tok/app:1`, { store, client, pullPolicy: "always" });
      expect(issuer.requests.length).toBe(n + 1); // refreshed
    } finally {
      issuer.expiresInS = 300;
      await client.close();
    }
  });

  it("pulls anonymously (pull-only token) but may not push without credentials", async () => {
    const pulled = await pull(`${reg.host}/tok/app:1`, {
      store: new OciStore(tmp("sm-oci-tok-")),
      dockerConfig: false,
    });
    expect(pulled.digest).toBe(image.digest);
    await expect(push(image, `${reg.host}/tok/anon:1`, { dockerConfig: false })).rejects.toMatchObject({
      code: "SM_REGISTRY_AUTH",
      message: expect.stringContaining("anonymous"),
    });
  });

  it("exchanges a docker config identitytoken with the refresh-token grant", async () => {
    const dir = tmp("sm-oci-idcfg-");
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        auths: {
          [reg.host]: { auth: Buffer.from(`${USER}:`).toString("base64"), identitytoken: "rt-identity-123" },
        },
      }),
    );
    const before = issuer.requests.length;
    await push(image, `${reg.host}/tok/id:1`, { dockerConfig: join(dir, "config.json") });
    const used = issuer.requests.slice(before);
    expect(used.length).toBeGreaterThan(0);
    expect(used.every((r) => r.authorized)).toBe(true);
    const out = JSON.parse(
      await skopeo([
        "inspect",
        "--tls-verify=false",
        "--creds",
        `${USER}:${PASS}`,
        `docker://${reg.host}/tok/id:1`,
      ]),
    ) as { Digest: string };
    expect(out.Digest).toBe(image.digest);
  });

  it("rejects bad credentials at the token service with SM_REGISTRY_AUTH", async () => {
    await expect(
      pull(`${reg.host}/tok/app:1`, {
        store: new OciStore(tmp("sm-oci-tok-")),
        dockerConfig: false,
        credentials: { [reg.host]: { username: USER, password: "nope-nope" } },
      }),
    ).rejects.toMatchObject({ code: "SM_REGISTRY_AUTH", message: expect.not.stringContaining("nope-nope") });
  });
});
