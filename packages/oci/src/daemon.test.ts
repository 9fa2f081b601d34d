import { describe, expect, it } from "vitest";
import { daemonEndpoints, IMAGE_SOURCE_ENV, imageSourceFromEnv } from "./daemon";
import { parseLocation } from "./transport";

describe("SUPERMACHINE_IMAGE_SOURCE", () => {
  it("is registry by default, docker when asked", () => {
    expect(imageSourceFromEnv({})).toBe("registry");
    expect(imageSourceFromEnv({ [IMAGE_SOURCE_ENV]: "" })).toBe("registry");
    expect(imageSourceFromEnv({ [IMAGE_SOURCE_ENV]: "registry" })).toBe("registry");
    expect(imageSourceFromEnv({ [IMAGE_SOURCE_ENV]: " Docker " })).toBe("docker");
  });

  it("an unknown value is SM_OCI_OPTIONS naming the variable and the accepted values", () => {
    expect(() => imageSourceFromEnv({ [IMAGE_SOURCE_ENV]: "containerd" })).toThrow(
      expect.objectContaining({
        code: "SM_OCI_OPTIONS",
        message: expect.stringMatching(
          /SUPERMACHINE_IMAGE_SOURCE="containerd" is not an image source\. Use "docker".*"registry".*unset it/,
        ),
      }),
    );
  });
});

describe("daemon endpoints", () => {
  it("DOCKER_HOST alone when set: unix://, a bare path, tcp:// (default port 2375)", () => {
    expect(daemonEndpoints({ env: { DOCKER_HOST: "unix:///run/user/5/podman/podman.sock" } })).toEqual([
      {
        kind: "unix",
        path: "/run/user/5/podman/podman.sock",
        label: "unix:///run/user/5/podman/podman.sock",
      },
    ]);
    expect(daemonEndpoints({ env: { DOCKER_HOST: "/tmp/d.sock" } })[0]).toMatchObject({
      path: "/tmp/d.sock",
    });
    expect(daemonEndpoints({ env: { DOCKER_HOST: "tcp://10.0.0.2" } })).toEqual([
      { kind: "tcp", host: "10.0.0.2", port: 2375, label: "tcp://10.0.0.2" },
    ]);
    expect(daemonEndpoints({ host: "tcp://h:1234", env: { DOCKER_HOST: "unix:///x" } })[0]).toMatchObject({
      host: "h",
      port: 1234,
    });
  });

  it("without DOCKER_HOST: docker's, rootless docker's, Docker Desktop's, podman's rootless and rootful sockets", () => {
    const eps = daemonEndpoints({ env: { HOME: "/home/u", XDG_RUNTIME_DIR: "/run/user/1000" } });
    expect(eps.map((e) => e.label)).toEqual([
      "unix:///var/run/docker.sock",
      "unix:///run/user/1000/docker.sock",
      "unix:///home/u/.docker/run/docker.sock",
      "unix:///run/user/1000/podman/podman.sock",
      "unix:///run/podman/podman.sock",
    ]);
  });

  it("unsupported DOCKER_HOST forms are SM_OCI_OPTIONS naming DOCKER_HOST", () => {
    for (const v of ["ssh://me@host", "npipe:////./pipe/docker_engine", "unix://", "just-words"]) {
      expect(() => daemonEndpoints({ env: { DOCKER_HOST: v } })).toThrow(
        expect.objectContaining({
          code: "SM_OCI_OPTIONS",
          message: expect.stringContaining(`DOCKER_HOST=${JSON.stringify(v)}`),
        }),
      );
    }
    expect(() => daemonEndpoints({ env: { DOCKER_HOST: "tcp://h:2376", DOCKER_TLS_VERIFY: "1" } })).toThrow(
      expect.objectContaining({
        code: "SM_OCI_OPTIONS",
        message: expect.stringContaining("DOCKER_TLS_VERIFY"),
      }),
    );
  });
});

it("docker-daemon:REF is a location (skopeo's transport name)", () => {
  expect(parseLocation("docker-daemon:alpine:3")).toEqual({
    transport: "docker-daemon",
    reference: "alpine:3",
  });
});
