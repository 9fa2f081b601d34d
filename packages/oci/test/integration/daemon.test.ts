// Images read through a Docker-API daemon socket. The daemon is FakeDockerDaemon (no Docker or Podman
// daemon can run here); what it serves are real `docker save` archives written by skopeo.
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Image, importLayout, loadFrom, loadFromDaemon, OciStore } from "../../src/index";
import { FakeDockerDaemon } from "./fake-docker-daemon";
import { skopeo } from "./helpers";

const FIXTURES_MODULE = join(__dirname, "../../../../scripts/lib/fixtures.mjs");

const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

let work: string;
let busyboxTar: string;
let layersTar: string;
let busybox: Image;
let daemon: FakeDockerDaemon;
let socket: string;

beforeAll(async () => {
  const mod = (await import(FIXTURES_MODULE)) as {
    fixtures(): Promise<{ images: Record<string, { ref: string; layout: string }> }>;
    quietSetup(q?: boolean): void;
  };
  mod.quietSetup(true);
  const fx = (await mod.fixtures()).images;
  work = tmp("sm-oci-daemon-");
  busyboxTar = join(work, "busybox.tar");
  layersTar = join(work, "layers.tar");
  // What `docker save alpine:latest` writes, produced from the fixture registry by skopeo.
  await skopeo([
    "copy",
    "--quiet",
    "--src-tls-verify=false",
    `docker://${fx.busybox!.ref}`,
    `docker-archive:${busyboxTar}:alpine:latest`,
  ]);
  await skopeo([
    "copy",
    "--quiet",
    "--src-tls-verify=false",
    `docker://${fx.layers!.ref}`,
    `docker-archive:${layersTar}:alpine:latest`,
  ]);
  busybox = await importLayout(fx.busybox!.layout, { store: new OciStore(tmp("sm-oci-daemon-src-")) });
  socket = join(work, "docker.sock");
  daemon = await FakeDockerDaemon.start(socket);
});

