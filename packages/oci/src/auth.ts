import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";

/** One challenge from a `WWW-Authenticate` header. Scheme lowercased, parameter names lowercased. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse a `WWW-Authenticate` header value (RFC 7235): one or more challenges, each a scheme
 * followed by comma-separated `name=value` / `name="quoted \" value"` parameters.
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const readToken = () => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: AuthChallenge | undefined;
  while (i < n) {
    skipWs();
    if (header[i] === ",") {
      i++;
      continue;
    }
    const tok = readToken();
    if (tok === "") {
      i++; // garbage character: skip it
      continue;
    }
    skipWs();
    if (header[i] === "=" && current) {
      i++;
      skipWs();
      let value: string;
      if (header[i] === '"') {
        i++;
        value = "";
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && header[i] !== "," && header[i] !== " " && header[i] !== "\t") i++;
        value = header.slice(start, i);
      }
      current.params[tok.toLowerCase()] = value;
    } else if (header[i] === "=" && !current) {
      i++; // a parameter without a scheme: ignore
    } else {
      current = { scheme: tok.toLowerCase(), params: {} };
      out.push(current);
      // token68 form (e.g. `Negotiate abc==`) is not used by registries; tolerated by the loop.
    }
  }
  return out;
}

/** Credentials for one registry host. Secrets never appear in error messages or events. */
export type Credentials =
  | { kind: "basic"; username: string; password: string; source: string }
  /** An OAuth2 refresh token (Docker `identitytoken`), exchanged at the token realm. */
  | { kind: "identity"; username?: string; token: string; source: string }
  /** A ready bearer token sent as is (Docker `registrytoken`). */
  | { kind: "bearer"; token: string; source: string };

/** What callers may pass: plain objects, the `source` label is filled in. */
export type CredentialsInput =
  | { username: string; password: string }
  | { identityToken: string; username?: string }
  | { registryToken: string };

export function normalizeCredentials(c: CredentialsInput, source: string): Credentials {
  if ("registryToken" in c) return { kind: "bearer", token: c.registryToken, source };
  if ("identityToken" in c) {
    return c.username === undefined
      ? { kind: "identity", token: c.identityToken, source }
      : { kind: "identity", token: c.identityToken, username: c.username, source };
  }
  return { kind: "basic", username: c.username, password: c.password, source };
}

/** A description of credentials for messages: kind, user and where they came from — never the secret. */
export function describeCredentials(c: Credentials | undefined): string {
  if (!c) return "anonymous (no credentials configured for this registry)";
  if (c.kind === "basic") return `username "${c.username}" with password from ${c.source}`;
  if (c.kind === "identity")
    return `identity token${c.username ? ` of "${c.username}"` : ""} from ${c.source}`;
  return `registry token from ${c.source}`;
}

interface DockerConfigFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }
  >;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** Host names of Docker Hub's registry in docker config keys. */
const DOCKER_HUB_HOSTS = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);
/** The key `docker login` writes for Docker Hub. */
const DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/";

/** `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. */
export function defaultDockerConfigPath(): string {
  const dir = process.env.DOCKER_CONFIG || join(homedir(), ".docker");
  return join(dir, "config.json");
}

/** Strip scheme and path from a docker config key: `https://host:5000/v1/` → `host:5000`. */
export function dockerConfigKeyHost(key: string): string {
  let k = key.trim();
  k = k.replace(/^[a-z]+:\/\//i, "");
  const slash = k.indexOf("/");
  if (slash !== -1) k = k.slice(0, slash);
  return k.toLowerCase();
}

/**
 * Run a Docker credential helper (`docker-credential-<name> get`, server address on stdin).
 * Returns undefined when the helper has no credentials for the host.
 */
export async function runCredentialHelper(
  helper: string,
  serverAddress: string,
  timeoutMs = 10_000,
): Promise<Credentials | undefined> {
  const program = `docker-credential-${helper}`;
  const source = `credential helper ${program}`;
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
    (resolve, reject) => {
      const child = spawn(program, ["get"], { stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs });
      let out = "";
      let err = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        out += d;
      });
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        err += d;
      });
      child.on("error", reject);
      child.on("close", (c) => resolve({ code: c, stdout: out, stderr: err }));
      child.stdin.end(serverAddress);
    },
  );
  if (code !== 0) {
    if (/not found/i.test(stdout + stderr)) return undefined;
    throw new Error(`${program} get failed (exit ${code}): ${(stdout + stderr).trim().slice(0, 200)}`);
  }
  const doc = JSON.parse(stdout) as { Username?: string; Secret?: string };
  if (!doc.Secret) return undefined;
  if (doc.Username === "<token>") return { kind: "identity", token: doc.Secret, source };
  return { kind: "basic", username: doc.Username ?? "", password: doc.Secret, source };
}

/**
 * Credentials for `host` from a Docker config file: `credHelpers[host]`, then `auths[host]`
 * (`auth` base64 user:pass, `username`/`password`, `identitytoken`, `registrytoken`), then `credsStore`.
 */
export async function credentialsFromDockerConfig(
  host: string,
  configPath: string = defaultDockerConfigPath(),
): Promise<Credentials | undefined> {
  let doc: DockerConfigFile;
  try {
    doc = JSON.parse(await readFile(configPath, "utf8")) as DockerConfigFile;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const want = host.toLowerCase();
  // `docker login` stores Docker Hub under https://index.docker.io/v1/ and asks helpers for that address.
  const hub = DOCKER_HUB_HOSTS.has(want);
  const matches = (k: string) => {
    const h = dockerConfigKeyHost(k);
    return h === want || (hub && DOCKER_HUB_HOSTS.has(h));
  };
  const serverAddress = hub ? DOCKER_HUB_CONFIG_KEY : host;
  const helper = Object.entries(doc.credHelpers ?? {}).find(([k]) => matches(k))?.[1];
  if (helper) return runCredentialHelper(helper, serverAddress);
  const source = `docker config ${configPath}`;
  const entry = Object.entries(doc.auths ?? {}).find(([k]) => matches(k))?.[1];
  if (entry) {
    if (entry.identitytoken) {
      let username: string | undefined;
      if (entry.auth) username = Buffer.from(entry.auth, "base64").toString("utf8").split(":")[0];
      return username
        ? { kind: "identity", token: entry.identitytoken, username, source }
        : { kind: "identity", token: entry.identitytoken, source };
    }
    if (entry.registrytoken) return { kind: "bearer", token: entry.registrytoken, source };
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) {
        return {
          kind: "basic",
          username: decoded.slice(0, colon),
          password: decoded.slice(colon + 1),
          source,
        };
      }
    }
    if (entry.username && entry.password) {
      return { kind: "basic", username: entry.username, password: entry.password, source };
    }
  }
  if (doc.credsStore) return runCredentialHelper(doc.credsStore, serverAddress);
  return undefined;
}
