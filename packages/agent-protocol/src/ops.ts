/**
 * Operation argument schemas of SPEC §6, as parsed by an agent. The reference agent (a test
 * double) uses them; they also define what the shared test vectors mean by `resError`.
 */
import type { CborMap, CborValue } from "./cbor";
import {
  ARG_BYTES_MAX,
  ARGV_MAX,
  EGRESS_DNS_ANSWER_MAX,
  ENTROPY_MAX,
  ENTROPY_MIN,
  ENV_MAX,
  FILE_MAX,
  FS_TAG_MAX,
  MAX_FRAME,
  PATH_MAX,
  STAGE_MAX,
  UINT32_MAX,
} from "./constants";
import { Fields, isMap, kind } from "./frames";

/** Every op of protocol v1 (SPEC §6). */
export const OPS = [
  "exec",
  "spawn",
  "signal",
  "resize",
  "close-stdin",
  "write-file",
  "read-file",
  "workload-signal",
  "tcp-connect",
  "resume",
  "ping",
  "shutdown",
  "stats",
  "fs-attach",
  "fs-detach",
  "dial-answer",
  "dns-answer",
] as const;
export type OpName = (typeof OPS)[number];

/** A request-level error (the agent answers `res.error`, the session continues). */
export class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
const einval = (message: string) => new RequestError("EINVAL", message);

export interface CommandArgs {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  user: string;
}
export interface StageFile {
  path: string;
  data: Buffer;
  mode: number;
}
export interface ProcessArgs extends CommandArgs {
  stage: StageFile[];
  chain: CommandArgs | null;
  tty: boolean;
  cols: number;
  rows: number;
  chOut: number;
  /** null with tty. */
  chErr: number | null;
}
export interface ExecArgs extends ProcessArgs {
  timeoutMs: number;
}
export interface SpawnArgs extends ProcessArgs {
  chIn: number;
}
export interface SignalArgs {
  pid: number;
  signum: number;
}
export interface ResizeArgs {
  pid: number;
  cols: number;
  rows: number;
}
export interface PidArgs {
  pid: number;
}
export interface WriteFileArgs {
  path: string;
  data: Buffer;
  mode: number;
  mkdirs: boolean;
}
export interface PathArgs {
  path: string;
}
export interface SignumArgs {
  signum: number;
}
export interface TcpConnectArgs {
  port: number;
  ch: number;
}
export interface FsAttachArgs {
  tag: string;
  ch: number;
  /** null = no extra bind mount. */
  path: string | null;
}
export interface FsDetachArgs {
  tag: string;
}
export interface ResumeArgs {
  timeNs: number | bigint;
  entropy: Buffer;
}
export interface DialAnswerArgs {
  id: number;
  ch: number | null;
  error: string | null;
}
export interface DnsAnswerArgs {
  id: number;
  a: Buffer;
}
export type EmptyArgs = Record<string, never>;

export type ParsedRequest =
  | { op: "exec"; args: ExecArgs }
  | { op: "spawn"; args: SpawnArgs }
  | { op: "signal"; args: SignalArgs }
  | { op: "resize"; args: ResizeArgs }
  | { op: "close-stdin"; args: PidArgs }
  | { op: "write-file"; args: WriteFileArgs }
  | { op: "read-file"; args: PathArgs }
  | { op: "workload-signal"; args: SignumArgs }
  | { op: "tcp-connect"; args: TcpConnectArgs }
  | { op: "resume"; args: ResumeArgs }
  | { op: "fs-attach"; args: FsAttachArgs }
  | { op: "fs-detach"; args: FsDetachArgs }
  | { op: "dial-answer"; args: DialAnswerArgs }
  | { op: "dns-answer"; args: DnsAnswerArgs }
  | { op: "ping" | "shutdown" | "stats"; args: EmptyArgs };

function path(f: Fields, key: string): string {
  const p = f.text(key, PATH_MAX, 1);
  if (!p.startsWith("/")) throw einval(`${key}: "${p.slice(0, 100)}" is not an absolute path`);
  if (p.includes("\0")) throw einval(`${key}: contains NUL`);
  return p;
}

/** Share tag rule (SPEC §6.4): 1..35 bytes of [A-Za-z0-9._-], not "." or "..". */
export function isValidShareTag(tag: unknown): tag is string {
  return (
    typeof tag === "string" &&
    tag.length >= 1 &&
    tag.length <= FS_TAG_MAX &&
    /^[A-Za-z0-9._-]+$/.test(tag) &&
    tag !== "." &&
    tag !== ".."
  );
}

function shareTag(f: Fields, key: string): string {
  const t = f.text(key, 4096);
  if (!isValidShareTag(t)) {
    throw einval(`${key}: must be 1..${FS_TAG_MAX} bytes of [A-Za-z0-9._-], not "." or ".."`);
  }
  return t;
}

function env(f: Fields, key: string): Record<string, string> {
  const m = f.optMap(key);
  const out = Object.create(null) as Record<string, string>;
  if (m === null) return out;
  let n = 0;
  for (const k in m) {
    if (++n > ENV_MAX) throw einval(`${key}: more than ${ENV_MAX} entries`);
    const v: CborValue = m[k]!;
    if (k.length === 0 || k.includes("=") || k.includes("\0")) throw einval(`${key}: invalid name "${k}"`);
    if (typeof v !== "string") throw einval(`${key}.${k}: expected text, got ${kind(v)}`);
    if (v.includes("\0")) throw einval(`${key}.${k}: contains NUL`);
    out[k] = v;
  }
  return out;
}

