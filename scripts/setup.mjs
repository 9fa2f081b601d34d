#!/usr/bin/env node
// Provisioning for @supermachine/*: system packages, kernel bundles, guest agent, test registry, fixtures.
// Idempotent and quiet: when everything is already there it prints one line. Safe to run concurrently
// (locks under the cache dir, stale locks detected). Every cache entry is written temp → verified → renamed.
//
//   node scripts/setup.mjs                 everything
//   node scripts/setup.mjs registry        only start (or confirm) the test registry
//   node scripts/setup.mjs registry-stop   stop the test registry (no process left behind)
//   node scripts/setup.mjs kernels|agent|fixtures|system
//   --quiet   print nothing but errors
// Exit codes: 0 ready, 1 failed, 2 needs root (the printed command), 3 only the guest agent build failed.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ensureFixtures } from "./lib/fixture-build.mjs";
import { ensureKernels } from "./lib/kernels.mjs";
import { ensureRegistry, stopRegistry } from "./lib/registry.mjs";
import { ensureSystemPackages, OPTIONAL } from "./lib/system.mjs";
import { activity, cacheDir, note, REPO_ROOT, run, say, setQuiet, which, withLock } from "./lib/util.mjs";

/** Build the static guest agent for both arches (when guest-agent/Makefile exists). */
export async function ensureAgent() {
  const dir = join(REPO_ROOT, "guest-agent");
  if (!existsSync(join(dir, "Makefile"))) return "guest agent: guest-agent/Makefile not there yet, skipped";
  for (const arch of ["x86_64", "aarch64"]) {
    const out = join(dir, "out", arch, "sm-agent");
    // Ask about the file itself: `make -q` of the default (phony) target always answers "out of date".
    const q = await run("make", ["-q", "-C", dir, `ARCH=${arch}`, `out/${arch}/sm-agent`], {
      allowFail: true,
    });
    if (q.code === 0 && existsSync(out)) continue; // up to date
    say(`guest agent: make ARCH=${arch}`);
    await run("make", ["-s", "-C", dir, `ARCH=${arch}`]);
    if (!existsSync(out)) return `guest agent: make ARCH=${arch} did not produce ${out}`;
  }
  return null;
}

/** Everything, in dependency order. Returns a summary object. */
export async function setupAll() {
  await ensureSystemPackages(); // before any lock or write: non-root + missing → instructions, exit 2
  const notes = [];
  for (const [bin, pkg] of OPTIONAL)
    if (!which(bin)) notes.push(`optional ${bin} not installed (apt-get install ${pkg})`);
  const { bundles, notes: kn } = await withLock("setup", () => ensureKernels());
  notes.push(...kn);
  // A broken agent build must not keep the registry and fixtures from being provisioned: report it last.
  let agentError = null;
  try {
    const agentNote = await withLock("setup", () => ensureAgent());
    if (agentNote) notes.push(agentNote);
  } catch (e) {
    agentError = e;
  }
  const reg = await ensureRegistry();
  const fx = await ensureFixtures();
  if (agentError) {
    agentError.message = `guest agent build failed (everything else is provisioned):\n${agentError.message}`;
    agentError.exitCode = 3; // drivers may go on with the other steps
    throw agentError;
  }
  return { bundles, registry: reg.host, fixtures: Object.keys(fx.images), notes };
}

async function main(argv) {
  const args = argv.filter((a) => !a.startsWith("--"));
  if (argv.includes("--quiet")) setQuiet(true);
  const cmd = args[0] ?? "all";
  const t0 = Date.now();
  const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
  switch (cmd) {
    case "all": {
      const s = await setupAll();
      const what = `registry ${s.registry}, kernels ${Object.keys(s.bundles).join("+")}, fixtures ${s.fixtures.join(" ")}`;
      const extra = s.notes.length ? `; note: ${s.notes.join("; ")}` : "";
      if (activity.count === 0) console.log(`setup: everything is ready (${what})${extra}`);
      else console.log(`setup: done in ${secs()} s (${what})${extra}`);
      return;
    }
    case "system":
      await ensureSystemPackages();
      console.log("setup: system packages are installed");
      return;
    case "kernels": {
      await ensureSystemPackages();
      const { bundles, notes } = await withLock("setup", () => ensureKernels());
      for (const [a, d] of Object.entries(bundles)) console.log(`${a}\t${d}`);
      for (const n of notes) note(n);
      return;
    }
    case "agent": {
      const n = await withLock("setup", () => ensureAgent());
      console.log(n ?? "setup: guest agent built");
      return;
    }
    case "registry": {
      const r = await ensureRegistry();
      // When it was started, the progress line already said so (stderr); stdout always gets the host.
      if (activity.count === 0) console.log(`setup: registry running on ${r.host} (pid ${r.pid})`);
      else console.log(r.host);
      return;
    }
    case "registry-stop": {
      const pids = await stopRegistry();
      console.log(
        pids.length ? `setup: registry stopped (pid ${pids.join(", ")})` : "setup: registry was not running",
      );
      return;
    }
    case "fixtures": {
      const doc = await ensureFixtures();
      console.log(JSON.stringify(doc, null, 2));
      return;
    }
    case "status": {
      const p = join(cacheDir(), "fixtures", "fixtures.json");
      console.log(existsSync(p) ? readFileSync(p, "utf8") : "no fixtures.json yet");
      return;
    }
    default:
      console.error(
        `unknown command ${cmd}; use: all | system | kernels | agent | registry | registry-stop | fixtures | status`,
      );
      process.exitCode = 64;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.once(sig, () => {
      process.stderr.write(
        `\nsetup: interrupted (${sig}); the next run resumes from the last complete step\n`,
      );
      process.exit(130); // the exit handler removes our lock files; temp dirs are cleaned next run
    });
  }
  main(process.argv.slice(2)).catch((e) => {
    console.error(`setup: ERROR: ${e.message}`);
    process.exit(e.exitCode ?? 1);
  });
}
