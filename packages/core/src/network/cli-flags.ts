/**
 * `--network none|public|nat`, `--allow ENTRY`, `--deny ENTRY` (repeatable) of `run` and `build`, as a
 * helper for the CLI: the CLI collects the raw values, this turns them into the `network` option.
 * Errors are SM_INVALID_OPTIONS naming the flag and entry (`--allow[1]`).
 */
import { invalidOption } from "../errors";
import { type NetworkOption, parseEntry, parseNetwork } from "./policy";

export interface NetworkFlags {
  /** The value of `--network`, if given. */
  network?: string | undefined;
  /** Every `--allow` value, in order. */
  allow?: readonly string[] | undefined;
  /** Every `--deny` value, in order. */
  deny?: readonly string[] | undefined;
}

/** The `network` option for these flags; undefined when none was given (the default applies). */
export function networkFromFlags(f: NetworkFlags): NetworkOption | undefined {
  const allow = [...(f.allow ?? [])];
  const deny = [...(f.deny ?? [])];
  for (const [i, e] of allow.entries()) parseEntry(e, `--allow[${i}]`);
  for (const [i, e] of deny.entries()) parseEntry(e, `--deny[${i}]`);
  if (f.network !== undefined && !["none", "public", "nat"].includes(f.network))
    throw invalidOption("--network", `must be none, public or nat (got ${JSON.stringify(f.network)})`);
  if (allow.length === 0 && deny.length === 0)
    return f.network === undefined ? undefined : parseNetwork(f.network);
  if (f.network === "none" || f.network === "nat")
    throw invalidOption(
      "--network",
      `--allow/--deny need --network public (or no --network), not ${f.network}`,
    );
  return parseNetwork({ ...(allow.length ? { allow } : {}), ...(deny.length ? { deny } : {}) });
}

/** Usage lines for the CLI's help text. */
export const NETWORK_FLAGS_HELP = `  --network none|public|nat  guest network (default public: TCP to public addresses + DNS,
                             never the host, loopback or private ranges; nat is unfiltered, unsafe)
  --allow ENTRY              only reach what the allow entries name (repeatable): CIDR, address,
                             host name or *.suffix, optionally :port ([v6]:port)
  --deny ENTRY               never reach ENTRY (repeatable; wins over --allow)`;
