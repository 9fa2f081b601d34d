import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  credentialsFromDockerConfig,
  describeCredentials,
  dockerConfigKeyHost,
  parseWwwAuthenticate,
} from "./auth";

describe("parseWwwAuthenticate", () => {
  it("parses a registry Bearer challenge", () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.test/token",service="registry.test",scope="repository:samalba/my-app:pull,push"',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.test/token",
          service: "registry.test",
          scope: "repository:samalba/my-app:pull,push",
        },
      },
    ]);
  });

  it("parses Basic, lowercases scheme and parameter names, keeps value case", () => {
    expect(parseWwwAuthenticate('BASIC Realm="Registry Realm"')).toEqual([
      { scheme: "basic", params: { realm: "Registry Realm" } },
    ]);
  });

  it("splits several challenges and handles unquoted values, spaces and escapes", () => {
    expect(
      parseWwwAuthenticate(
        'Basic realm="a, b", Bearer realm=http://127.0.0.1:9/t , service = "s\\"q" ,error="invalid_token"',
      ),
    ).toEqual([
      { scheme: "basic", params: { realm: "a, b" } },
      { scheme: "bearer", params: { realm: "http://127.0.0.1:9/t", service: 's"q', error: "invalid_token" } },
    ]);
  });

  it("returns nothing for an empty header", () => {
    expect(parseWwwAuthenticate("")).toEqual([]);
  });
});

describe("docker config credentials", () => {
  const dir = mkdtempSync(join(tmpdir(), "sm-oci-cfg-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("normalises config keys to host[:port]", () => {
    expect(dockerConfigKeyHost("https://Reg.Test:5000/v1/")).toBe("reg.test:5000");
    expect(dockerConfigKeyHost("127.0.0.1:5000")).toBe("127.0.0.1:5000");
  });

  it("reads auth, username/password and identitytoken entries", async () => {
    const path = join(dir, "config.json");
    writeFileSync(
      path,
      JSON.stringify({
        auths: {
          "https://127.0.0.1:5000/v1/": { auth: Buffer.from("bob:pa:ss").toString("base64") },
          "127.0.0.1:6000": { username: "carol", password: "pw" },
          "127.0.0.1:7000": { auth: Buffer.from("dave:").toString("base64"), identitytoken: "refresh-me" },
        },
      }),
    );
    expect(await credentialsFromDockerConfig("127.0.0.1:5000", path)).toMatchObject({
      kind: "basic",
      username: "bob",
      password: "pa:ss",
    });
    expect(await credentialsFromDockerConfig("127.0.0.1:6000", path)).toMatchObject({ username: "carol" });
    const id = await credentialsFromDockerConfig("127.0.0.1:7000", path);
    expect(id).toMatchObject({ kind: "identity", token: "refresh-me", username: "dave" });
    expect(await credentialsFromDockerConfig("127.0.0.1:8000", path)).toBeUndefined();
    expect(await credentialsFromDockerConfig("127.0.0.1:5000", join(dir, "missing.json"))).toBeUndefined();
    // Descriptions never contain the secret.
    expect(describeCredentials(id)).not.toContain("refresh-me");
    expect(describeCredentials(await credentialsFromDockerConfig("127.0.0.1:5000", path))).not.toContain(
      "pa:ss",
    );
  });

  it("finds Docker Hub's login under the key docker login writes (https://index.docker.io/v1/)", async () => {
    const path = join(dir, "hub.json");
    writeFileSync(
      path,
      JSON.stringify({
        auths: { "https://index.docker.io/v1/": { auth: Buffer.from("hubuser:hubpw").toString("base64") } },
      }),
    );
    expect(await credentialsFromDockerConfig("docker.io", path)).toMatchObject({
      kind: "basic",
      username: "hubuser",
    });
    // a mirror's host is not Docker Hub: its own entry or nothing
    expect(await credentialsFromDockerConfig("127.0.0.1:5000", path)).toBeUndefined();
  });
});
