// Real docker-registry instances (Debian `docker-registry`, distribution 2.8) on 127.0.0.1 for tests.
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { createSign, randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

export interface TestRegistry {
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

export type RegistryAuth =
  | { kind: "none" }
  | { kind: "htpasswd"; username: string; password: string }
  | { kind: "token"; realm: string; service: string; issuer: string; certPath: string };

function authYaml(auth: RegistryAuth, dir: string): string {
  if (auth.kind === "htpasswd") {
    const file = join(dir, "htpasswd");
    execFileSync("htpasswd", ["-Bbc", file, auth.username, auth.password], { stdio: "ignore" });
    return `auth:\n  htpasswd:\n    realm: test-realm\n    path: ${file}\n`;
  }
  if (auth.kind === "token") {
    return `auth:\n  token:\n    realm: ${auth.realm}\n    service: ${auth.service}\n    issuer: ${auth.issuer}\n    rootcertbundle: ${auth.certPath}\n`;
  }
  return "";
}

/** Start a docker-registry on a free 127.0.0.1 port; resolves when /v2/ answers. */
export async function startRegistry(auth: RegistryAuth = { kind: "none" }): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), "sm-oci-reg-"));
  const port = await freePort();
  const cfg = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${authYaml(auth, dir)}`;
  writeFileSync(join(dir, "config.yml"), cfg);
  const proc: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, OTEL_TRACES_EXPORTER: "none" },
  });
  let stderr = "";
  proc.stderr?.on("data", (d) => {
    stderr += String(d);
    if (stderr.length > 20000) stderr = stderr.slice(-10000);
  });
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          proc.kill("SIGKILL");
          resolve();
        }, 3000);
        proc.once("exit", () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
    const status = await new Promise<number>((resolve) => {
      const req = httpRequest({ host: "127.0.0.1", port, path: "/v2/", method: "GET" }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", () => resolve(0));
      req.end();
    });
    if (status === 200 || status === 401) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not come up: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { host: `127.0.0.1:${port}`, port, dir, stop };
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString("base64url");
}

export interface TokenIssuer {
  realm: string;
  service: string;
  issuer: string;
  certPath: string;
  /** Lifetime of issued tokens (settable). */
  expiresInS: number;
  /** Requests received: scopes asked for and whether Basic credentials were valid. */
  requests: Array<{ scopes: string[]; authorized: boolean }>;
  stop(): Promise<void>;
}

/**
 * A small token service (Docker registry token auth): validates Basic credentials, grants the
 * requested repository actions, signs an RS256 JWT with a self-signed certificate the registry
 * trusts (rootcertbundle) and puts the certificate in the JWT's x5c header.
 */
export async function startTokenIssuer(opts: {
  username: string;
  password: string;
  expiresInS?: number;
  /** Accepted in the refresh-token grant (POST). */
  refreshToken?: string;
  /** Grant `pull` to callers without credentials. */
  anonymousPull?: boolean;
}): Promise<TokenIssuer> {
  const dir = mkdtempSync(join(tmpdir(), "sm-oci-tok-"));
  const keyPath = join(dir, "key.pem");
  const certPath = join(dir, "cert.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      keyPath,
      "-out",
      certPath,
      "-days",
      "2",
      "-subj",
      "/CN=sm-test-token-issuer",
    ],
    { stdio: "ignore" },
  );
  const key = readFileSync(keyPath, "utf8");
  const certDer = new X509Certificate(readFileSync(certPath)).raw;
  const service = "sm-test-registry";
  const issuer = "sm-test-issuer";
  const requests: TokenIssuer["requests"] = [];
  const state = { expiresInS: opts.expiresInS ?? 300 };
  const server: Server = createServer((req: IncomingMessage, res) => {
    void handle(req, res);
  });
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x");
    let params = url.searchParams;
    if (req.method === "POST") {
      // OAuth2 refresh-token grant (Docker identity tokens).
      let body = "";
      for await (const c of req) body += String(c);
      params = new URLSearchParams(body);
    }
    const scopes = params
      .getAll("scope")
      .flatMap((s) => s.split(" "))
      .filter(Boolean);
    const authz = req.headers.authorization ?? "";
    const expected = `Basic ${Buffer.from(`${opts.username}:${opts.password}`).toString("base64")}`;
    const authorized =
      req.method === "POST"
        ? params.get("grant_type") === "refresh_token" && params.get("refresh_token") === opts.refreshToken
        : authz === expected;
    const anonymous = req.method === "GET" && authz === "" && opts.anonymousPull === true;
    requests.push({ scopes, authorized });
    if (!authorized && !anonymous) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ details: "bad credentials" }));
      return;
    }
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(":");
      const actions = (rest.pop() ?? "").split(",").filter(Boolean);
      // Anonymous callers may only pull.
      return {
        type,
        name: rest.join(":"),
        actions: anonymous ? actions.filter((a) => a === "pull") : actions,
      };
    });
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = state.expiresInS;
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer.toString("base64")] };
    const claims = {
      iss: issuer,
      sub: opts.username,
      aud: service,
      exp: now + expiresIn,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString("hex"),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign("RSA-SHA256").update(signingInput).sign(key);
    const token = `${signingInput}.${b64url(sig)}`;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: expiresIn,
        issued_at: new Date().toISOString(),
      }),
    );
  };
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    get expiresInS() {
      return state.expiresInS;
    },
    set expiresInS(v: number) {
      state.expiresInS = v;
    },
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    requests,
    stop: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections?.();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A reverse proxy in front of a registry that can tamper with blob downloads:
 * `flip` flips one byte in the middle of each blob body, `dropOnce` sends half of the first
 * response for each blob URL and range end, then destroys the socket, `redirect` answers blob GETs
 * with a 307 to the registry itself (another origin), `noRanges` drops Range headers.
 */
export async function startProxy(
  target: string,
  mode: { flip?: boolean; dropOnce?: boolean; redirect?: boolean; noRanges?: boolean },
): Promise<{ host: string; rangeRequests: string[]; stop(): Promise<void> }> {
  const [thost, tport] = target.split(":");
  const dropped = new Set<string>();
  const rangeRequests: string[] = [];
  const server = createServer((req, res) => {
    const isBlob = req.method === "GET" && /\/blobs\/sha256:/.test(req.url ?? "");
    if (req.headers.range) rangeRequests.push(`${req.url} ${req.headers.range}`);
    if (isBlob && mode.redirect) {
      // Like a registry handing blobs to a CDN: a different origin.
      res.writeHead(307, { location: `http://${target}${req.url}` });
      res.end();
      return;
    }
    const headers = { ...req.headers, host: target };
    if (mode.noRanges) delete headers.range; // a server without Range support answers 200
    const up = httpRequest(
      { host: thost, port: Number(tport), path: req.url, method: req.method, headers },
      (ur) => {
        if (!isBlob || (ur.statusCode !== 200 && ur.statusCode !== 206)) {
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          ur.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        ur.on("data", (c: Buffer) => chunks.push(c));
        ur.on("end", () => {
          const body = Buffer.concat(chunks);
          if (mode.flip && body.length > 0) {
            const i = Math.floor(body.length / 2);
            body[i] = body[i]! ^ 0xff;
          }
          // Once per blob and range end: a resumed request (same end, later start) goes through.
          const key = `${req.url} ${/bytes=\d+-(\d*)/.exec(req.headers.range ?? "")?.[1] ?? ""}`;
          if (mode.dropOnce && !dropped.has(key) && body.length > 1) {
            dropped.add(key);
            res.writeHead(ur.statusCode ?? 200, { ...ur.headers, "content-length": String(body.length) });
            res.write(body.subarray(0, Math.floor(body.length / 2)), () => {
              setTimeout(() => res.socket?.destroy(), 20);
            });
            return;
          }
          res.writeHead(ur.statusCode ?? 200, ur.headers);
          res.end(body);
        });
      },
    );
    up.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    host: `127.0.0.1:${port}`,
    rangeRequests,
    stop: async () => {
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Run skopeo asynchronously (the event loop must keep serving in-process token issuers/proxies). */
export async function skopeo(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("skopeo", args, { encoding: "utf8", timeout: 120_000 });
  return stdout;
}
