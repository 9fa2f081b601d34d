/**
 * The guest network policy (README "Network"): parsing and validation of `network` options and the
 * decision for one connection. Pure functions; the enforcement lives in egress.ts.
 */
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { invalidOption } from "../errors";

/** `network` as users write it. */
export type NetworkOption = "none" | "public" | "nat" | { allow?: string[]; deny?: string[] };

interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}
/** One parsed allow/deny entry. */
export interface PolicyEntry {
  /** The entry as written (reported as the rule that matched). */
  text: string;
  kind: "cidr" | "name" | "suffix";
  cidr?: Cidr;
  /** Lower-case host name, or the suffix without "*." for wildcards. */
  name?: string;
  port: number | null;
}
/** A validated policy. */
export interface NetworkPolicy {
  mode: "none" | "public" | "list";
  allow: PolicyEntry[] | null;
  deny: PolicyEntry[];
}

export const MAX_POLICY_ENTRIES = 1024;

/** Parses an IP literal into 4 or 16 bytes (v4-mapped IPv6 becomes IPv4), or null. */
export function ipBytes(s: string): Uint8Array | null {
  const v = isIP(s);
  if (v === 4) return Uint8Array.from(s.split(".").map(Number));
  if (v !== 6) return null;
  let str = s;
  let tail: number[] = [];
  const lastColon = str.lastIndexOf(":");
  if (str.includes(".", lastColon)) {
    tail = str
      .slice(lastColon + 1)
      .split(".")
      .map(Number);
    str = `${str.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = str.includes("::") ? str.split("::") : [str, undefined];
  const h = head ? head.split(":") : [];
  const r = rest !== undefined && rest !== "" ? rest.split(":") : [];
  const groups = rest === undefined ? h : [...h, ...Array(8 - h.length - r.length).fill("0"), ...r];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = Number.parseInt(g, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  });
  if (tail.length === 4) out.set(tail, 12);
  const mapped = out.slice(0, 10).every((b) => b === 0) && out[10] === 0xff && out[11] === 0xff;
  return mapped ? out.slice(12) : out;
}

function inCidr(addr: Uint8Array, c: Cidr): boolean {
  if (addr.length !== c.bytes.length) return false;
  let bits = c.prefix;
  for (let i = 0; i < addr.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((addr[i]! & mask) !== (c.bytes[i]! & mask)) return false;
  }
  return true;
}

function cidr(s: string): Cidr {
  const [a, p] = s.split("/");
  const bytes = ipBytes(a!);
  if (!bytes) throw new Error(`bad address ${a}`);
  return { bytes, prefix: p === undefined ? bytes.length * 8 : Number(p) };
}

/** Ranges no policy reaches unless an allow entry names an address or range inside them. */
const ALWAYS_DENIED: { cidr: Cidr; rule: string }[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "::/96", // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
  "fe80::/10",
  "fc00::/7",
  "ff00::/8",
].map((r) => ({ cidr: cidr(r), rule: `always-denied ${r}` }));

/** The always-denied range (or host address) containing ip and its prefix length, or null. */
export function alwaysDenied(ip: string): { rule: string; prefix: number } | null {
  const b = ipBytes(ip);
  if (!b) return { rule: "not an IP address", prefix: 0 };
  for (const d of ALWAYS_DENIED) if (inCidr(b, d.cidr)) return { rule: d.rule, prefix: d.cidr.prefix };
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      const hb = ipBytes(i.address.split("%")[0]!);
      if (hb && hb.length === b.length && hb.every((x, k) => x === b[k]))
        return { rule: "always-denied host address", prefix: b.length * 8 };
    }
  }
  return null;
}

const NAME_RE =
  /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/;

function parsePort(p: string, field: string, entry: string): number {
  if (!/^\d{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535)
    throw invalidOption(field, `${JSON.stringify(entry)}: port must be 1..65535`);
  return Number(p);
}

/** Parses one allow/deny entry (field names it in errors, e.g. `network.allow[2]`). */
export function parseEntry(v: unknown, field: string): PolicyEntry {
  if (typeof v !== "string" || v.trim() === "") throw invalidOption(field, "must be a non-empty string");
  const text = v;
  let host = v.trim().toLowerCase();
  let port: number | null = null;
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end < 0) throw invalidOption(field, `${JSON.stringify(text)}: missing "]"`);
    const after = host.slice(end + 1);
    if (after !== "" && !after.startsWith(":"))
      throw invalidOption(field, `${JSON.stringify(text)}: bad port`);
    if (after) port = parsePort(after.slice(1), field, text);
    host = host.slice(1, end);
  } else if (host.split(":").length === 2) {
    const i = host.lastIndexOf(":");
    port = parsePort(host.slice(i + 1), field, text);
    host = host.slice(0, i);
  }
  if (host === "") throw invalidOption(field, `${JSON.stringify(text)}: empty host`);
  const slash = host.indexOf("/");
  const addrPart = slash >= 0 ? host.slice(0, slash) : host;
  if (isIP(addrPart) !== 0) {
    const bytes = ipBytes(addrPart)!;
    const max = bytes.length * 8;
    let prefix = max;
    if (slash >= 0) {
      const p = host.slice(slash + 1);
      if (!/^\d{1,3}$/.test(p) || Number(p) > (isIP(addrPart) === 6 && bytes.length === 4 ? 128 : max))
        throw invalidOption(field, `${JSON.stringify(text)}: bad prefix length (0..${max})`);
      prefix = Number(p);
      if (isIP(addrPart) === 6 && bytes.length === 4) prefix = Math.max(0, prefix - 96);
    }
    return { text, kind: "cidr", cidr: { bytes, prefix }, port };
  }
  if (slash >= 0) throw invalidOption(field, `${JSON.stringify(text)}: bad CIDR`);
  if (host.startsWith("*.")) {
    const suffix = host.slice(2);
    if (!NAME_RE.test(suffix) || /^[\d.]+$/.test(suffix))
      throw invalidOption(field, `${JSON.stringify(text)}: bad wildcard name`);
    return { text, kind: "suffix", name: suffix.replace(/\.$/, ""), port };
  }
  if (!NAME_RE.test(host) || /^[\d.]+$/.test(host))
    throw invalidOption(field, `${JSON.stringify(text)}: not an address, CIDR, host name or *.suffix`);
  return { text, kind: "name", name: host.replace(/\.$/, ""), port };
}

/** Validates a `network` option value (field: "network"). Undefined → the default "public". */
export function parseNetwork(v: unknown, field = "network"): NetworkOption {
  if (v === undefined) return "public";
  if (v === "none" || v === "public" || v === "nat") return v;
  if (typeof v === "string")
    throw invalidOption(
      field,
      `must be "none", "public", "nat" or { allow?, deny } (got ${JSON.stringify(v)})`,
    );
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw invalidOption(field, `must be "none", "public", "nat" or { allow?, deny }`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== "allow" && k !== "deny") throw invalidOption(`${field}.${k}`, "unknown key (allow, deny)");
  const out: { allow?: string[]; deny?: string[] } = {};
  for (const k of ["allow", "deny"] as const) {
    const list = o[k];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw invalidOption(`${field}.${k}`, "must be an array of strings");
    if (list.length > MAX_POLICY_ENTRIES)
      throw invalidOption(`${field}.${k}`, `at most ${MAX_POLICY_ENTRIES} entries`);
    for (const [i, e] of list.entries()) parseEntry(e, `${field}.${k}[${i}]`);
    out[k] = [...(list as string[])];
  }
  return out;
}

/** The enforced policy of a validated option ("nat" carries no policy: QEMU's NAT is unfiltered). */
export function compilePolicy(n: NetworkOption): NetworkPolicy {
  if (n === "none" || n === "nat") return { mode: "none", allow: null, deny: [] };
  if (n === "public") return { mode: "public", allow: null, deny: [] };
  return {
    mode: "list",
    allow: n.allow ? n.allow.map((e, i) => parseEntry(e, `network.allow[${i}]`)) : null,
    deny: (n.deny ?? []).map((e, i) => parseEntry(e, `network.deny[${i}]`)),
  };
}

/** A stable string of the option (fingerprint, metadata). */
export function networkKey(n: NetworkOption): string {
  return typeof n === "string" ? n : JSON.stringify({ allow: n.allow ?? null, deny: n.deny ?? [] });
}

/** The guest's network device: only "nat" has one. */
export function nicMode(n: NetworkOption): "none" | "nat" {
  return n === "nat" ? "nat" : "none";
}

function nameMatches(e: PolicyEntry, name: string): boolean {
  if (e.kind === "name") return name === e.name;
  if (e.kind === "suffix") return name.endsWith(`.${e.name}`);
  return false;
}

function entryMatches(e: PolicyEntry, ip: Uint8Array, port: number, names: readonly string[]): boolean {
  if (e.port !== null && e.port !== port) return false;
  if (e.kind === "cidr") return inCidr(ip, e.cidr!);
  return names.some((n) => nameMatches(e, n));
}

export interface Decision {
  allowed: boolean;
  /** What decided: the matching entry, "always-denied …", "none", "public", "not in allow list". */
  rule: string;
}

/**
 * Decides a connection to ip:port; names = the host names the host knows for ip in this VM (its
 * DNS answers) and the name the connection itself announced (TLS SNI / HTTP Host), if any.
 */
export function decide(p: NetworkPolicy, ip: string, port: number, names: readonly string[]): Decision {
  if (p.mode === "none") return { allowed: false, rule: "none" };
  const b = ipBytes(ip);
  if (!b) return { allowed: false, rule: "not an IP address" };
  const lower = names.map((n) => n.toLowerCase().replace(/\.$/, ""));
  for (const e of p.deny)
    if (entryMatches(e, b, port, lower)) return { allowed: false, rule: `deny ${e.text}` };
  const denied = alwaysDenied(ip);
  if (denied) {
    // Only an address or range inside the denied range lifts it (0.0.0.0/0 does not); a name
    // never does: a name may resolve anywhere (DNS rebinding).
    const lift = p.allow?.find(
      (e) => e.kind === "cidr" && e.cidr!.prefix >= denied.prefix && entryMatches(e, b, port, []),
    );
    return lift ? { allowed: true, rule: `allow ${lift.text}` } : { allowed: false, rule: denied.rule };
  }
  if (p.allow === null) return { allowed: true, rule: "public" };
  const hit = p.allow.find((e) => entryMatches(e, b, port, lower));
  return hit ? { allowed: true, rule: `allow ${hit.text}` } : { allowed: false, rule: "not in allow list" };
}

/**
 * Whether the host resolves a name for the guest (null) or refuses it (the rule). Resolving is itself
 * a way out (a query for `<secret>.attacker.example` reaches the attacker's name server), so with an
 * allow list only names an allow entry names (any port) are resolved; a deny entry naming the name
 * (any port) refuses it; "none" resolves nothing.
 */
export function dnsRefusal(p: NetworkPolicy, name: string): string | null {
  if (p.mode === "none") return "none";
  const n = name.toLowerCase().replace(/\.$/, "");
  const hit = p.deny.find((e) => e.port === null && nameMatches(e, n));
  if (hit) return `deny ${hit.text}`;
  if (p.allow === null) return null;
  return p.allow.some((e) => nameMatches(e, n)) ? null : "not in allow list";
}
