// The test registry: Debian's docker-registry (distribution v2) on 127.0.0.1:<free port>, config and storage
// under CACHE/registry, state in CACHE/registry/state.json = { host, pid, port }.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { basename, join } from "node:path";
import {
  cacheDir,
  note,
  pidAlive,
  procCmdline,
  readJson,
  SetupError,
  say,
  sharesOurRoot,
  sleep,
  which,
  withLock,
  writeFileAtomic,
  writeJsonAtomic,
} from "./util.mjs";

export const registryDir = () => join(cacheDir(), "registry");
/** Port tried first when none is recorded (docker-registry's conventional port; the README's quick start). */
export const DEFAULT_PORT = 5000;
const statePath = () => join(registryDir(), "state.json");
const portPath = () => join(registryDir(), "port");
const configPath = () => join(registryDir(), "config.yml");
const logPath = () => join(registryDir(), "registry.log");

/** True when pid is a docker-registry process serving OUR config file. */
export function isOurRegistry(pid) {
  const argv = procCmdline(pid);
  if (!argv || argv.length === 0) return false;
  // Same command line in another root (a chroot with its own HOME=/root) is someone else's registry.
  return basename(argv[0]) === "docker-registry" && argv.includes(configPath()) && sharesOurRoot(pid);
}

/** All running docker-registry processes using our config (there should be at most one). */
function findOurRegistries() {
  const pids = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid !== process.pid && isOurRegistry(pid)) pids.push(pid);
  }
  return pids;
}

export async function healthy(port, timeoutMs = 2000) {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/v2/`, { signal: AbortSignal.timeout(timeoutMs) });
    await r.arrayBuffer();
    return r.status === 200;
  } catch {
    return false;
  }
}

/** Can we bind 127.0.0.1:port right now? port 0 → returns the ephemeral port chosen by the kernel. */
export function tryListen(port) {
  return new Promise((res) => {
    const s = createServer();
    s.once("error", () => res(null));
    s.listen({ port, host: "127.0.0.1", exclusive: true }, () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
}

function readState() {
  const s = readJson(statePath());
  if (!s || !Number.isInteger(s.pid) || !Number.isInteger(s.port)) return null;
  return s;
}

/** Fast path without lock: the recorded registry is alive, ours, and answers. */
export async function runningRegistry() {
  const s = readState();
  if (!s || !pidAlive(s.pid) || !isOurRegistry(s.pid)) return null;
  return (await healthy(s.port)) ? { host: s.host, port: s.port, pid: s.pid } : null;
}

function writeConfig(port) {
  const storage = join(registryDir(), "storage");
  mkdirSync(storage, { recursive: true });
  // YAML written by hand (no deps). Health checks of the storage driver are off: one local process.
  writeFileAtomic(
    configPath(),
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${JSON.stringify(storage)}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(16).toString("hex")}`,
      "  headers:",
      "    X-Content-Type-Options: [nosniff]",
      "",
    ].join("\n"),
  );
}

async function startOnce(port) {
  writeConfig(port);
  const log = openSync(logPath(), "a");
  // detached → setsid(): own session, survives this process; stdout/stderr to the log file.
  const child = spawn("docker-registry", ["serve", configPath()], {
    cwd: registryDir(),
    detached: true,
    stdio: ["ignore", log, log],
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("REGISTRY_"))),
  });
  closeSync(log);
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  child.once("error", () => {
    exited = true;
  });
  child.unref();
  const pid = child.pid;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (exited || !pidAlive(pid)) break;
    if (await healthy(port, 1000)) {
      const state = { host: `127.0.0.1:${port}`, pid, port };
      writeJsonAtomic(statePath(), state);
      writeFileAtomic(portPath(), `${port}\n`);
      return state;
    }
    await sleep(100);
  }
  if (pidAlive(pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  return null;
}

/**
 * Ensure the registry runs; returns { host, port, pid }. Recorded port first; if someone else holds it,
 * another free port is chosen and recorded. A stale state file (dead pid / not our registry) is replaced.
 */
export async function ensureRegistry() {
  const fast = await runningRegistry();
  if (fast) return fast;
  if (!which("docker-registry")) throw new SetupError("docker-registry is not installed (run setup)");
  return withLock("registry", async () => {
    mkdirSync(registryDir(), { recursive: true });
    const s = readState();
    if (s) {
      if (pidAlive(s.pid) && isOurRegistry(s.pid)) {
        // Be patient before restarting: under heavy load (TCG VMs on 2 cores) it may just be slow, and other
        // tests may be pulling from it right now.
        for (let i = 0; i < 3; i++) {
          if (await healthy(s.port, 5000)) return { host: s.host, port: s.port, pid: s.pid };
        }
        note(`registry pid ${s.pid} does not answer; restarting it`);
        await killPid(s.pid);
      } else {
        note(
          `stale registry state (pid ${s.pid} ${pidAlive(s.pid) ? "is not our docker-registry" : "is gone"}); replacing it`,
        );
      }
      rmSync(statePath(), { force: true });
    }
    for (const pid of findOurRegistries()) await killPid(pid); // orphans with our config
    let recorded = Number.parseInt(readFileSafe(portPath()), 10) || s?.port || 0;
    if (!(recorded >= 1024 && recorded < 65536)) recorded = 0; // never a privileged or invalid port
    // First start: the registry's conventional port, which the README's quick start names, when it is free.
    if (!recorded && (await tryListen(DEFAULT_PORT))) recorded = DEFAULT_PORT;
    for (let attempt = 0; attempt < 5; attempt++) {
      let port = recorded && (await tryListen(recorded)) ? recorded : 0;
      if (!port) {
        if (recorded) note(`registry port ${recorded} is taken by another process; choosing another`);
        port = await tryListen(0);
      }
      const state = await startOnce(port);
      if (state) {
        say(`registry started on ${state.host} (pid ${state.pid})`);
        return state;
      }
      recorded = 0; // port lost in a race or unusable: pick a fresh one
    }
    const tail = readFileSafe(logPath()).trim().split("\n").slice(-10).join("\n");
    throw new SetupError(`docker-registry did not start; see ${logPath()}:\n${tail}`);
  });
}

function readFileSafe(p) {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return "";
  }
}

async function killPid(pid) {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 50 && pidAlive(pid); i++) await sleep(100);
  if (pidAlive(pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
    for (let i = 0; i < 50 && pidAlive(pid); i++) await sleep(100);
  }
}

/** Stop the registry (the recorded one and any orphan serving our config). Returns the pids stopped. */
export async function stopRegistry() {
  return withLock("registry", async () => {
    const stopped = [];
    const s = readState();
    if (s && pidAlive(s.pid) && isOurRegistry(s.pid)) {
      await killPid(s.pid);
      stopped.push(s.pid);
    }
    for (const pid of findOurRegistries()) {
      await killPid(pid);
      stopped.push(pid);
    }
    rmSync(statePath(), { force: true });
    return stopped;
  });
}
