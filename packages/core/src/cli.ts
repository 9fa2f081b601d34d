#!/usr/bin/env node
/**
 * `supermachine` — the command line of @supermachine/core. Each command lives in src/cli/ and is one
 * entry of {@link COMMANDS} (its help text and its function); `supermachine <command> --help` and the
 * top-level help are generated from those entries.
 *
 * Exit status: the command's (run: the guest command's or workload's), 1 for an error (printed as
 * `supermachine: CODE: message`), 2 for a usage error (printed with the command's usage).
 */
import { resolve } from "node:path";
import { type CommandHelp, formatHelp, HelpRequest, UsageError } from "./cli/args";
import { cmdDoctor, DOCTOR_HELP } from "./cli/doctor";
import {
  cmdImage,
  cmdImages,
  cmdPull,
  cmdRm,
  IMAGE_HELP,
  IMAGE_ROOTFS_HELP,
  IMAGES_HELP,
  PULL_HELP,
  RM_HELP,
} from "./cli/images";
import { BUILD_HELP, cmdBuild, cmdRun, RUN_HELP } from "./cli/run";
import { runSetup, SETUP_HELP } from "./cli/setup";
import { corePackageJson } from "./cli/where";

export interface CliCommand {
  help: CommandHelp;
  run(args: string[]): Promise<number>;
  /** Sub-commands' help, keyed by "<command> <sub>" (for `image rootfs --help`). */
  subHelp?: Record<string, CommandHelp>;
  /** Listed in the top-level help under another name only (aliases). */
  hidden?: boolean;
}

/** Every command, in top-level help order. Adding one is one entry here. */
export const COMMANDS: Record<string, CliCommand> = {
  run: { help: RUN_HELP, run: cmdRun },
  build: { help: BUILD_HELP, run: cmdBuild },
  images: { help: IMAGES_HELP, run: cmdImages },
  ls: { help: IMAGES_HELP, run: cmdImages, hidden: true },
  rm: { help: RM_HELP, run: cmdRm },
  pull: { help: PULL_HELP, run: cmdPull },
  image: { help: IMAGE_HELP, run: cmdImage, subHelp: { "image rootfs": IMAGE_ROOTFS_HELP } },
  doctor: { help: DOCTOR_HELP, run: cmdDoctor },
  setup: {
    help: SETUP_HELP,
    run: (args) => {
      if (args.includes("-h") || args.includes("--help")) throw new HelpRequest("setup");
      return runSetup(args);
    },
  },
};

/** Listed in the top-level help while not (yet) an entry of COMMANDS in this build. */
const PLANNED: Record<string, string> = {};

export function topLevelHelp(): string {
  const rows: [string, string][] = Object.entries(COMMANDS)
    .filter(([, c]) => !c.hidden)
    .map(([name, c]) => [name, c.help.summary]);
  for (const [name, summary] of Object.entries(PLANNED)) if (!COMMANDS[name]) rows.push([name, summary]);
  const width = Math.max(...rows.map(([n]) => n.length)) + 3;
  return [
    "Usage: supermachine <command> [options]",
    "",
    "Run OCI images as microVMs: bake once into a snapshot, then start VMs from it in milliseconds.",
    "",
    "Commands:",
    ...rows.map(([n, s]) => `  ${n.padEnd(width)}${s}`),
    "",
    "Options:",
    "  --version, -v     print the version of @supermachine/core",
    "  --help, -h        show this help; `supermachine <command> --help` for a command's",
    "",
    "Examples:",
    "  supermachine run alpine:latest -- uname -a",
    "  supermachine run -p 8080:80 nginx:latest",
    "  supermachine doctor",
    "",
  ].join("\n");
}

function helpFor(command: string): string {
  const top = command.split(" ")[0] as string;
  const c = COMMANDS[top];
  const h = c?.subHelp?.[command] ?? c?.help;
  return h ? formatHelp(h) : topLevelHelp();
}

function usageLine(command: string | undefined): string {
  if (!command) return "Usage: supermachine <command> [options]   (supermachine --help lists the commands)";
  const top = command.split(" ")[0] as string;
  const h = COMMANDS[top]?.subHelp?.[command] ?? COMMANDS[top]?.help;
  return `Usage: supermachine ${h?.usage ?? command}   (supermachine ${command} --help for more)`;
}

/** Node's default warning printer is replaced: one plain line per warning, none with -q/--quiet. */
function installWarningPrinter(quiet: boolean): void {
  process.removeAllListeners("warning");
  process.on("warning", (w) => {
    if (quiet) return;
    const text = w.message.startsWith("supermachine: ")
      ? w.message.slice("supermachine: ".length)
      : w.message;
    process.stderr.write(`supermachine: warning: ${text}\n`);
  });
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const own = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  // doctor reports the accelerator (and everything else) in its own lines
  installWarningPrinter(own.includes("-q") || own.includes("--quiet") || cmd === "doctor");
  try {
    if (cmd === undefined) {
      process.stderr.write(topLevelHelp());
      return 2;
    }
    if (cmd === "-h" || cmd === "--help" || cmd === "help") {
      const topic = rest.filter((a) => !a.startsWith("-")).join(" ");
      const top = topic.split(" ")[0] as string;
      if (topic && !Object.hasOwn(COMMANDS, top)) throw new UsageError(`no help for unknown command ${top}`);
      process.stdout.write(topic ? helpFor(topic) : topLevelHelp());
      return 0;
    }
    if (cmd === "-v" || cmd === "--version" || cmd === "version") {
      process.stdout.write(`${corePackageJson().version}\n`);
      return 0;
    }
    const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!command) {
      if (cmd.startsWith("-")) throw new UsageError(`unknown option ${cmd} (options go after the command)`);
      const planned = PLANNED[cmd] ? " (not available in this build)" : "";
      throw new UsageError(`unknown command ${cmd}${planned}`);
    }
    return await command.run(rest);
  } catch (err) {
    if (err instanceof HelpRequest) {
      process.stdout.write(helpFor(err.command));
      return 0;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`supermachine: ${err.code}: ${err.message}\n${usageLine(err.command)}\n`);
      return 2;
    }
    const code = (err as { code?: string }).code;
    process.stderr.write(
      `supermachine: ${code ? `${code}: ` : ""}${(err as Error).message ?? String(err)}\n`,
    );
    return 1;
  }
}

const isMain = (() => {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return (
      import.meta.url === new URL(`file://${resolve(entry)}`).href ||
      /supermachine$|cli\.[cm]?js$/.test(entry)
    );
  } catch {
    return false;
  }
})();

if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => {
      // Flush, then exit even if a library handle is still open.
      process.stdout.write("", () => process.exit(code));
    },
    (err) => {
      process.stderr.write(`supermachine: ${(err as Error).stack ?? err}\n`);
      process.exitCode = 1;
    },
  );
}
