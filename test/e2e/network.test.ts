/**
 * The host-enforced guest network (README "Network") against real servers: a test host in a network
 * namespace this file creates (198.18.0.0/15, HTTP and HTTPS), servers on the host's 127.0.0.1 and
 * on the host's own address, names given through /etc/hosts (restored afterwards). Needs root (ip
 * netns); skipped otherwise.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Image,
  type NetworkBlockedEvent,
  onNetworkBlocked,
  type Pool,
  type Vm,
} from "../../packages/core/src/index";
import { fixtures } from "../../scripts/lib/fixtures.mjs";
import { type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

const root = process.getuid?.() === 0;
const tag = (process.pid % 60000).toString(36);
const NS = `smnet-${tag}`;
const VH = `smh${tag}`;
const VN = `smn${tag}`;
// a /30 in 198.18.0.0/15 per test process
const sub = 4 * (process.pid % 16000);
const net = (n: number) =>
  `198.${18 + Math.floor((sub + n) / 65536)}.${Math.floor(((sub + n) % 65536) / 256)}.${(sub + n) % 256}`;
const HOST_SIDE = net(1);
const TEST_HOST = net(2);
const NAME = `testhost-${tag}.smtest`;
const OTHER = `other-${tag}.smtest`;
const EVIL = `evil-${tag}.smtest`;
const HOSTS_MARK = `# sm-network-test ${process.pid}`;

let refs: FixtureRefs;
let shared: string;
let tmp: string;
const procs: ChildProcess[] = [];
const servers: Server[] = [];
const pools: Pool[] = [];
let loopPort = 0;
let hostAddr = "";
let hostAddrPort = 0;
const blocked: NetworkBlockedEvent[] = [];
let offBlocked: (() => void) | undefined;

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });

function inNs(cmd: string, args: string[]): ChildProcess {
  const p = spawn("ip", ["netns", "exec", NS, cmd, ...args], { stdio: "ignore" });
  procs.push(p);
  return p;
}

async function listenHost(host: string): Promise<number> {
  const s = createServer((_req, res) => res.end("HOST-SECRET\n"));
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  return (s.address() as { port: number }).port;
}

async function waitTcp(host: string, port: number): Promise<void> {
  const { connect } = await import("node:net");
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = connect({ host, port }, () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${host}:${port} never listened`);
}

function hostsAdd(lines: string[]): void {
  const cur = readFileSync("/etc/hosts", "utf8");
  writeFileSync(
    "/etc/hosts",
    `${cur.endsWith("\n") ? cur : `${cur}\n`}${lines.map((l) => `${l} ${HOSTS_MARK}`).join("\n")}\n`,
  );
}
function hostsRestore(): void {
  const cur = readFileSync("/etc/hosts", "utf8");
  writeFileSync(
    "/etc/hosts",
    cur
      .split("\n")
      .filter((l) => !l.endsWith(HOSTS_MARK))
      .join("\n"),
  );
}

beforeAll(async () => {
  if (!root) return;
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
  tmp = mkdtempSync(join(tmpdir(), "sm-net-"));
  ip("netns", "add", NS);
  ip("link", "add", VH, "type", "veth", "peer", "name", VN);
  ip("link", "set", VN, "netns", NS);
  ip("addr", "add", `${HOST_SIDE}/30`, "dev", VH);
  ip("link", "set", VH, "up");
  ip("netns", "exec", NS, "ip", "addr", "add", `${TEST_HOST}/30`, "dev", VN);
  ip("netns", "exec", NS, "ip", "link", "set", VN, "up");
  ip("netns", "exec", NS, "ip", "link", "set", "lo", "up");
  writeFileSync(join(tmp, "index.html"), "TEST-HOST-OK\n");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      `/CN=${NAME}`,
      "-addext",
      `subjectAltName=DNS:${NAME}`,
      "-keyout",
      join(tmp, "key.pem"),
      "-out",
      join(tmp, "cert.pem"),
    ],
    { stdio: "pipe" },
  );
  inNs("python3", ["-m", "http.server", "8080", "--bind", TEST_HOST, "--directory", tmp]);
  const https = `
import http.server, ssl, functools
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=${JSON.stringify(tmp)})
s = http.server.ThreadingHTTPServer((${JSON.stringify(TEST_HOST)}, 8443), h)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.set_ciphers("ALL:@SECLEVEL=0"); c.maximum_version = ssl.TLSVersion.TLSv1_2  # busybox wget's TLS
c.load_cert_chain(${JSON.stringify(join(tmp, "cert.pem"))}, ${JSON.stringify(join(tmp, "key.pem"))})
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()`;
  inNs("python3", ["-c", https]);
  // A sink: per connection, the byte count and sha256 of everything received, written at EOF.
  const sink = `
import socket, threading, hashlib, os
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((${JSON.stringify(TEST_HOST)}, 9009)); s.listen(16)
def take(c, n):
    h, total = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        h.update(b); total += len(b)
    c.close()
    p = os.path.join(${JSON.stringify(tmp)}, "sink-%d" % n)
    open(p + ".tmp", "w").write("%d %s\\n" % (total, h.hexdigest())); os.rename(p + ".tmp", p)
n = 0
while True:
    c, _ = s.accept(); n += 1; threading.Thread(target=take, args=(c, n), daemon=True).start()`;
  inNs("python3", ["-c", sink]);
  await waitTcp(TEST_HOST, 8080);
  await waitTcp(TEST_HOST, 8443);
  await waitTcp(TEST_HOST, 9009);
  loopPort = await listenHost("127.0.0.1");
  // the host's own address: the source address of its default route (else any non-internal one)
  const viaDefault = /\bsrc (\S+)/.exec(
    (() => {
      try {
        return execFileSync("ip", ["-4", "route", "get", "1.1.1.1"], { encoding: "utf8" });
      } catch {
        return "";
      }
    })(),
  )?.[1];
  hostAddr =
    viaDefault ??
    Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === "IPv4" && !i.internal && i.address !== HOST_SIDE)?.address ??
    HOST_SIDE;
  hostAddrPort = await listenHost(hostAddr);
  hostsAdd([`${TEST_HOST} ${NAME} ${OTHER}`, `127.0.0.1 ${EVIL}`]);
  offBlocked = onNetworkBlocked((e) => blocked.push(e));
}, 120_000);

afterAll(async () => {
  offBlocked?.();
  await Promise.all(pools.map((p) => p.shutdown()));
  for (const s of servers) s.close();
  for (const p of procs) p.kill("SIGKILL");
  if (!root) return;
  hostsRestore();
  try {
    ip("link", "del", VH);
  } catch {}
  try {
    ip("netns", "del", NS);
  } catch {}
  rmSync(tmp, { recursive: true, force: true });
});

async function sh(vm: Vm, script: string, timeoutMs = 60_000) {
  const r = await vm.exec({ argv: ["sh", "-c", script], timeoutMs });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}
// busybox 1.35 wget segfaults with -T (also on the host): bound it with timeout(1) instead
const get = (url: string) => `timeout 15 wget -q -O - ${url}`;

describe.skipIf(!root)("guest network enforced on the host (real servers)", () => {
  let image: Image | undefined;
  const poolOf = async (network?: unknown) => {
    image ??= await Image.build({ ref: refs.busybox, snapshotsDir: shared });
    const p = await image.pool({
      min: 0,
      max: 1,
      ...(network === undefined ? {} : { network: network as never }),
    });
    pools.push(p);
    return p;
  };

  it('"public" (the default) reaches the test host over HTTP and HTTPS, by address and by name', async () => {
    const vm = await (await poolOf()).acquire();
    try {
      expect(await sh(vm, get(`http://${TEST_HOST}:8080/index.html`))).toMatchObject({
        code: 0,
        out: "TEST-HOST-OK\n",
      });
      expect(await sh(vm, get(`http://${NAME}:8080/index.html`))).toMatchObject({
        code: 0,
        out: "TEST-HOST-OK\n",
      });
      const tls = await sh(
        vm,
        `timeout 15 wget -q --no-check-certificate -O - https://${NAME}:8443/index.html`,
      );
      expect(tls).toMatchObject({ code: 0, out: "TEST-HOST-OK\n" });
      // nc too (a different connect path: busybox nc, blocking socket)
      const nc = await sh(vm, `printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${TEST_HOST} 8080`);
      expect(nc.out).toContain("TEST-HOST-OK");
    } finally {
      await vm.release();
    }
  });

  it("the host's loopback and own address stay unreachable; a name resolving to 127.0.0.1 too", async () => {
    const vm = await (await poolOf()).acquire();
    try {
      const before = blocked.length;
      for (const url of [
        `http://127.0.0.1:${loopPort}/`, // the guest's own loopback: nothing listens there
        `http://${hostAddr}:${hostAddrPort}/`,
        `http://${HOST_SIDE}:${loopPort}/`,
        `http://10.0.2.2:${loopPort}/`,
        `http://169.254.169.254/`,
        `http://${EVIL}:${loopPort}/`,
      ]) {
        const r = await sh(vm, get(url));
        expect(r.code, url).not.toBe(0);
        expect(r.out).not.toContain("HOST-SECRET");
      }
      expect(blocked.length).toBeGreaterThan(before);
      expect(
        blocked.some((e) => e.destination === `${hostAddr}:${hostAddrPort}` && /always-denied/.test(e.rule)),
      ).toBe(true);
    } finally {
      await vm.release();
    }
  });

  it("a guest root that rewrites its routes and addresses still reaches only what the policy allows", async () => {
    const vm = await (await poolOf()).acquire();
    try {
      const r = await sh(
        vm,
        "ip route flush all 2>/dev/null; ip addr add 10.0.2.15/24 dev lo 2>/dev/null; ip route add default dev lo 2>/dev/null; " +
          "iptables -F 2>/dev/null; " +
          `${get(`http://10.0.2.2:${loopPort}/`)} ; echo rc=$?; ${get(`http://${hostAddr}:${hostAddrPort}/`)} ; echo rc=$?; ` +
          get(`http://${TEST_HOST}:8080/index.html`),
      );
      expect(r.out).not.toContain("HOST-SECRET");
      expect(r.out).toContain("TEST-HOST-OK");
    } finally {
      await vm.release();
    }
  });

  it('"none" reaches nothing, DNS included', async () => {
    const vm = await (await poolOf("none")).acquire();
    try {
      expect((await sh(vm, get(`http://${TEST_HOST}:8080/index.html`))).code).not.toBe(0);
      expect((await sh(vm, `nslookup ${NAME} 127.0.0.53`)).out).not.toContain(TEST_HOST);
    } finally {
      await vm.release();
    }
  });

  it("an allow list by name admits exactly that name; deny wins; setNetwork changes a running VM", async () => {
    const vm = await (await poolOf({ allow: [`${NAME}:8080`] })).acquire();
    try {
      // resolved through the host: the name's address is admitted on that port only
      expect(await sh(vm, get(`http://${NAME}:8080/index.html`))).toMatchObject({
        code: 0,
        out: "TEST-HOST-OK\n",
      });
      expect(
        (await sh(vm, `timeout 15 wget -q --no-check-certificate -O - https://${NAME}:8443/index.html`)).code,
      ).not.toBe(0);
      expect((await sh(vm, get(`http://${hostAddr}:${hostAddrPort}/`))).code).not.toBe(0);
      // names the list does not name are not even resolved (a DNS query is a way out too)
      expect((await sh(vm, `nslookup ${OTHER} 127.0.0.53`)).out).not.toContain(TEST_HOST);
      expect((await sh(vm, `nslookup ${NAME} 127.0.0.53`)).out).toContain(TEST_HOST);
      // the name to 127.0.0.1 stays blocked even when allowed by name
      vm.setNetwork({ allow: [EVIL, NAME] });
      expect((await sh(vm, get(`http://${EVIL}:${loopPort}/`))).out).not.toContain("HOST-SECRET");
      expect((await sh(vm, get(`http://${NAME}:8080/index.html`))).code).toBe(0);
      vm.setNetwork({ allow: [NAME], deny: [`${TEST_HOST}/32`] });
      expect((await sh(vm, get(`http://${NAME}:8080/index.html`))).code).not.toBe(0);
      vm.setNetwork("public");
      expect((await sh(vm, get(`http://${TEST_HOST}:8080/index.html`))).code).toBe(0);
      expect(() => vm.setNetwork({ allow: ["10.0.0.0/33"] })).toThrow(/network\.allow\[0\]/);
    } finally {
      await vm.release();
    }
  });

  it("an allow list by name admits a connection by its TLS SNI or HTTP Host when the host's DNS was not asked", async () => {
    const vm = await (await poolOf({ allow: [NAME] })).acquire();
    try {
      // the guest resolves the name itself (its own /etc/hosts): only SNI/Host can tell the host
      await sh(vm, `echo '${TEST_HOST} ${NAME} ${OTHER}' >> /etc/hosts`);
      const host = (h: string) =>
        sh(
          vm,
          `printf 'GET /index.html HTTP/1.0\\r\\nHost: ${h}:8080\\r\\n\\r\\n' | timeout 15 nc ${TEST_HOST} 8080`,
        );
      expect((await host(NAME)).out).toContain("TEST-HOST-OK");
      expect((await host(OTHER)).out).not.toContain("TEST-HOST-OK");
      const tls = await sh(
        vm,
        `timeout 15 wget -q --no-check-certificate -O - https://${NAME}:8443/index.html`,
      );
      expect(tls).toMatchObject({ code: 0, out: "TEST-HOST-OK\n" });
      const tlsOther = await sh(
        vm,
        `timeout 15 wget -q --no-check-certificate -O - https://${OTHER}:8443/index.html`,
      );
      expect(tlsOther.out).not.toContain("TEST-HOST-OK");
      expect(blocked.some((e) => e.names.includes(OTHER))).toBe(true);
    } finally {
      await vm.release();
    }
  });

  it("an allow entry naming the host's address lifts the always-denied set for exactly that address", async () => {
    const vm = await (await poolOf({ allow: [`${hostAddr}:${hostAddrPort}`] })).acquire();
    try {
      expect((await sh(vm, get(`http://${hostAddr}:${hostAddrPort}/`))).out).toBe("HOST-SECRET\n");
      expect((await sh(vm, get(`http://${TEST_HOST}:8080/index.html`))).code).not.toBe(0);
    } finally {
      await vm.release();
    }
  });

  it("glibc and nonblocking sockets: Python's getaddrinfo through the stub, connect + poll, AF_UNSPEC lookup by name", async () => {
    const f = (await fixtures()) as { images: Record<string, { ref: string }> };
    const py = await Image.build({ ref: f.images["debian-python"]!.ref, snapshotsDir: shared });
    const pool = await py.pool({ min: 0, max: 1 });
    pools.push(pool);
    const vm = await pool.acquire();
    try {
      const script = `
import socket, select
infos = socket.getaddrinfo(${JSON.stringify(NAME)}, 8080, socket.AF_INET, socket.SOCK_STREAM)
addr = infos[0][4]
s = socket.socket(); s.setblocking(False)
rc = s.connect_ex(addr)
select.select([], [s], [], 10)
err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
def fetch(s):
    s.setblocking(True); s.sendall(b"GET /index.html HTTP/1.0\\r\\n\\r\\n")
    body = b""
    while True:
        b = s.recv(65536)
        if not b: return body
        body += b
print(addr[0], rc in (0, 115), err, fetch(s).endswith(b"TEST-HOST-OK\\n"))
# AF_UNSPEC: glibc asks A and AAAA at once on one socket
print(fetch(socket.create_connection((${JSON.stringify(NAME)}, 8080), timeout=10)).split(b"\\r\\n\\r\\n")[1].decode().strip())
try:
    socket.create_connection(("${hostAddr}", ${hostAddrPort}), timeout=5)
    print("host reachable")
except OSError as e:
    print("host blocked", e.errno)
`;
      const r = await vm.exec({ argv: ["python3", "-c", script], timeoutMs: 60_000 });
      expect(r.stderr.toString()).toBe("");
      expect(r.stdout.toString()).toBe(`${TEST_HOST} True 0 True\nTEST-HOST-OK\nhost blocked 111\n`);
    } finally {
      await vm.release();
    }
  });

  it("an upload streamed in 1 KiB writes arrives whole and in order (the agent batches such reads)", async () => {
    // busybox nc writes what it reads from the pipe, 1 KiB at a time here: the agent reads such a
    // stream in batches (guest-agent SM_TCP_BATCH_MS) instead of once per write. Every byte must
    // still arrive, in order, and the end of the stream with it.
    const vm = await (await poolOf()).acquire();
    try {
      const before = new Set(readdirSync(tmp).filter((f) => f.startsWith("sink-")));
      const up = await sh(
        vm,
        `dd if=/dev/urandom of=/tmp/up bs=1k count=3072 2>/dev/null && ` +
          `dd if=/tmp/up bs=1k 2>/dev/null | nc ${TEST_HOST} 9009 && ` +
          `echo "$(wc -c < /tmp/up) $(sha256sum /tmp/up | cut -d' ' -f1)"`,
        180_000,
      );
      expect(up).toMatchObject({ code: 0 });
      let got: string[] = [];
      for (let i = 0; i < 100 && got.length === 0; i++) {
        got = readdirSync(tmp).filter((f) => f.startsWith("sink-") && !f.endsWith(".tmp") && !before.has(f));
        if (got.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
      expect(got).toHaveLength(1);
      expect(readFileSync(join(tmp, got[0]!), "utf8")).toBe(up.out);
      expect(up.out).toMatch(/^3145728 [0-9a-f]{64}\n$/);
    } finally {
      await vm.release();
    }
  });

  it("a guest flooding connects and DNS is bounded and the VM stays responsive", async () => {
    const vm = await (await poolOf()).acquire();
    try {
      const t0 = Date.now();
      await sh(
        vm,
        `i=0; while [ $i -lt 300 ]; do (nc -w 2 $hostAddr$hostAddrPort</dev/null >/dev/null 2>&1 &); i=$((i+1)); done; ` +
          `i=0; while [ $i -lt 300 ]; do (nslookup flood$i.$NAME127.0.0.53 >/dev/null 2>&1 &); i=$((i+1)); done; sleep 3`,
        120_000,
      );
      const ok = await sh(vm, get(`http://${TEST_HOST}:8080/index.html`));
      expect(ok).toMatchObject({ code: 0, out: "TEST-HOST-OK\n" });
      expect(Date.now() - t0).toBeLessThan(120_000);
    } finally {
      await vm.release();
    }
  });
});
