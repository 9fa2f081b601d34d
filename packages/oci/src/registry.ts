import { setTimeout as sleep } from "node:timers/promises";
import { Agent, type Dispatcher, request } from "undici";
import {
  type AuthChallenge,
  type Credentials,
  type CredentialsInput,
  credentialsFromDockerConfig,
  defaultDockerConfigPath,
  describeCredentials,
  normalizeCredentials,
  parseWwwAuthenticate,
} from "./auth";
import { OciError } from "./errors";
import { MANIFEST_ACCEPT } from "./media-types";
import { defaultEndpoint, MIRRORS_ENV, type RegistryMirror, resolveMirrors } from "./mirrors";
import { DEFAULT_DOMAIN, DOCKER_HUB_API, formatReference, type ImageReference } from "./reference";
import type { BlobWriter } from "./store";
import type { Descriptor } from "./types";

/** Options for talking to registries. */
export interface RegistryOptions {
  /**
   * Hosts reached over plain HTTP (no TLS). Entries are `host` (any port) or `host:port`.
   * Default: `127.0.0.1`, `localhost`, `[::1]`. Anything else is HTTPS only.
   */
  insecureHosts?: string[];
  /** Credentials per registry host (`host[:port]`), or a function returning them. */
  credentials?:
    | Record<string, CredentialsInput>
    | ((host: string) => CredentialsInput | undefined | Promise<CredentialsInput | undefined>);
  /** Docker config file to read auths/credHelpers from; `false` disables. Default `~/.docker/config.json`. */
  dockerConfig?: string | false;
  /**
   * Mirror endpoint per registry, e.g. `{ "docker.io": "http://127.0.0.1:5000", "ghcr.io": "https://m.example/ghcr" }`.
   * Requests for that registry go to the mirror (`http://` = plain HTTP to it, `https://` = TLS; a path
   * prefix is kept); image names, store refs and metadata keep the registry's own name. Merged over
   * `SUPERMACHINE_REGISTRY_MIRRORS` (entry by entry). Malformed entries throw `SM_OCI_OPTIONS`.
   */
  mirrors?: Record<string, string>;
  /** @deprecated Same as `mirrors` (which wins for a registry named in both). */
  endpoints?: Record<string, string>;
  /** Read `SUPERMACHINE_REGISTRY_MIRRORS` (default true; `push` without a `client` sets false: pushes go to the registry itself, as docker's do). */
  mirrorsFromEnv?: boolean;
  /** Attempts for a request on 5xx/429/connection errors (default 5). */
  retries?: number;
  /** First backoff delay; doubles each retry (default 200 ms). */
  retryBaseMs?: number;
  /** Byte ranges fetched in parallel for one large blob (≥ 16 MiB; default 4, 1 = never split). */
  blobParallelism?: number;
  /** An undici dispatcher to use (default: an internal keep-alive Agent). */
  dispatcher?: Dispatcher;
  /** Abort everything. */
  signal?: AbortSignal;
  userAgent?: string;
}

/** Each parallel range of a blob is at least this large. */
const PART_MIN_BYTES = 8 << 20;

export const DEFAULT_INSECURE_HOSTS = ["127.0.0.1", "localhost", "[::1]"];
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRY_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
]);
const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "UND_ERR_CONNECT_TIMEOUT",
]);

/** Node/OpenSSL codes of a failed TLS handshake (bad or self-signed certificate, plain HTTP on the port). */
const TLS_CODE_RE = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO_SELF_SIGNED|EPROTO$)/;

/** OpenSSL's short reason ("wrong version number", "self-signed certificate") from an error chain, as ": reason". */
function tlsReason(err: unknown): string {
  let e = err as { reason?: unknown; cause?: unknown } | undefined;
  for (let i = 0; i < 4 && e; i++) {
    if (typeof e.reason === "string" && e.reason) return `: ${e.reason}`;
    e = e.cause as typeof e;
  }
  return "";
}

