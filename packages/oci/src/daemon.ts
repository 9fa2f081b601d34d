/**
 * Images read through a Docker-Engine-API daemon (docker, or podman's compatible API) over its
 * socket: `GET /images/{name}/json` resolves the name, `GET /images/{name}/get` streams a
 * `docker save` archive that is imported like any archive. Nothing here needs the docker CLI.
 */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { homedir } from "node:os";
import { join } from "node:path";
import { isOciError, OciError } from "./errors";
import { type Image, loadImage } from "./image";
import { importArchiveStream } from "./local";
import { formatPlatform, hostPlatform, parsePlatform, platformMatches } from "./platform";
import type { ProgressListener } from "./progress";
import type { PullPolicy } from "./pull";
import { formatReference, type ImageReference, parseReference } from "./reference";
import { type OciStore, toStore } from "./store";
import type { Platform } from "./types";

/** `registry` (default) or `docker`: where `Image.build` in core reads images from. */
export const IMAGE_SOURCE_ENV = "SUPERMACHINE_IMAGE_SOURCE";

export type ImageSourceKind = "registry" | "docker";

/** The image source `SUPERMACHINE_IMAGE_SOURCE` selects. Unknown values throw `SM_OCI_OPTIONS`. */
export function imageSourceFromEnv(env: NodeJS.ProcessEnv = process.env): ImageSourceKind {
  const raw = env[IMAGE_SOURCE_ENV];
  if (raw === undefined || raw.trim() === "") return "registry";
  const v = raw.trim().toLowerCase();
  if (v === "docker" || v === "registry") return v;
  throw new OciError(
    "SM_OCI_OPTIONS",
    `${IMAGE_SOURCE_ENV}=${JSON.stringify(raw)} is not an image source. Use "docker" (read images from a local Docker or Podman daemon through its API socket; DOCKER_HOST is honoured) or "registry" (the default), or unset it.`,
  );
}

/** A daemon API endpoint: a unix socket or plain-HTTP TCP. */
export type DaemonEndpoint =
  | { kind: "unix"; path: string; label: string }
  | { kind: "tcp"; host: string; port: number; label: string };

export interface DaemonOptions {
  /** Store or store directory (default `<cache>/supermachine/oci`). */
  store?: OciStore | string;
  /** `os/arch[/variant]` the image must be for (default: linux on the host CPU). */
  platform?: string | Platform;
  /**
   * `missing` (default): reuse what an earlier read of the same daemon image put in the store, else
   * export it; if the daemon lacks the image it pulls it (`POST /images/create`, as `docker run` does).
   * `always`: ask the daemon to pull, then export. `never`: the daemon's own images only, never a pull.
   */
  pullPolicy?: PullPolicy;
  /** Daemon address in DOCKER_HOST syntax (`unix:///run/docker.sock`, `tcp://127.0.0.1:2375`). Default: `DOCKER_HOST`, else the usual docker and podman sockets. */
  host?: string;
  onProgress?: ProgressListener;
  /** Environment to read DOCKER_HOST, XDG_RUNTIME_DIR from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

const PING_TIMEOUT_MS = 3000;
const JSON_TIMEOUT_MS = 30_000;
/** A stream that sends nothing for this long is dead (an export or pull in progress always sends). */
const STREAM_IDLE_MS = 300_000;

function parseDockerHost(value: string, from: string): DaemonEndpoint {
  const v = value.trim();
  const bad = (why: string) =>
    new OciError(
      "SM_OCI_OPTIONS",
      `${from}=${JSON.stringify(value)} ${why}. Use unix:///path/to/docker.sock (or podman.sock) or tcp://host:port, or unset ${from}.`,
    );
  if (v.startsWith("/")) return { kind: "unix", path: v, label: `unix://${v}` };
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw bad("is not a daemon address");
  }
  if (u.protocol === "unix:") {
    const path = decodeURIComponent(u.pathname || "");
    if (!path.startsWith("/")) throw bad("must name an absolute socket path");
    return { kind: "unix", path, label: `unix://${path}` };
  }
  if (u.protocol === "tcp:" || u.protocol === "http:") {
    if (!u.hostname) throw bad("has no host");
    const port = u.port ? Number(u.port) : 2375;
    return {
      kind: "tcp",
      host: u.hostname.replace(/^\[|\]$/g, ""),
      port,
      label: `tcp://${u.host || u.hostname}`,
    };
  }
  throw bad(`uses ${u.protocol}// which is not supported here (only unix:// sockets and plain tcp://)`);
}

