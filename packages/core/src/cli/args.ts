/**
 * Argument parsing and help text of the `supermachine` CLI. Every command declares its options as
 * {@link OptionSpec}s: the parser accepts exactly those (anything else is a usage error naming it),
 * and `supermachine <command> --help` is generated from the same list.
 */

/** A command-line mistake: printed with the command's usage line, exit status 2. */
export class UsageError extends Error {
  readonly code = "SM_USAGE";
  constructor(
    message: string,
    /** The command whose usage line to print (top-level usage when undefined). */
    readonly command?: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

/** `--help` / `-h` was given: print the command's help, exit 0. */
export class HelpRequest extends Error {
  constructor(readonly command: string) {
    super(`help for ${command}`);
  }
}

export interface OptionSpec {
  /** Long name first (`--env`), then aliases (`-e`). */
  names: string[];
  /** Placeholder of the value (`K=V`); undefined for a boolean flag. */
  value?: string;
  help: string;
  repeatable?: boolean;
}

/** What every command accepts. */
export const HELP_OPTION: OptionSpec = { names: ["--help", "-h"], help: "show this help" };

export interface CommandHelp {
  /** `supermachine <usage>` */
  usage: string;
  /** One line for the top-level command list. */
  summary: string;
  /** Paragraph(s) after the usage line. */
  description?: string;
  options: OptionSpec[];
  /** Shell lines shown under "Examples:". */
  examples: string[];
}

export interface Parsed {
  /** Keyed by the option's long name. */
  flags: Map<string, string[]>;
  positionals: string[];
  /** Everything after `--` or after the last allowed positional (the guest command of `run`). */
  rest: string[];
}

/**
 * Parse `argv` against `options`. Options may come before and between positionals until
 * `maxPositionals` positionals were seen; what follows (or what follows `--`) is `rest`, untouched
 * (docker style: `run img ls -l` runs `ls -l`). `maxPositionals` 0: any positional is a usage error;
 * Infinity: options anywhere. `-h`/`--help` throws {@link HelpRequest}.
 */
export function parseArgs(
  command: string,
  argv: string[],
  options: OptionSpec[],
  maxPositionals: number,
): Parsed {
  const byName = new Map<string, OptionSpec>();
  for (const o of [...options, HELP_OPTION]) for (const n of o.names) byName.set(n, o);
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  const add = (o: OptionSpec, v: string) => {
    const key = o.names[0] as string;
    flags.set(key, [...(flags.get(key) ?? []), v]);
  };
  let i = 0;
  while (i < argv.length) {
    const a = argv[i] as string;
    if (a === "--") return { flags, positionals, rest: argv.slice(i + 1) };
    if (maxPositionals > 0 && positionals.length >= maxPositionals)
      return { flags, positionals, rest: argv.slice(i) };
    if (a.startsWith("-") && a !== "-") {
      const eq = a.startsWith("--") ? a.indexOf("=") : -1;
      const name = eq > 0 ? a.slice(0, eq) : a;
      const o = byName.get(name);
      if (o === HELP_OPTION) throw new HelpRequest(command);
      if (o && o.value === undefined) {
        if (eq > 0) throw new UsageError(`option ${name} takes no value`, command);
        add(o, "1");
        i++;
        continue;
      }
      if (o) {
        const v = eq > 0 ? a.slice(eq + 1) : argv[i + 1];
        if (v === undefined) throw new UsageError(`option ${name} needs a value (${o.value})`, command);
        add(o, v);
        i += eq > 0 ? 1 : 2;
        continue;
      }
      // Combined short boolean flags: -it, -qi.
      if (/^-[a-zA-Z]{2,}$/.test(a)) {
        const shorts = [...a.slice(1)].map((c) => byName.get(`-${c}`));
        if (shorts.every((s) => s !== undefined && s.value === undefined && s !== HELP_OPTION)) {
          for (const s of shorts) add(s as OptionSpec, "1");
          i++;
          continue;
        }
      }
      throw new UsageError(`unknown option ${name} for ${command}`, command);
    }
    if (maxPositionals === 0) throw new UsageError(`${command} takes no arguments, got: ${a}`, command);
    positionals.push(a);
    i++;
  }
  return { flags, positionals, rest: [] };
}

/** The last value of an option (by its long name). */
export function flag(p: Parsed, name: string): string | undefined {
  const v = p.flags.get(name);
  return v?.length ? v[v.length - 1] : undefined;
}

export function has(p: Parsed, name: string): boolean {
  return p.flags.has(name);
}

export function all(p: Parsed, name: string): string[] {
  return p.flags.get(name) ?? [];
}

export function intFlag(
  command: string,
  p: Parsed,
  name: string,
  range: { min?: number; max?: number } = {},
): number | undefined {
  const v = flag(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  const min = range.min ?? 0;
  const max = range.max ?? Number.MAX_SAFE_INTEGER;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
    const bounds = range.max !== undefined ? `an integer from ${min} to ${max}` : `an integer ≥ ${min}`;
    throw new UsageError(`${name} expects ${bounds}, got "${v}"`, command);
  }
  return n;
}

export function oneOf<T extends string>(
  command: string,
  p: Parsed,
  name: string,
  choices: readonly T[],
): T | undefined {
  const v = flag(p, name);
  if (v === undefined) return undefined;
  if (!(choices as readonly string[]).includes(v))
    throw new UsageError(`${name} expects one of ${choices.join(", ")}, got "${v}"`, command);
  return v as T;
}

function optionLines(options: OptionSpec[]): string[] {
  const left = options.map((o) => {
    const [long, ...aliases] = o.names;
    const names = [...aliases, long].join(", ");
    return `  ${names}${o.value ? ` ${o.value}` : ""}`;
  });
  const width = Math.min(32, Math.max(...left.map((l) => l.length)) + 2);
  return options.map((o, i) => {
    const l = left[i] as string;
    const text = `${o.help}${o.repeatable ? " (repeatable)" : ""}`;
    return l.length >= width ? `${l}\n${" ".repeat(width)}${text}` : `${l.padEnd(width)}${text}`;
  });
}

/** The text of `supermachine <command> --help`. */
export function formatHelp(h: CommandHelp): string {
  const parts = [`Usage: supermachine ${h.usage}`, "", h.summary];
  if (h.description) parts.push("", h.description);
  parts.push("", "Options:", ...optionLines([...h.options, HELP_OPTION]));
  if (h.examples.length) parts.push("", "Examples:", ...h.examples.map((e) => `  ${e}`));
  return `${parts.join("\n")}\n`;
}
