// FakeDockerDaemon: a stand-in for a Docker Engine API daemon (no Docker or Podman daemon can run on
// the test machines). It serves REAL `docker save` archives (made by skopeo from the fixture images)
// over the real API endpoints the client uses, on a unix socket (or TCP):
//   GET /_ping, GET /images/{name}/json, GET /images/{name}/get, POST /images/create
// with or without a /v1.NN version prefix, and Docker's JSON error bodies ({"message": ...}).
import { createHash } from "node:crypto";
import { createReadStream, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import * as tar from "tar-stream";

export interface FakeDaemonImage {
  /** Names the daemon answers to (`alpine:latest`, `docker.io/library/alpine:latest`, …). */
  names: string[];
  /** A `docker save` tarball. */
  tarball: string;
}

interface Loaded extends FakeDaemonImage {
  id: string;
  os: string;
  architecture: string;
}

/** Config digest (Docker's image Id) and platform of a docker-save tarball. */
async function describeTarball(file: string): Promise<{ id: string; os: string; architecture: string }> {
  const files = new Map<string, Buffer>();
  const extract = tar.extract();
  createReadStream(file).pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    if (entry.header.name.endsWith(".json") || entry.header.name === "manifest.json") {
      files.set(entry.header.name, Buffer.concat(chunks));
    }
  }
  const manifest = JSON.parse(String(files.get("manifest.json"))) as Array<{ Config: string }>;
  const config = files.get(manifest[0]!.Config)!;
  const doc = JSON.parse(String(config)) as { os: string; architecture: string };
  return {
    id: `sha256:${createHash("sha256").update(config).digest("hex")}`,
    os: doc.os,
    architecture: doc.architecture,
  };
}

export class FakeDockerDaemon {
  readonly #server: Server;
  readonly #images: Loaded[] = [];
  /** Every request as `METHOD /path` (version prefix stripped). */
  readonly requests: string[] = [];
  /** When set, exports send this many bytes and then drop the connection (a daemon dying mid-export). */
  truncateExportAt: number | undefined;
  /** Images `POST /images/create` can "pull" (name → image); anything else fails as Docker does. */
  readonly pullable = new Map<string, FakeDaemonImage>();
  #address = "";

  private constructor() {
    this.#server = createServer((req, res) => {
      void this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.#json(res, 500, { message: String(err) });
        else res.destroy();
      });
    });
  }

  /** Listen on a unix socket path, or on 127.0.0.1 (random port) when `socketPath` is omitted. */
  static async start(socketPath?: string): Promise<FakeDockerDaemon> {
    const d = new FakeDockerDaemon();
    if (socketPath) {
      rmSync(socketPath, { force: true });
      await new Promise<void>((resolve) => d.#server.listen(socketPath, resolve));
      d.#address = `unix://${socketPath}`;
    } else {
      await new Promise<void>((resolve) => d.#server.listen(0, "127.0.0.1", resolve));
      d.#address = `tcp://127.0.0.1:${(d.#server.address() as AddressInfo).port}`;
    }
    return d;
  }

  /** DOCKER_HOST value for this daemon. */
  get dockerHost(): string {
    return this.#address;
  }

  /** Add (or replace, by name) an image. Returns its Id. */
  async load(image: FakeDaemonImage): Promise<string> {
    const info = await describeTarball(image.tarball);
    for (const n of image.names) {
      for (const old of this.#images) old.names = old.names.filter((x) => x !== n);
    }
    this.#images.push({ ...image, ...info });
    return info.id;
  }

  #find(name: string): Loaded | undefined {
    return this.#images.find((i) => i.names.includes(name) || i.id === name || i.id === `sha256:${name}`);
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    const b = Buffer.from(JSON.stringify(body));
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": String(b.length),
      "api-version": "1.45",
    });
    res.end(b);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://docker");
    const path = url.pathname.replace(/^\/v1\.\d+/, "");
    this.requests.push(`${req.method} ${path}`);
    if (path === "/_ping" && (req.method === "GET" || req.method === "HEAD")) {
      res.writeHead(200, { "content-type": "text/plain", "api-version": "1.45" });
      res.end(req.method === "HEAD" ? undefined : "OK");
      return;
    }
    const m = /^\/images\/(.+)\/(json|get)$/.exec(path);
    if (m && req.method === "GET") {
      const img = this.#find(decodeURIComponent(m[1]!));
      if (!img) {
        this.#json(res, 404, { message: `No such image: ${decodeURIComponent(m[1]!)}` });
        return;
      }
      if (m[2] === "json") {
        this.#json(res, 200, {
          Id: img.id,
          RepoTags: img.names.filter((n) => !n.includes("@")),
          RepoDigests: [],
          Os: img.os,
          Architecture: img.architecture,
          Size: statSync(img.tarball).size,
        });
        return;
      }
      res.writeHead(200, { "content-type": "application/x-tar" });
      if (this.truncateExportAt === undefined) {
        createReadStream(img.tarball).pipe(res);
        return;
      }
      const bytes = readFileSync(img.tarball).subarray(0, this.truncateExportAt);
      res.write(bytes, () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if (path === "/images/create" && req.method === "POST") {
      const from = url.searchParams.get("fromImage") ?? "";
      const tag = url.searchParams.get("tag") ?? "latest";
      const name = `${from}${tag.startsWith("sha256:") ? "@" : ":"}${tag}`;
      const img = this.pullable.get(name);
      if (!img) {
        this.#json(res, 404, {
          message: `pull access denied for ${from}, repository does not exist or may require 'docker login'`,
        });
        return;
      }
      await this.load(img);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        `${JSON.stringify({ status: `Pulling from ${from}`, id: tag })}\n${JSON.stringify({ status: "Status: Downloaded newer image" })}\n`,
      );
      return;
    }
    this.#json(res, 404, { message: "page not found" });
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections?.();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