afterAll(async () => {
  await daemon?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("loadFromDaemon through the Docker Engine API on a unix socket", () => {
  it("resolves with /images/{name}/json, imports /images/{name}/get, and reuses the import while the Id is unchanged", async () => {
    const id = await daemon.load({
      names: ["alpine:latest", "docker.io/library/alpine:latest"],
      tarball: busyboxTar,
    });
    const store = new OciStore(tmp("sm-oci-daemon-st-"));
    const env = { DOCKER_HOST: daemon.dockerHost };
    daemon.requests.length = 0;
    const image = await loadFromDaemon("alpine", { store, env });
    expect(image.reference).toBe("docker-daemon:docker.io/library/alpine:latest");
    expect(image.manifest.config.digest).toBe(id);
    // The same file system as the fixture it was saved from (docker-save layers are uncompressed: digest = diff_id).
    expect(image.config.rootfs.diff_ids).toEqual(busybox.config.rootfs.diff_ids);
    expect(image.runtime).toEqual(busybox.runtime);
    expect(daemon.requests).toEqual([
      "GET /_ping",
      "GET /images/docker.io/library/alpine:latest/json",
      `GET /images/${id}/get`,
    ]);

    daemon.requests.length = 0;
    const again = await loadFromDaemon("docker.io/library/alpine:latest", { store, env });
    expect(again.digest).toBe(image.digest);
    expect(daemon.requests).not.toContain(`GET /images/${id}/get`); // cached like an archive import

    // The daemon's alpine:latest changes: the next load exports the new image.
    const id2 = await daemon.load({
      names: ["alpine:latest", "docker.io/library/alpine:latest"],
      tarball: layersTar,
    });
    daemon.requests.length = 0;
    const changed = await loadFromDaemon("alpine:latest", { store, env });
    expect(changed.manifest.config.digest).toBe(id2);
    expect(changed.digest).not.toBe(image.digest);
    expect(daemon.requests).toContain(`GET /images/${id2}/get`);
  });

  it("the docker-daemon: transport loads the same way", async () => {
    await daemon.load({ names: ["docker.io/library/bb:1"], tarball: busyboxTar });
    const prev = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = daemon.dockerHost;
    try {
      const image = await loadFrom("docker-daemon:bb:1", { store: tmp("sm-oci-daemon-st-") });
      expect(image.reference).toBe("docker-daemon:docker.io/library/bb:1");
    } finally {
      if (prev === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = prev;
    }
  });

  it("works over tcp:// too", async () => {
    const tcp = await FakeDockerDaemon.start();
    try {
      await tcp.load({ names: ["docker.io/library/alpine:latest"], tarball: busyboxTar });
      const image = await loadFromDaemon("alpine", {
        store: tmp("sm-oci-daemon-st-"),
        env: { DOCKER_HOST: tcp.dockerHost },
      });
      expect(image.config.rootfs.diff_ids).toEqual(busybox.config.rootfs.diff_ids);
    } finally {
      await tcp.stop();
    }
  });

  it("an image the daemon lacks: it is asked to pull (missing), never with pullPolicy never", async () => {
    const env = { DOCKER_HOST: daemon.dockerHost };
    const store = tmp("sm-oci-daemon-st-");
    await expect(loadFromDaemon("nope/absent:1", { store, env })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_FOUND",
      message: expect.stringMatching(
        /could not pull it: pull access denied for docker.io\/nope\/absent.*docker pull/,
      ),
    });
    daemon.requests.length = 0;
    await expect(loadFromDaemon("nope/absent:1", { store, env, pullPolicy: "never" })).rejects.toMatchObject({
      code: "SM_IMAGE_NOT_FOUND",
    });
    expect(daemon.requests).not.toContain("POST /images/create");
    // a pull the daemon can do
    daemon.pullable.set("docker.io/team/app:2", { names: ["docker.io/team/app:2"], tarball: busyboxTar });
    const image = await loadFromDaemon("team/app:2", { store, env });
    expect(image.reference).toBe("docker-daemon:docker.io/team/app:2");
  });

  it("a daemon dying mid-export leaves no ref and no partial file in the store", async () => {
    await daemon.load({ names: ["docker.io/library/cut:1"], tarball: busyboxTar });
    const dir = tmp("sm-oci-daemon-cut-");
    daemon.truncateExportAt = 700_000;
    try {
      const err = await loadFromDaemon("cut:1", {
        store: dir,
        env: { DOCKER_HOST: daemon.dockerHost },
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: "SM_DAEMON_UNREACHABLE",
        message: expect.stringMatching(
          /stopped sending the export of docker.io\/library\/cut:1 after \d+ bytes.*nothing was kept/,
        ),
      });
    } finally {
      daemon.truncateExportAt = undefined;
    }
    expect(await new OciStore(dir).listRefs()).toEqual([]);
    expect(readdirSync(join(dir, "tmp"))).toEqual([]);
  });

  it("the platform of the daemon's image must match", async () => {
    await expect(
      loadFromDaemon("alpine", {
        store: tmp("sm-oci-daemon-st-"),
        env: { DOCKER_HOST: daemon.dockerHost },
        platform: "linux/riscv64",
      }),
    ).rejects.toMatchObject({
      code: "SM_PLATFORM_NOT_FOUND",
      message: expect.stringContaining("docker pull --platform linux/riscv64"),
    });
  });
});

describe("no daemon", () => {
  it("a missing DOCKER_HOST socket: SM_DAEMON_UNREACHABLE naming it and DOCKER_HOST, nothing written", async () => {
    const missing = join(work, "gone.sock");
    const dir = join(work, "never-created-store");
    await expect(
      loadFromDaemon("alpine", { store: dir, env: { DOCKER_HOST: `unix://${missing}` } }),
    ).rejects.toMatchObject({
      code: "SM_DAEMON_UNREACHABLE",
      message: expect.stringMatching(
        new RegExp(
          `tried unix://${missing} \\(no such socket\\)\\. DOCKER_HOST=unix://${missing} is set, so only it was tried\\.`,
        ),
      ),
    });
    expect(existsSync(dir)).toBe(false);
  });

  it("without DOCKER_HOST: every default socket (docker, rootless docker, podman) is named", async () => {
    const home = join(work, "home");
    const run = join(work, "run-user");
    const err = (await loadFromDaemon("alpine", {
      store: tmp("sm-oci-daemon-st-"),
      env: { HOME: home, XDG_RUNTIME_DIR: run, SUPERMACHINE_IMAGE_SOURCE: "docker" },
    }).catch((e: unknown) => e)) as { code: string; message: string };
    if (existsSync("/var/run/docker.sock") || existsSync("/run/podman/podman.sock")) return; // a real daemon here
    expect(err.code).toBe("SM_DAEMON_UNREACHABLE");
    for (const s of [
      "/var/run/docker.sock",
      `${run}/docker.sock`,
      `${home}/.docker/run/docker.sock`,
      `${run}/podman/podman.sock`,
      "/run/podman/podman.sock",
    ]) {
      expect(err.message).toContain(`unix://${s} (no such socket)`);
    }
    expect(err.message).toContain("DOCKER_HOST is not set");
    expect(err.message).toContain("unset SUPERMACHINE_IMAGE_SOURCE");
  });
});
