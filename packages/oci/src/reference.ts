import { OciError } from "./errors";

/**
 * Image references, parsed and normalised the way Docker does it
 * (distribution/reference `ParseNormalizedNamed` + `TagNameOnly`):
 * `alpine` → `docker.io/library/alpine:latest`.
 */
export interface ImageReference {
  /** Registry host with optional port, e.g. `127.0.0.1:5000` or `docker.io`. */
  readonly registry: string;
  /** Repository path inside the registry, e.g. `library/alpine`. */
  readonly repository: string;
  /** Tag; `latest` when neither tag nor digest was given. */
  readonly tag: string | undefined;
  /** Digest (`sha256:<hex>`) when the reference pins one. */
  readonly digest: string | undefined;
}

/** The default registry domain of unqualified names (Docker's convention). */
export const DEFAULT_DOMAIN = "docker.io";
/**
 * Where Docker Hub's registry API really lives: `docker.io` is only the name images carry.
 * docker, skopeo and containerd all send `docker.io` requests here.
 */
export const DOCKER_HUB_API = "https://registry-1.docker.io";
/** Other spellings of Docker Hub, normalised to `docker.io` (Docker does this for `index.docker.io`). */
const DOCKER_HUB_ALIASES = new Set(["index.docker.io", "registry-1.docker.io"]);
const OFFICIAL_NAMESPACE = "library";
const NAME_TOTAL_MAX = 255;

const ALNUM = "[a-z0-9]+";
const SEPARATOR = "(?:[._]|__|[-]+)";
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const IPV6 = "\\[(?:[a-fA-F0-9:]+)\\]";
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6})(?::[0-9]+)?`;
const TAG = "[\\w][\\w.-]{0,127}";
const DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
const DOMAIN_RE = new RegExp(`^${DOMAIN}$`);
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const TAG_RE = new RegExp(`^${TAG}$`);
const DIGEST_RE = new RegExp(`^${DIGEST}$`);
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
const HEX64_RE = /^[a-f0-9]{64}$/;
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

function invalid(input: string, why: string): OciError {
  return new OciError(
    "SM_INVALID_REFERENCE",
    `invalid image reference "${input}": ${why}. Expected [registry[:port]/]repository[:tag][@sha256:<hex>], e.g. "alpine:3.20" or "127.0.0.1:5000/team/app@sha256:…".`,
  );
}

/** Parse and normalise an image reference. Throws `SM_INVALID_REFERENCE`. */
export function parseReference(input: string): ImageReference {
  if (typeof input !== "string" || input.length === 0) throw invalid(String(input), "it is empty");
  if (/\s/.test(input)) throw invalid(input, "it contains whitespace");
  if (HEX64_RE.test(input))
    throw invalid(input, "a 64-character hexadecimal string cannot be a repository name");

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw invalid(input, `"${digest}" is not a valid digest`);
    const [alg, hex] = digest.split(":") as [string, string];
    const hexLen = DIGEST_HEX_LENGTH[alg];
    if (hexLen === undefined) throw invalid(input, `unsupported digest algorithm "${alg}"`);
    if (hex.length !== hexLen || !/^[a-f0-9]+$/.test(hex)) {
      throw invalid(input, `a ${alg} digest must be ${hexLen} lowercase hexadecimal characters`);
    }
  }
  // A tag is after the last ":" that follows the last "/" (a ":" before it is a port).
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.indexOf(":", lastSlash + 1);
  if (colon !== -1) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(input, `"${tag}" is not a valid tag`);
  }
  if (rest.length === 0) throw invalid(input, "the repository name is missing");

  // Docker's splitDockerDomain: the first component is a registry when it has "." or ":",
  // is "localhost", or has an uppercase letter.
  let registry: string;
  let repository: string;
  const slash = rest.indexOf("/");
  const first = slash === -1 ? "" : rest.slice(0, slash);
  if (
    slash === -1 ||
    (!/[.:]/.test(first) && first !== "localhost" && first.toLowerCase() === first && !first.startsWith("["))
  ) {
    registry = DEFAULT_DOMAIN;
    repository = rest;
  } else {
    registry = first;
    repository = rest.slice(slash + 1);
  }
  if (DOCKER_HUB_ALIASES.has(registry.toLowerCase())) registry = DEFAULT_DOMAIN;
  if (registry === DEFAULT_DOMAIN && !repository.includes("/"))
    repository = `${OFFICIAL_NAMESPACE}/${repository}`;
  if (!DOMAIN_RE.test(registry)) throw invalid(input, `"${registry}" is not a valid registry host`);
  if (repository.toLowerCase() !== repository) throw invalid(input, "the repository name must be lowercase");
  if (!PATH_RE.test(repository)) {
    throw invalid(
      input,
      `"${repository}" is not a valid repository path (lowercase letters, digits, separators . _ __ -, components joined by /)`,
    );
  }
  if (registry.length + 1 + repository.length > NAME_TOTAL_MAX) {
    throw invalid(input, `the repository name must not be longer than ${NAME_TOTAL_MAX} characters`);
  }
  if (tag === undefined && digest === undefined) tag = "latest";
  return { registry, repository, tag, digest };
}

/** Fully qualified string: `docker.io/library/alpine:latest`, `host:5000/a/b:t@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** Short form as Docker prints it: `alpine:latest` for `docker.io/library/alpine:latest`. */
export function familiarReference(ref: ImageReference): string {
  let name = `${ref.registry}/${ref.repository}`;
  if (ref.registry === DEFAULT_DOMAIN) {
    name = ref.repository.startsWith(`${OFFICIAL_NAMESPACE}/`)
      ? ref.repository.slice(OFFICIAL_NAMESPACE.length + 1)
      : ref.repository;
  }
  if (ref.tag !== undefined) name += `:${ref.tag}`;
  if (ref.digest !== undefined) name += `@${ref.digest}`;
  return name;
}

/** The part the registry's manifest endpoint takes: the digest when pinned, else the tag. */
export function referenceTarget(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

/**
 * The registry part of a name as references carry it: lowercase, Docker Hub's other host names
 * (`index.docker.io`, `registry-1.docker.io`) → `docker.io`. Undefined when `host` cannot be the
 * registry of a reference (Docker's rule: it has a `.` or a `:`, or is `localhost`).
 */
export function normaliseRegistry(host: string): string | undefined {
  const h = host.toLowerCase();
  if (!DOMAIN_RE.test(h)) return undefined;
  if (!/[.:]/.test(h) && h !== "localhost") return undefined;
  return DOCKER_HUB_ALIASES.has(h) ? DEFAULT_DOMAIN : h;
}

export function isSha256Digest(s: string): boolean {
  return SHA256_RE.test(s);
}