function errCode(err: unknown): string | undefined {
  let e = err as { code?: string; cause?: unknown } | undefined;
  for (let i = 0; i < 4 && e; i++) {
    if (typeof e.code === "string" && e.code !== "UND_ERR" && !e.code.startsWith("SM_")) return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}

export function isRetryableError(err: unknown): boolean {
  if ((err as { code?: string })?.code?.startsWith("SM_")) return false;
  const c = errCode(err);
  if (c !== undefined && RETRY_CODES.has(c)) return true;
  const msg = String((err as Error)?.message ?? "");
  return /terminated|other side closed|socket hang up|premature close|aborted/i.test(msg);
}

interface Token {
  value: string;
  expiresAt: number;
}

interface HostState {
  challenge?: AuthChallenge;
  credentials?: Promise<Credentials | undefined>;
  tokens: Map<string, Token>;
}

export interface RegistryResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  url: string;
}

type BodyFactory = () => Buffer | NodeJS.ReadableStream | undefined;

interface SendOptions {
  method: "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";
  /** Path under the registry base URL (`/v2/...`) or an absolute URL (upload Location). */
  path: string;
  headers?: Record<string, string>;
  body?: BodyFactory;
  /** Repository scopes needed, e.g. `["repository:a/b:pull"]`. */
  scopes: string[];
  /** Follow redirects (blob downloads). */
  redirects?: boolean;
  /** Retry on 5xx / connection errors (only safe for idempotent or replayable requests). */
  retry?: boolean;
  /** Label for error messages. */
  what: string;
}

