import { OciError } from "./errors";
import { DEFAULT_DOMAIN, DOCKER_HUB_API, normaliseRegistry } from "./reference";

/** Environment variable mapping registries to mirror endpoints: `docker.io=http://127.0.0.1:5000,ghcr.io=https://m`. */
export const MIRRORS_ENV = "SUPERMACHINE_REGISTRY_MIRRORS";

/** A registry served by another endpoint. Images keep the registry's name; only the requests go elsewhere. */
export interface RegistryMirror {
  /** The registry the images are named after (`docker.io`, `ghcr.io`, `host:port`). */
  registry: string;
  /** Base URL requests go to (`/v2/...` is appended), without a trailing slash. */
  url: string;
  /** `host[:port]` of the mirror: whose credentials (docker config, `credentials` option) are used. */
  host: string;
  /** Where the mapping came from, for error messages (the env var or the option name). */
  from: string;
}

function badMirror(from: string, entry: string, why: string): OciError {
  const example = `${MIRRORS_ENV}="docker.io=http://127.0.0.1:5000,ghcr.io=https://mirror.example"`;
  const where = from === MIRRORS_ENV ? `${MIRRORS_ENV}` : `the ${from} option`;
  return new OciError(
    "SM_OCI_OPTIONS",
    `invalid registry mirror ${JSON.stringify(entry)} in ${where}: ${why}. Each entry is REGISTRY=URL with URL http://host[:port][/prefix] (plain HTTP) or https://…, e.g. ${example}; fix the entry or remove it.`,
  );
}

/** Validate one `registry → URL` pair; throws `SM_OCI_OPTIONS` naming `from`. */
export function parseMirror(registryKey: string, url: string, from: string): RegistryMirror {
  const entry = `${registryKey}=${url}`;
  const key = registryKey.trim();
  if (key === "") throw badMirror(from, entry, "the registry name is missing");
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(key)) {
    throw badMirror(from, entry, `the key must be a registry name such as docker.io or ghcr.io, not a URL`);
  }
  const registry = normaliseRegistry(key);
  if (registry === undefined) {
    throw badMirror(
      from,
      entry,
      `"${key}" is not a registry an image name can refer to (a registry is a host name with a dot or a port, or localhost: docker.io, ghcr.io, quay.io, registry.example:5000)`,
    );
  }
  const raw = url.trim();
  if (raw === "") throw badMirror(from, entry, "the mirror URL is missing");
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    throw badMirror(
      from,
      entry,
      `the URL needs a scheme: http://${raw} for plain HTTP or https://${raw} for TLS`,
    );
  }
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw badMirror(from, entry, `"${raw}" is not a URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw badMirror(from, entry, `the scheme must be http:// or https://, not ${u.protocol}//`);
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^/]/i.test(raw) || u.host === "") {
    throw badMirror(from, entry, "the URL has no host");
  }
  if (u.username || u.password) {
    throw badMirror(
      from,
      entry,
      `credentials do not belong in the URL; put them in the docker config for ${u.host} (docker login ${u.host})`,
    );
  }
  if (u.search || u.hash) throw badMirror(from, entry, "the URL must not have a query or fragment");
  // A path prefix is kept (`https://mirror/prefix` → `https://mirror/prefix/v2/...`); a trailing /v2 is the API root.
  const path = u.pathname.replace(/\/+$/, "").replace(/\/v2$/, "");
  return { registry, url: `${u.protocol}//${u.host}${path}`, host: u.host, from };
}

/** Parse `REGISTRY=URL[,REGISTRY=URL…]` (whitespace around entries ignored). Throws `SM_OCI_OPTIONS`. */
export function parseMirrorList(spec: string, from = MIRRORS_ENV): Map<string, RegistryMirror> {
  const out = new Map<string, RegistryMirror>();
  for (const part of spec.split(",")) {
    const entry = part.trim();
    if (entry === "") continue;
    const eq = entry.indexOf("=");
    if (eq === -1) throw badMirror(from, entry, "there is no `=` between the registry and the URL");
    const m = parseMirror(entry.slice(0, eq), entry.slice(eq + 1), from);
    if (out.has(m.registry)) {
      throw badMirror(from, entry, `${m.registry} is mapped twice`);
    }
    out.set(m.registry, m);
  }
  return out;
}

/**
 * The mirrors in effect: `SUPERMACHINE_REGISTRY_MIRRORS` (unless `useEnv` is false), overridden per
 * registry by the option map. Throws `SM_OCI_OPTIONS` for any malformed entry.
 */
export function resolveMirrors(
  option: Record<string, string> | undefined,
  optionName: string,
  useEnv = true,
  env: NodeJS.ProcessEnv = process.env,
): Map<string, RegistryMirror> {
  const spec = useEnv ? env[MIRRORS_ENV] : undefined;
  const out = spec ? parseMirrorList(spec, MIRRORS_ENV) : new Map<string, RegistryMirror>();
  if (option !== undefined) {
    if (typeof option !== "object" || option === null || Array.isArray(option)) {
      throw new OciError(
        "SM_OCI_OPTIONS",
        `${optionName} must be an object mapping registry names to mirror URLs, e.g. { "docker.io": "http://127.0.0.1:5000" }`,
      );
    }
    for (const [k, v] of Object.entries(option)) {
      if (typeof v !== "string") throw badMirror(optionName, `${k}=${String(v)}`, "the URL must be a string");
      const m = parseMirror(k, v, optionName);
      out.set(m.registry, m);
    }
  }
  return out;
}

/** Base URL of a registry's API when no mirror applies: Docker Hub's real endpoint for `docker.io`. */
export function defaultEndpoint(registry: string, insecure: boolean): string {
  if (registry === DEFAULT_DOMAIN) return DOCKER_HUB_API;
  return `${insecure ? "http" : "https"}://${registry}`;
}
