// Step runner shared by scripts/test.mjs and scripts/start.mjs: runs commands with inherited stdio,
// records status and duration, prints a summary table.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, which } from "./util.mjs";

export class Steps {
  constructor(title) {
    this.title = title;
    this.results = [];
    this.t0 = Date.now();
  }

  /** Run a command as a named step. Returns the exit code (0 = ok). */
  async cmd(name, cmd, args, opts = {}) {
    process.stdout.write(`\n\x1b[1m▶ ${name}\x1b[0m  (${[cmd, ...args].join(" ")})\n`);
    const t = Date.now();
    const code = await new Promise((resolve) => {
      const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: "inherit", env: opts.env ?? process.env });
      child.on("error", (e) => {
        process.stderr.write(`cannot run ${cmd}: ${e.message}\n`);
        resolve(127);
      });
      child.on("close", (c, sig) => resolve(c ?? (sig ? 128 : 1)));
    });
    this.results.push({
      name,
      status: code === 0 ? "ok" : `FAILED (exit ${code})`,
      secs: (Date.now() - t) / 1000,
    });
    return code;
  }

  skip(name, why) {
    process.stdout.write(`\n\x1b[1m▶ ${name}\x1b[0m  skipped: ${why}\n`);
    this.results.push({ name, status: `skipped: ${why}`, secs: 0 });
  }

  get failed() {
    return this.results.filter((r) => r.status.startsWith("FAILED"));
  }

  summary() {
    const w = Math.max(...this.results.map((r) => r.name.length), 4);
    const lines = [`\n\x1b[1m${this.title} summary\x1b[0m`];
    for (const r of this.results)
      lines.push(`  ${r.name.padEnd(w)}  ${r.secs.toFixed(1).padStart(6)} s  ${r.status}`);
    const total = ((Date.now() - this.t0) / 1000).toFixed(1);
    lines.push(
      this.failed.length
        ? `\x1b[31m${this.failed.length} step(s) failed: ${this.failed.map((r) => r.name).join(", ")} (total ${total} s)\x1b[0m`
        : `\x1b[32mall steps passed (total ${total} s)\x1b[0m`,
    );
    process.stdout.write(`${lines.join("\n")}\n`);
  }
}

/** `npm ci` (or `npm install` without a lockfile) when node_modules is missing. Returns the exit code. */
export async function ensureNodeModules(steps) {
  if (
    existsSync(join(REPO_ROOT, "node_modules", ".package-lock.json")) ||
    existsSync(join(REPO_ROOT, "node_modules", ".bin"))
  ) {
    return 0;
  }
  const npmArgs = existsSync(join(REPO_ROOT, "package-lock.json"))
    ? ["ci", "--no-audit", "--no-fund"]
    : ["install", "--no-audit", "--no-fund"];
  // Serialise with other npm runs on this machine (several people may share one checkout).
  const npm = (args) =>
    which("flock")
      ? steps.cmd(`npm ${args[0]}`, "flock", ["/tmp/sm-npm.lock", "npm", ...args])
      : steps.cmd(`npm ${args[0]}`, "npm", args);
  const code = await npm(npmArgs);
  if (code === 0 || npmArgs[0] !== "ci") return code;
  // npm >= 11 `ci` rejects a lock file that lacks entries for optional platform packages (npm/cli#4828),
  // e.g. when it was written against a registry mirror that does not carry them. `npm install` honours the
  // locked versions and tolerates that.
  process.stdout.write("npm ci failed; retrying with npm install (same locked versions)\n");
  const last = steps.results[steps.results.length - 1];
  const fallback = await npm(["install", "--no-audit", "--no-fund"]);
  if (fallback === 0) last.status = "refused the lock file; npm install used instead";
  return fallback;
}

export const npx = (bin) => ["npx", ["--no-install", ...bin]];