function header(h: RegistryResponse["headers"], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

async function errorDetails(res: RegistryResponse): Promise<{ codes: string[]; text: string }> {
  let text = "";
  try {
    text = (await res.body.text()).slice(0, 2000);
  } catch {
    // ignore
  }
  const codes: string[] = [];
  try {
    const doc = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    for (const e of doc.errors ?? []) if (e.code) codes.push(e.code);
  } catch {
    // not JSON
  }
  return { codes, text: text.replace(/\s+/g, " ").trim().slice(0, 300) };
}

/** A Distribution API v2 client shared across images (keeps auth tokens and connections). */
export class RegistryClient {
  readonly options: RegistryOptions;
  readonly #hosts = new Map<string, HostState>();
  readonly #dispatcher: Dispatcher;
  readonly #ownsDispatcher: boolean;
  readonly #mirrors: Map<string, RegistryMirror>;
  /** Origins given explicitly as mirrors: plain HTTP to them is what the caller asked for. */
  readonly #mirrorOrigins: Set<string>;

  constructor(options: RegistryOptions = {}) {
    this.options = options;
    this.#mirrors = mirrorsOf(options);
    this.#mirrorOrigins = new Set([...this.#mirrors.values()].map((m) => new URL(m.url).origin));
    this.#ownsDispatcher = options.dispatcher === undefined;
    this.#dispatcher =
      options.dispatcher ??
      new Agent({
        connections: 16,
        keepAliveTimeout: 10_000,
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
        connect: { timeout: 10_000 },
      });
  }

  async close(): Promise<void> {
    if (this.#ownsDispatcher) await this.#dispatcher.close();
  }

  /** Whether `host` (`name[:port]`) may be spoken to over plain HTTP. */
  isInsecure(host: string): boolean {
    const list = this.options.insecureHosts ?? DEFAULT_INSECURE_HOSTS;
    const bare = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0]!;
    return list.includes(host) || list.includes(bare);
  }

  /** The mirror that serves `registry`, if one is configured. */
  mirrorFor(registry: string): RegistryMirror | undefined {
    return this.#mirrors.get(registry);
  }

  /**
   * Base URL of the registry API for a domain: its mirror if one is configured, Docker Hub's real
   * endpoint (`https://registry-1.docker.io`) for `docker.io`, else the host itself.
   */
  baseUrl(registry: string): string {
    const m = this.#mirrors.get(registry);
    if (m) return m.url;
    return defaultEndpoint(registry, this.isInsecure(registry));
  }

  /** The host whose credentials are used for `registry`: the mirror's when mirrored (never leak upstream credentials to a mirror). */
  authHost(registry: string): string {
    return this.#mirrors.get(registry)?.host ?? registry;
  }

  #state(registry: string): HostState {
    let s = this.#hosts.get(registry);
    if (!s) {
      s = { tokens: new Map() };
      this.#hosts.set(registry, s);
    }
    return s;
  }

  /** Credentials configured for a registry host (option, then docker config / helpers). */
  credentialsFor(registry: string): Promise<Credentials | undefined> {
    const st = this.#state(registry);
    const host = this.authHost(registry);
    st.credentials ??= (async () => {
      const opt = this.options.credentials;
      if (typeof opt === "function") {
        const c = await opt(host);
        if (c) return normalizeCredentials(c, "the credentials option");
      } else if (opt?.[host]) {
        return normalizeCredentials(opt[host]!, "the credentials option");
      }
      if (this.options.dockerConfig === false) return undefined;
      const path = this.options.dockerConfig ?? defaultDockerConfigPath();
      try {
        return await credentialsFromDockerConfig(host, path);
      } catch (err) {
        throw new OciError(
          "SM_REGISTRY_AUTH",
          `could not read credentials for ${host} from ${path} (or its credential helper): ${(err as Error).message}`,
          { cause: err },
        );
      }
    })();
    return st.credentials;
  }

  #checkScheme(url: string): void {
    const u = new URL(url);
    if (u.protocol === "http:" && !this.isInsecure(u.host) && !this.#mirrorOrigins.has(u.origin)) {
      throw new OciError(
        "SM_INSECURE_REGISTRY",
        `refusing plain HTTP to ${u.host}: add it to insecureHosts if this registry really has no TLS`,
      );
    }
  }

  async #fetchToken(registry: string, challenge: AuthChallenge, scopes: string[]): Promise<string> {
    const st = this.#state(registry);
    const key = scopes.slice().sort().join(" ");
    const cached = st.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.value;
    const realm = challenge.params.realm;
    if (!realm) throw new OciError("SM_REGISTRY_AUTH", `${registry} sent a Bearer challenge without a realm`);
    this.#checkScheme(realm);
    const creds = await this.credentialsFor(registry);
    const url = new URL(realm);
    const service = challenge.params.service;
    let res: Dispatcher.ResponseData;
    try {
      if (creds?.kind === "identity") {
        const form = new URLSearchParams();
        form.set("grant_type", "refresh_token");
        form.set("refresh_token", creds.token);
        form.set("client_id", "supermachine");
        if (service) form.set("service", service);
        form.set("scope", scopes.join(" "));
        res = await request(url, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: form.toString(),
          dispatcher: this.#dispatcher,
          signal: this.options.signal,
        });
      } else {
        if (service) url.searchParams.set("service", service);
        for (const s of scopes) url.searchParams.append("scope", s);
        const headers: Record<string, string> = {};
        if (creds?.kind === "basic") {
          headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
        }
        res = await request(url, {
          method: "GET",
          headers,
          dispatcher: this.#dispatcher,
          signal: this.options.signal,
        });
      }
    } catch (err) {
      throw new OciError(
        "SM_REGISTRY_UNREACHABLE",
        `token service ${url.host} for ${registry} is unreachable`,
        {
          cause: err,
        },
      );
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      await res.body.dump();
      throw new OciError(
        "SM_REGISTRY_AUTH",
        `the token service of ${registry} rejected ${describeCredentials(creds)} (HTTP ${res.statusCode}). Check the credentials (docker login ${this.authHost(registry)}).`,
      );
    }
    if (res.statusCode !== 200) {
      const text = (await res.body.text()).slice(0, 200);
      throw new OciError(
        "SM_REGISTRY_AUTH",
        `token service of ${registry} answered HTTP ${res.statusCode}: ${text}`,
      );
    }
    const doc = (await res.body.json()) as {
      token?: string;
      access_token?: string;
      expires_in?: number;
      issued_at?: string;
    };
    const value = doc.token ?? doc.access_token;
    if (!value) throw new OciError("SM_REGISTRY_AUTH", `token service of ${registry} returned no token`);
    const lifetimeS = typeof doc.expires_in === "number" && doc.expires_in > 0 ? doc.expires_in : 60;
    // Refresh a little early so a token never expires in flight.
    st.tokens.set(key, { value, expiresAt: Date.now() + Math.max(1, lifetimeS - 10) * 1000 });
    return value;
  }

  async #authHeader(registry: string, scopes: string[]): Promise<string | undefined> {
    const st = this.#state(registry);
    const ch = st.challenge;
    if (!ch) return undefined;
    if (ch.scheme === "bearer") {
      const creds = await this.credentialsFor(registry);
      if (creds?.kind === "bearer") return `Bearer ${creds.token}`;
      return `Bearer ${await this.#fetchToken(registry, ch, scopes)}`;
    }
    if (ch.scheme === "basic") {
      const creds = await this.credentialsFor(registry);
      if (creds?.kind === "basic") {
        return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
      }
      if (creds?.kind === "identity" && creds.username) {
        return `Basic ${Buffer.from(`${creds.username}:${creds.token}`).toString("base64")}`;
      }
      return undefined;
    }
    return undefined;
  }

  /**
   * Send a request with auth (challenge → credentials/token → retry once), redirects and
   * retries with exponential backoff. Returns the final response (body unread) for 2xx/3xx/4xx
   * other than auth failures; throws OciError for auth/unreachable.
   */
  async send(registry: string, opts: SendOptions): Promise<RegistryResponse> {
    const retries = opts.retry === false ? 1 : (this.options.retries ?? 5);
    const base = this.options.retryBaseMs ?? 200;
    let lastErr: unknown;
    for (let attempt = 0; attempt < retries; attempt++) {
      if (attempt > 0) await sleep(base * 2 ** (attempt - 1), undefined, { signal: this.options.signal });
      try {
        const res = await this.#sendAuthed(registry, opts);
        if (RETRY_STATUS.has(res.status) && attempt + 1 < retries) {
          await res.body.dump();
          lastErr = new OciError("SM_REGISTRY_ERROR", `${opts.what}: HTTP ${res.status} from ${registry}`);
          continue;
        }
        return res;
      } catch (err) {
        lastErr = err;
        if (!isRetryableError(err)) break;
      }
    }
    if ((lastErr as OciError)?.code?.startsWith?.("SM_")) throw lastErr;
    const code = errCode(lastErr);
    if (code !== undefined && (UNREACHABLE_CODES.has(code) || RETRY_CODES.has(code))) {
      throw new OciError("SM_REGISTRY_UNREACHABLE", this.#unreachableMessage(registry, code, opts.what), {
        cause: lastErr,
      });
    }
    if (code !== undefined && TLS_CODE_RE.test(code)) {
      throw new OciError(
        "SM_REGISTRY_UNREACHABLE",
        `${this.#endpointLabel(registry)}: the TLS handshake with ${this.baseUrl(registry)} failed (${code}${tlsReason(lastErr)}) during ${opts.what}. If it speaks plain HTTP, use an http:// URL for it; for a private CA set NODE_EXTRA_CA_CERTS.`,
        { cause: lastErr },
      );
    }
    throw lastErr;
  }

  /** How error messages name the endpoint of `registry`: the mirror (and where it was configured), Docker Hub, or the host. */
  #endpointLabel(registry: string): string {
    const m = this.#mirrors.get(registry);
    if (m) return `registry mirror ${m.url} (for ${registry}, from ${mirrorSource(m)})`;
    if (registry === DEFAULT_DOMAIN) return `Docker Hub (${DOCKER_HUB_API})`;
    return `registry ${registry}`;
  }

  #unreachableMessage(registry: string, code: string, what: string): string {
    const head = `${this.#endpointLabel(registry)} is unreachable (${code}) during ${what}.`;
    const m = this.#mirrors.get(registry);
    if (m) return `${head} Start the mirror, or fix or remove the ${registry} entry in ${mirrorSource(m)}.`;
    if (registry === DEFAULT_DOMAIN) {
      return `${head} Check the network, or point docker.io at a mirror: ${MIRRORS_ENV}="docker.io=https://mirror.example".`;
    }
    return `${head} Check the host name, port and network.`;
  }

  async #sendAuthed(registry: string, opts: SendOptions): Promise<RegistryResponse> {
    const st = this.#state(registry);
    let auth = await this.#authHeader(registry, opts.scopes);
    let res = await this.#sendOnce(registry, opts, auth);
    if (res.status !== 401) return this.#checkForbidden(registry, res, auth, opts);
    const wa = header(res.headers, "www-authenticate");
    await res.body.dump();
    const challenges = wa ? parseWwwAuthenticate(wa) : [];
    const ch = challenges.find((c) => c.scheme === "bearer") ?? challenges.find((c) => c.scheme === "basic");
    const creds = await this.credentialsFor(registry);
    if (!ch) {
      throw new OciError(
        "SM_REGISTRY_AUTH",
        `${registry} answered 401 to ${opts.what} without a usable WWW-Authenticate challenge; tried ${describeCredentials(creds)}`,
      );
    }
    // A stale token (expired early, revoked) is the usual cause when we already had a challenge.
    st.challenge = ch;
    st.tokens.clear();
    auth = await this.#authHeader(registry, opts.scopes);
    if (auth === undefined) {
      throw new OciError(
        "SM_REGISTRY_AUTH",
        `${registry} requires authentication (${ch.scheme}) for ${opts.what}; tried ${describeCredentials(creds)}. Log in with docker login ${this.authHost(registry)} or pass credentials.`,
      );
    }
    res = await this.#sendOnce(registry, opts, auth);
    if (res.status === 401) {
      await res.body.dump();
      throw new OciError(
        "SM_REGISTRY_AUTH",
        `${registry} rejected ${describeCredentials(creds)} for ${opts.what} (HTTP 401). Check the credentials.`,
      );
    }
    return this.#checkForbidden(registry, res, auth, opts);
  }

  async #checkForbidden(
    registry: string,
    res: RegistryResponse,
    auth: string | undefined,
    opts: SendOptions,
  ): Promise<RegistryResponse> {
    if (res.status !== 403) return res;
    await res.body.dump();
    const creds = auth ? await this.credentialsFor(registry) : undefined;
    throw new OciError(
      "SM_REGISTRY_AUTH",
      `${registry} denied ${opts.what} (HTTP 403, scope ${opts.scopes.join(" ")}); tried ${describeCredentials(creds)}.`,
    );
  }

  async #sendOnce(registry: string, opts: SendOptions, auth: string | undefined): Promise<RegistryResponse> {
    const base = this.baseUrl(registry);
    let url = /^https?:\/\//.test(opts.path) ? opts.path : `${base}${opts.path}`;
    const origin = new URL(base).origin;
    for (let hop = 0; hop < 6; hop++) {
      this.#checkScheme(url);
      const headers: Record<string, string> = {
        "user-agent": this.options.userAgent ?? "supermachine-oci/0.1",
        ...(opts.headers ?? {}),
      };
      // Credentials go only to the registry's own origin, never to a redirect target (blob CDN).
      if (auth && new URL(url).origin === origin) headers.authorization = auth;
      const body = hop === 0 ? opts.body?.() : undefined;
      const res = await request(url, {
        method: hop === 0 ? opts.method : opts.method === "HEAD" ? "HEAD" : "GET",
        headers,
        body: body as Buffer | undefined,
        dispatcher: this.#dispatcher,
        signal: this.options.signal,
      });
      const loc = header(res.headers, "location");
      if (opts.redirects && [301, 302, 303, 307, 308].includes(res.statusCode) && loc) {
        await res.body.dump();
        url = new URL(loc, url).toString();
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, url };
    }
    throw new OciError("SM_REGISTRY_ERROR", `${opts.what}: too many redirects from ${registry}`);
  }

  // ---------------------------------------------------------------- manifests

  /** GET a manifest or index by tag or digest. Returns the raw bytes and content type. */
  async getManifest(
    ref: ImageReference,
    target: string,
  ): Promise<{ bytes: Buffer; contentType: string | undefined; digestHeader: string | undefined }> {
    const res = await this.send(ref.registry, {
      method: "GET",
      path: `/v2/${ref.repository}/manifests/${target}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [`repository:${ref.repository}:pull`],
      what: `fetching manifest ${formatReference(ref)}`,
    });
    if (res.status === 404) {
      const { codes } = await errorDetails(res);
      throw notFound(ref, codes);
    }
    if (res.status !== 200) {
      const { text } = await errorDetails(res);
      throw new OciError(
        "SM_REGISTRY_ERROR",
        `fetching manifest ${formatReference(ref)}: HTTP ${res.status} from ${ref.registry}: ${text}`,
      );
    }
    const bytes = Buffer.from(await res.body.arrayBuffer());
    if (bytes.length > 4 << 20) {
      throw new OciError(
        "SM_INVALID_IMAGE",
        `manifest ${formatReference(ref)} is larger than 4 MiB; refusing it`,
      );
    }
    return {
      bytes,
      contentType: header(res.headers, "content-type"),
      digestHeader: header(res.headers, "docker-content-digest"),
    };
  }

  /** HEAD a manifest: its digest, media type and size, or undefined when absent. */
  async headManifest(
    ref: ImageReference,
    target: string,
  ): Promise<{ digest: string | undefined; mediaType: string | undefined; size: number } | undefined> {
    const res = await this.send(ref.registry, {
      method: "HEAD",
      path: `/v2/${ref.repository}/manifests/${target}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [`repository:${ref.repository}:pull`],
      what: `checking manifest ${formatReference(ref)}`,
    });
    await res.body.dump();
    if (res.status === 404) return undefined;
    if (res.status !== 200) {
      throw new OciError(
        "SM_REGISTRY_ERROR",
        `checking manifest ${formatReference(ref)}: HTTP ${res.status}`,
      );
    }
    return {
      digest: header(res.headers, "docker-content-digest"),
      mediaType: header(res.headers, "content-type")?.split(";")[0],
      size: Number(header(res.headers, "content-length") ?? 0),
    };
  }

  async putManifest(
    ref: ImageReference,
    target: string,
    bytes: Buffer,
    mediaType: string,
    what = `pushing manifest ${formatReference(ref)}`,
  ): Promise<string | undefined> {
    const res = await this.send(ref.registry, {
      method: "PUT",
      path: `/v2/${ref.repository}/manifests/${target}`,
      headers: { "content-type": mediaType, "content-length": String(bytes.length) },
      body: () => bytes,
      scopes: [`repository:${ref.repository}:pull,push`],
      what,
    });
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) {
      const { text } = await errorDetails(res);
      throw new OciError("SM_REGISTRY_ERROR", `${what}: HTTP ${res.status}: ${text}`);
    }
    await res.body.dump();
    return header(res.headers, "docker-content-digest");
  }

  // ---------------------------------------------------------------- blobs

  /**
   * Download a blob into `writer` (which verifies digest and size on commit). Large blobs are
   * fetched as up to `blobParallelism` byte ranges at once. A dropped connection resumes with
   * `Range: bytes=<offset>-`; 5xx/ECONNRESET retry with backoff.
   */
  async fetchBlob(
    ref: ImageReference,
    desc: Descriptor,
    writer: BlobWriter,
    onBytes?: (done: number) => void,
  ): Promise<void> {
    const parts = Math.min(this.options.blobParallelism ?? 4, Math.floor(desc.size / PART_MIN_BYTES));
    if (parts >= 2 && writer.supportsParts && writer.offset === 0) {
      const bounds = await writer.useParts(parts);
      let stop = false;
      const results = await Promise.allSettled(
        bounds.map((b, i) =>
          this.#fetchPart(ref, desc, writer, i, b, () => stop, onBytes).catch((err: unknown) => {
            stop = true;
            throw err;
          }),
        ),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (!failed) return;
      if (!(failed.reason as { noRanges?: boolean }).noRanges) throw failed.reason;
      // The registry does not serve ranges: one sequential stream instead.
      await writer.restart();
      onBytes?.(0);
    }
    await this.#fetchSequential(ref, desc, writer, onBytes);
  }

  /** GET a blob, optionally a byte range; a 404 throws `blobMissing` (SM_IMAGE_NOT_FOUND). */
  async #getBlob(ref: ImageReference, desc: Descriptor, range: string | undefined, what: string) {
    const res = await this.send(ref.registry, {
      method: "GET",
      path: `/v2/${ref.repository}/blobs/${desc.digest}`,
      headers: range ? { range } : {},
      scopes: [`repository:${ref.repository}:pull`],
      redirects: true,
      what,
    });
    if (res.status === 404) {
      await res.body.dump();
      throw blobMissing(ref, desc);
    }
    return res;
  }

  /**
   * After a retryable failure of a blob download: the new stall count (reset when the attempt made
   * progress). Throws SM_REGISTRY_UNREACHABLE once `retries` attempts in a row made none; otherwise
   * waits the backoff (50 ms after progress, then retryBaseMs doubling).
   */
  async #afterFailure(
    err: unknown,
    progressed: boolean,
    stalls: number,
    what: string,
    ref: ImageReference,
  ): Promise<number> {
    const n = progressed ? 0 : stalls + 1;
    if (n >= (this.options.retries ?? 5)) {
      throw new OciError("SM_REGISTRY_UNREACHABLE", `${what}: connection to ${ref.registry} keeps failing`, {
        cause: err,
      });
    }
    const base = this.options.retryBaseMs ?? 200;
    await sleep(n === 0 ? 50 : base * 2 ** (n - 1), undefined, { signal: this.options.signal });
    return n;
  }

  async #fetchPart(
    ref: ImageReference,
    desc: Descriptor,
    writer: BlobWriter,
    part: number,
    [start, end]: [number, number],
    stopped: () => boolean,
    onBytes?: (done: number) => void,
  ): Promise<void> {
    const what = `downloading blob ${desc.digest} of ${formatReference(ref)}`;
    let stalls = 0;
    for (;;) {
      const from = start + writer.partWritten(part);
      if (stopped() || from >= end) return;
      try {
        const res = await this.#getBlob(ref, desc, `bytes=${from}-${end - 1}`, what);
        const cr = header(res.headers, "content-range") ?? "";
        if (res.status === 200 || (res.status === 206 && Number(/bytes (\d+)-/.exec(cr)?.[1]) !== from)) {
          await res.body.dump();
          throw Object.assign(new Error("registry ignored the Range request"), { noRanges: true });
        }
        if (res.status !== 206) {
          const { text } = await errorDetails(res);
          throw new OciError("SM_REGISTRY_ERROR", `${what}: HTTP ${res.status}: ${text}`);
        }
        for await (const chunk of res.body) {
          if (stopped()) break;
          await writer.writePart(part, chunk as Buffer);
          onBytes?.(writer.offset);
        }
        if (stopped()) return;
        if (start + writer.partWritten(part) < end) {
          throw Object.assign(new Error("premature close"), { code: "ECONNRESET" });
        }
        return;
      } catch (err) {
        if (!isRetryableError(err) || stopped()) throw err;
        stalls = await this.#afterFailure(err, start + writer.partWritten(part) > from, stalls, what, ref);
      }
    }
  }

  async #fetchSequential(
    ref: ImageReference,
    desc: Descriptor,
    writer: BlobWriter,
    onBytes?: (done: number) => void,
  ): Promise<void> {
    let stalls = 0;
    const what = `downloading blob ${desc.digest} of ${formatReference(ref)}`;
    for (;;) {
      const start = writer.offset;
      try {
        const res = await this.#getBlob(ref, desc, start > 0 ? `bytes=${start}-` : undefined, what);
        if (res.status === 416 && start === desc.size) {
          await res.body.dump();
          return;
        }
        if (res.status === 200 && start > 0) {
          await writer.restart(); // server ignored Range: start over
          onBytes?.(0);
        } else if (res.status === 206) {
          const cr = header(res.headers, "content-range") ?? "";
          const m = /bytes (\d+)-/.exec(cr);
          if (!m || Number(m[1]) !== start) {
            await res.body.dump();
            await writer.restart();
            onBytes?.(0);
            throw Object.assign(new Error(`unexpected Content-Range "${cr}"`), { code: "ECONNRESET" });
          }
        } else if (res.status !== 200) {
          const { text } = await errorDetails(res);
          throw new OciError("SM_REGISTRY_ERROR", `${what}: HTTP ${res.status}: ${text}`);
        }
        for await (const chunk of res.body) {
          await writer.write(chunk as Buffer);
          onBytes?.(writer.offset);
        }
        if (writer.offset < desc.size) {
          throw Object.assign(new Error("premature close"), { code: "ECONNRESET" });
        }
        return;
      } catch (err) {
        if (!isRetryableError(err)) throw err;
        stalls = await this.#afterFailure(err, writer.offset > start, stalls, what, ref);
      }
    }
  }

  async blobExists(ref: ImageReference, digest: string, push = false): Promise<boolean> {
    const res = await this.send(ref.registry, {
      method: "HEAD",
      path: `/v2/${ref.repository}/blobs/${digest}`,
      scopes: [`repository:${ref.repository}:${push ? "pull,push" : "pull"}`],
      redirects: true,
      what: `checking blob ${digest}`,
    });
    await res.body.dump();
    return res.status === 200;
  }

  /**
   * Upload a blob: cross-repo mount first when `mountFrom` is given, else a POST session and
   * a monolithic PUT (size ≤ chunkSize) or PATCH chunks + final PUT.
   * `open(start, end)` returns the bytes [start, end] (inclusive) as a stream.
   */
  async uploadBlob(
    ref: ImageReference,
    desc: Descriptor,
    open: (start: number, end: number) => NodeJS.ReadableStream,
    options: { mountFrom?: string; chunkSize?: number; onBytes?: (done: number) => void } = {},
  ): Promise<"mounted" | "uploaded"> {
    const scopes = [`repository:${ref.repository}:pull,push`];
    if (options.mountFrom && options.mountFrom !== ref.repository) {
      scopes.push(`repository:${options.mountFrom}:pull`);
    }
    const what = `uploading blob ${desc.digest} to ${ref.registry}/${ref.repository}`;
    const q =
      options.mountFrom && options.mountFrom !== ref.repository
        ? `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(options.mountFrom)}`
        : "";
    const start = await this.send(ref.registry, {
      method: "POST",
      path: `/v2/${ref.repository}/blobs/uploads/${q}`,
      headers: { "content-length": "0" },
      scopes,
      what,
    });
    await start.body.dump();
    if (start.status === 201) {
      options.onBytes?.(desc.size);
      return "mounted";
    }
    if (start.status !== 202)
      throw new OciError("SM_REGISTRY_ERROR", `${what}: HTTP ${start.status} starting upload`);
    let location = this.#location(start);
    const chunkSize = options.chunkSize ?? 64 << 20;
    const withDigest = (loc: string) =>
      `${loc}${loc.includes("?") ? "&" : "?"}digest=${encodeURIComponent(desc.digest)}`;
    if (desc.size <= chunkSize) {
      const res = await this.send(ref.registry, {
        method: "PUT",
        path: withDigest(location),
        headers: { "content-type": "application/octet-stream", "content-length": String(desc.size) },
        body: () => (desc.size === 0 ? Buffer.alloc(0) : open(0, desc.size - 1)),
        scopes,
        retry: false,
        what,
      });
      if (res.status !== 201) {
        const { text } = await errorDetails(res);
        throw new OciError("SM_REGISTRY_ERROR", `${what}: HTTP ${res.status}: ${text}`);
      }
      await res.body.dump();
      options.onBytes?.(desc.size);
      return "uploaded";
    }
    for (let off = 0; off < desc.size; off += chunkSize) {
      const end = Math.min(desc.size, off + chunkSize) - 1;
      const res = await this.send(ref.registry, {
        method: "PATCH",
        path: location,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(end - off + 1),
          "content-range": `${off}-${end}`,
        },
        body: () => open(off, end),
        scopes,
        retry: false,
        what,
      });
      if (res.status !== 202) {
        const { text } = await errorDetails(res);
        throw new OciError(
          "SM_REGISTRY_ERROR",
          `${what}: HTTP ${res.status} for chunk ${off}-${end}: ${text}`,
        );
      }
      await res.body.dump();
      location = this.#location(res);
      options.onBytes?.(end + 1);
    }
    const fin = await this.send(ref.registry, {
      method: "PUT",
      path: withDigest(location),
      headers: { "content-length": "0" },
      scopes,
      retry: false,
      what,
    });
    if (fin.status !== 201) {
      const { text } = await errorDetails(fin);
      throw new OciError("SM_REGISTRY_ERROR", `${what}: HTTP ${fin.status} finishing upload: ${text}`);
    }
    await fin.body.dump();
    return "uploaded";
  }

  #location(res: RegistryResponse): string {
    const loc = header(res.headers, "location");
    if (!loc) throw new OciError("SM_REGISTRY_ERROR", "registry sent no Location for the upload session");
    return new URL(loc, res.url).toString();
  }
}

function mirrorSource(m: RegistryMirror): string {
  return m.from === MIRRORS_ENV ? MIRRORS_ENV : `the ${m.from} option`;
}

function mirrorsOf(options: RegistryOptions): Map<string, RegistryMirror> {
  const merged =
    options.endpoints || options.mirrors
      ? { ...(options.endpoints ?? {}), ...(options.mirrors ?? {}) }
      : undefined;
  return resolveMirrors(merged, "mirrors", options.mirrorsFromEnv !== false);
}

function blobMissing(ref: ImageReference, desc: Descriptor): OciError {
  return new OciError(
    "SM_IMAGE_NOT_FOUND",
    `blob ${desc.digest} of ${formatReference(ref)} is missing from ${ref.registry} (the image is incomplete there)`,
  );
}

function notFound(ref: ImageReference, codes: string[]): OciError {
  const what = codes.includes("NAME_UNKNOWN") ? "repository" : "tag or digest";
  return new OciError(
    "SM_IMAGE_NOT_FOUND",
    `image ${formatReference(ref)} not found (${what} unknown to ${ref.registry}${codes.length ? `: ${codes.join(", ")}` : ""}). Check the name and tag.`,
  );
}