/**
 * The endpoints to try, in order: `options.host`, else `DOCKER_HOST` alone when set (as the docker
 * CLI does), else docker's socket, rootless docker's, Docker Desktop's, podman's rootless and rootful sockets.
 */
export function daemonEndpoints(options: Pick<DaemonOptions, "host" | "env"> = {}): DaemonEndpoint[] {
  const env = options.env ?? process.env;
  if (options.host !== undefined) return [parseDockerHost(options.host, "host")];
  if (env.DOCKER_HOST) {
    if (env.DOCKER_TLS_VERIFY) {
      throw new OciError(
        "SM_OCI_OPTIONS",
        `DOCKER_TLS_VERIFY is set: TLS connections to the Docker daemon are not supported here. Point DOCKER_HOST at the daemon's unix socket, or unset DOCKER_TLS_VERIFY for a plain tcp:// endpoint.`,
      );
    }
    return [parseDockerHost(env.DOCKER_HOST, "DOCKER_HOST")];
  }
  const uid = process.getuid?.() ?? 0;
  const runtimeDir = env.XDG_RUNTIME_DIR || (uid !== 0 ? `/run/user/${uid}` : undefined);
  const home = env.HOME || homedir();
  const paths = [
    "/var/run/docker.sock",
    ...(runtimeDir ? [join(runtimeDir, "docker.sock")] : []),
    join(home, ".docker", "run", "docker.sock"),
    ...(runtimeDir ? [join(runtimeDir, "podman", "podman.sock")] : []),
    "/run/podman/podman.sock",
  ];
  return [...new Set(paths)].map((path) => ({ kind: "unix", path, label: `unix://${path}` }));
}

interface DaemonResponse {
  status: number;
  res: IncomingMessage;
}