function command(m: CborMap, where: string): CommandArgs {
  const f = new Fields(m, where, einval);
  const argv = f.textArray("argv", ARGV_MAX, ARG_BYTES_MAX, 1);
  for (const a of argv) if (a.includes("\0")) throw einval(`${where}.argv: contains NUL`);
  return {
    argv,
    env: env(f, "env"),
    cwd: f.present("cwd") ? path(f, "cwd") : "/",
    user: f.optText("user", "0:0", 256),
  };
}

function processArgs(m: CborMap, where: string): ProcessArgs {
  const f = new Fields(m, where, einval);
  const cmd = command(m, where);
  const stage: StageFile[] = [];
  if (f.present("stage")) {
    const arr = f.array("stage", STAGE_MAX);
    for (let i = 0; i < arr.length; i++) {
      const e = arr[i];
      if (!isMap(e)) throw einval(`${where}.stage[${i}]: expected a map, got ${kind(e)}`);
      const sf = new Fields(e, `${where}.stage[${i}]`, einval);
      stage.push({
        path: path(sf, "path"),
        data: sf.bytes("data", MAX_FRAME),
        mode: sf.optUint("mode", 0o644, 0, 0o7777),
      });
    }
  }
  const chainMap = f.optMap("chain");
  const tty = f.optBool("tty", false);
  return {
    ...cmd,
    stage,
    chain: chainMap === null ? null : command(chainMap, `${where}.chain`),
    tty,
    cols: f.optUint("cols", 80, 1, 65535),
    rows: f.optUint("rows", 24, 1, 65535),
    chOut: f.uint("chOut", 1, UINT32_MAX),
    chErr: tty ? null : f.uint("chErr", 1, UINT32_MAX),
  };
}

/**
 * Parses a request's args per SPEC §6. Throws RequestError with `code` EINVAL (bad args),
 * SM_FILE_TOO_LARGE (write-file data above 4 MiB) or SM_UNKNOWN_OP.
 */
export function parseRequestArgs(op: string, args: CborMap): ParsedRequest {
  const f = new Fields(args, op, einval);
  switch (op) {
    case "exec":
      return { op, args: { ...processArgs(args, op), timeoutMs: f.optUint("timeoutMs", 0) } };
    case "spawn":
      return { op, args: { ...processArgs(args, op), chIn: f.uint("chIn", 1, UINT32_MAX) } };
    case "signal":
      return { op, args: { pid: f.uint("pid", 1, UINT32_MAX), signum: f.uint("signum", 1, 64) } };
    case "resize":
      return {
        op,
        args: {
          pid: f.uint("pid", 1, UINT32_MAX),
          cols: f.uint("cols", 1, 65535),
          rows: f.uint("rows", 1, 65535),
        },
      };
    case "close-stdin":
      return { op, args: { pid: f.uint("pid", 1, UINT32_MAX) } };
    case "write-file": {
      const p = path(f, "path");
      const data = f.raw("data");
      if (Buffer.isBuffer(data) && data.length > FILE_MAX) {
        throw new RequestError("SM_FILE_TOO_LARGE", `write-file: ${data.length} bytes exceeds ${FILE_MAX}`);
      }
      return {
        op,
        args: {
          path: p,
          data: f.bytes("data", FILE_MAX),
          mode: f.optUint("mode", 0o644, 0, 0o7777),
          mkdirs: f.optBool("mkdirs", true),
        },
      };
    }
    case "read-file":
      return { op, args: { path: path(f, "path") } };
    case "workload-signal":
      return { op, args: { signum: f.uint("signum", 1, 64) } };
    case "tcp-connect":
      return { op, args: { port: f.uint("port", 1, 65535), ch: f.uint("ch", 1, UINT32_MAX) } };
    case "resume":
      return {
        op,
        args: { timeNs: f.uint64("timeNs"), entropy: f.bytes("entropy", ENTROPY_MAX, ENTROPY_MIN) },
      };
    case "fs-attach":
      return {
        op,
        args: {
          tag: shareTag(f, "tag"),
          ch: f.uint("ch", 1, UINT32_MAX),
          path: f.present("path") ? path(f, "path") : null,
        },
      };
    case "fs-detach":
      return { op, args: { tag: shareTag(f, "tag") } };
    case "dial-answer": {
      const id = f.uint("id", 1, UINT32_MAX);
      const ch = f.present("ch") ? f.uint("ch", 1, UINT32_MAX) : null;
      const error = f.present("error") ? f.text("error", 64, 1) : null;
      if ((ch === null) === (error === null)) throw einval("exactly one of ch and error is required");
      return { op, args: { id, ch, error } };
    }
    case "dns-answer":
      return {
        op,
        args: { id: f.uint("id", 1, UINT32_MAX), a: f.bytes("a", EGRESS_DNS_ANSWER_MAX, 12) },
      };
    case "ping":
    case "shutdown":
    case "stats":
      return { op, args: {} };
    default:
      throw new RequestError("SM_UNKNOWN_OP", `unknown op ${op.slice(0, 64)}`);
  }
}