/** One HTTP request to the daemon. `timeoutMs` bounds silence on the socket (connect, headers, body gaps). */
function daemonRequest(
  ep: DaemonEndpoint,
  method: "GET" | "POST",
  path: string,
  timeoutMs: number,
): Promise<DaemonResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        ...(ep.kind === "unix" ? { socketPath: ep.path } : { host: ep.host, port: ep.port }),
        method,
        path,
        headers: {
          host: ep.kind === "unix" ? "docker" : `${ep.host}:${ep.port}`,
          "user-agent": "supermachine-oci/0.1",
        },
        timeout: timeoutMs,
      },
      (res) => resolve({ status: res.statusCode ?? 0, res }),
    );
    req.on("timeout", () => {
      req.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: "ETIMEDOUT" }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function readBody(res: IncomingMessage, limit = 4 << 20): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    if (n > limit) {
      res.destroy();
      throw new Error(`daemon answer larger than ${limit} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function daemonMessage(body: string): string {
  try {
    const m = (JSON.parse(body) as { message?: unknown }).message;
    if (typeof m === "string") return m;
  } catch {
    // not JSON
  }
  return body.replace(/\s+/g, " ").trim().slice(0, 300);
}

function whyFailed(err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === "ENOENT") return "no such socket";
  if (code === "ECONNREFUSED") return "nothing is listening";
  if (code === "EACCES" || code === "EPERM")
    return "permission denied: add your user to the docker group, or use rootless podman's socket";
  if (code === "ENOTSOCK") return "not a socket";
  return `${code ?? "error"}: ${(err as Error)?.message ?? String(err)}`;
}

/** The first endpoint whose `GET /_ping` answers, or `SM_DAEMON_UNREACHABLE` naming every one tried. */
export async function findDaemon(options: Pick<DaemonOptions, "host" | "env"> = {}): Promise<DaemonEndpoint> {
  const env = options.env ?? process.env;
  const endpoints = daemonEndpoints(options);
  const tried: string[] = [];
  for (const ep of endpoints) {
    try {
      const { status, res } = await daemonRequest(ep, "GET", "/_ping", PING_TIMEOUT_MS);
      const body = await readBody(res, 1 << 16);
      if (status === 200) return ep;
      tried.push(`${ep.label} (answered HTTP ${status} to /_ping: ${daemonMessage(body) || "no body"})`);
    } catch (err) {
      tried.push(`${ep.label} (${whyFailed(err)})`);
    }
  }
  const hostNote =
    options.host !== undefined
      ? "Only the host option was tried."
      : env.DOCKER_HOST
        ? `DOCKER_HOST=${env.DOCKER_HOST} is set, so only it was tried.`
        : "DOCKER_HOST is not set.";
  const envNote =
    env[IMAGE_SOURCE_ENV]?.trim().toLowerCase() === "docker"
      ? `, or unset ${IMAGE_SOURCE_ENV} to pull from the registry instead`
      : "";
  throw new OciError(
    "SM_DAEMON_UNREACHABLE",
    `no Docker-API daemon (docker or podman) answered: tried ${tried.join("; ")}. ${hostNote} Start Docker (systemctl start docker) or Podman's API socket (systemctl --user start podman.socket), set DOCKER_HOST=unix:///path/to/socket${envNote}.`,
  );
}

interface DaemonImageInfo {
  Id: string;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  Os?: string;
  Architecture?: string;
  Variant?: string;
}

async function inspectDaemonImage(ep: DaemonEndpoint, name: string): Promise<DaemonImageInfo | undefined> {
  const { status, res } = await call(
    ep,
    "GET",
    `/images/${name}/json`,
    JSON_TIMEOUT_MS,
    `inspecting ${name}`,
  );
  const body = await readBody(res);
  if (status === 404) return undefined;
  if (status !== 200) {
    throw new OciError(
      "SM_DAEMON_ERROR",
      `the daemon at ${ep.label} answered HTTP ${status} to inspecting ${name}: ${daemonMessage(body)}`,
    );
  }
  const info = JSON.parse(body) as DaemonImageInfo;
  if (typeof info.Id !== "string") {
    throw new OciError("SM_DAEMON_ERROR", `the daemon at ${ep.label} described ${name} without an Id`);
  }
  return info;
}

/** A request whose connection failure (the daemon went away after the ping) is `SM_DAEMON_UNREACHABLE`. */
async function call(
  ep: DaemonEndpoint,
  method: "GET" | "POST",
  path: string,
  timeoutMs: number,
  what: string,
): Promise<DaemonResponse> {
  try {
    return await daemonRequest(ep, method, path, timeoutMs);
  } catch (err) {
    throw new OciError(
      "SM_DAEMON_UNREACHABLE",
      `the daemon at ${ep.label} failed while ${what}: ${whyFailed(err)}`,
      {
        cause: err,
      },
    );
  }
}

/** `POST /images/create`: the daemon pulls the image from its registry (progress is a JSON-lines stream). */
async function daemonPull(
  ep: DaemonEndpoint,
  ref: ImageReference,
  platform: Platform,
  missing: boolean,
): Promise<void> {
  const q = new URLSearchParams({
    fromImage: `${ref.registry}/${ref.repository}`,
    tag: ref.digest ?? ref.tag ?? "latest",
    platform: formatPlatform(platform),
  });
  const name = formatReference(ref);
  const { status, res } = await call(ep, "POST", `/images/create?${q}`, STREAM_IDLE_MS, `pulling ${name}`);
  const body = await readBody(res, 64 << 20);
  let error: string | undefined;
  if (status !== 200) error = daemonMessage(body);
  else {
    for (const line of body.split("\n")) {
      if (!line.trim()) continue;
      try {
        const m = JSON.parse(line) as { error?: string; errorDetail?: { message?: string } };
        if (m.errorDetail?.message || m.error) error = m.errorDetail?.message ?? m.error;
      } catch {
        // a progress line we do not need
      }
    }
  }
  if (error !== undefined) {
    const head = missing
      ? `${name} is not in the daemon at ${ep.label}, and the daemon could not pull it`
      : `the daemon at ${ep.label} could not pull ${name} (pullPolicy "always")`;
    throw new OciError(
      "SM_IMAGE_NOT_FOUND",
      `${head}: ${error}. Pull or load it there first (docker pull ${name}), or check the name.`,
    );
  }
}

function cacheKey(ref: ImageReference): string {
  return `docker-daemon:${formatReference(ref)}`;
}

function sameImage(image: Image, id: string): boolean {
  return image.digest === id || image.manifestDescriptor.digest === id || image.manifest.config.digest === id;
}

/**
 * Read an image from a local Docker-API daemon into the store. The store keeps it under
 * `docker-daemon:<full reference>`; while the daemon's image Id is unchanged, later calls reuse it
 * without exporting again. Throws `SM_DAEMON_UNREACHABLE` when no daemon answers.
 */
export async function loadFromDaemon(
  reference: string | ImageReference,
  options: DaemonOptions = {},
): Promise<Image> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const policy = options.pullPolicy ?? "missing";
  if (!["always", "missing", "never"].includes(policy)) {
    throw new OciError(
      "SM_OCI_OPTIONS",
      `pullPolicy must be "always", "missing" or "never", got "${policy}"`,
    );
  }
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const ep = await findDaemon(options);
  const name = formatReference(ref);
  const key = cacheKey(ref);
  const store = toStore(options.store);
  await store.init();

  if (policy === "always") await daemonPull(ep, ref, platform, false);
  let info = await inspectDaemonImage(ep, name);
  if (!info) {
    if (policy === "never") {
      throw new OciError(
        "SM_IMAGE_NOT_FOUND",
        `${name} is not in the daemon at ${ep.label} and pullPolicy is "never". Pull or load it there first (docker pull ${name}).`,
      );
    }
    await daemonPull(ep, ref, platform, true);
    info = await inspectDaemonImage(ep, name);
    if (!info) {
      throw new OciError(
        "SM_IMAGE_NOT_FOUND",
        `the daemon at ${ep.label} pulled ${name} but does not list it`,
      );
    }
  }
  if (info.Os && info.Architecture) {
    const have: Platform = {
      os: info.Os,
      architecture: info.Architecture,
      ...(info.Variant ? { variant: info.Variant } : {}),
    };
    if (!platformMatches(have, platform)) {
      throw new OciError(
        "SM_PLATFORM_NOT_FOUND",
        `${name} in the daemon at ${ep.label} is for ${formatPlatform(parsePlatform(have))}, not ${formatPlatform(platform)}. Pull the right platform there (docker pull --platform ${formatPlatform(platform)} ${name}) or pass platform.`,
      );
    }
  }

  const stored = await store.getRef(key);
  if (stored) {
    try {
      const cached = await loadImage(store, key, stored.digest, { platform });
      if (sameImage(cached, info.Id)) {
        options.onProgress?.({ type: "image-done", reference: key, digest: cached.digest });
        return cached;
      }
    } catch (err) {
      if (!isOciError(err, "SM_IMAGE_NOT_CACHED") && !isOciError(err, "SM_PLATFORM_NOT_FOUND")) throw err;
    }
  }

  // Export by Id: the name could be retagged between the two requests.
  const { status, res } = await call(
    ep,
    "GET",
    `/images/${info.Id}/get`,
    STREAM_IDLE_MS,
    `exporting ${name}`,
  );
  if (status !== 200) {
    const body = await readBody(res);
    throw new OciError(
      "SM_DAEMON_ERROR",
      `the daemon at ${ep.label} answered HTTP ${status} to exporting ${name}: ${daemonMessage(body)}`,
    );
  }
  let received = 0;
  res.on("data", (c: Buffer) => {
    received += c.length;
  });
  let image: Image;
  try {
    image = await importArchiveStream(
      res,
      `the export of ${name} from the daemon at ${ep.label}`,
      () => key,
      {
        store,
        platform,
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      },
    );
  } catch (err) {
    // The store keeps only verified, complete blobs and no ref: nothing half-written to clean up.
    if (!res.complete) {
      throw new OciError(
        "SM_DAEMON_UNREACHABLE",
        `the daemon at ${ep.label} stopped sending the export of ${name} after ${received} bytes (${(err as Error).message}); nothing was kept. Check the daemon (docker info) and retry.`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    res.destroy();
  }
  options.onProgress?.({ type: "image-done", reference: key, digest: image.digest });
  return image;
}
