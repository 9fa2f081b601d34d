/**
 * Host-side argument checks of the op wrappers: every bad argument is SM_AGENT_INVALID_ARGS before
 * anything is sent, and op specs become the CBOR arg maps of SPEC §6.
 */
import { FS_TAG_MAX } from "../constants";
import { AgentError } from "../errors";
import { isValidShareTag } from "../ops";
import type { CommandSpec, ProcessSpec } from "./types";

export function invalid(message: string): AgentError {
  return new AgentError("SM_AGENT_INVALID_ARGS", message);
}

export function checkRange(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
    throw invalid(`${name} must be an integer in ${min}..${max}, got ${v}`);
  }
}

export function checkShareTag(tag: string): void {
  if (!isValidShareTag(tag)) {
    throw invalid(
      `share tag must be 1..${FS_TAG_MAX} characters of [A-Za-z0-9._-], not "." or "..": ${JSON.stringify(tag)}`,
    );
  }
}

export function checkPath(path: string): void {
  if (
    typeof path !== "string" ||
    !path.startsWith("/") ||
    path.includes("\0") ||
    Buffer.byteLength(path) > 4096
  ) {
    throw invalid(`guest path must be absolute, without NUL, at most 4096 bytes: ${JSON.stringify(path)}`);
  }
}

function commandArgs(c: CommandSpec, where: string): Record<string, unknown> {
  if (!Array.isArray(c.argv) || c.argv.length === 0 || !c.argv.every((a) => typeof a === "string")) {
    throw invalid(`${where}.argv must be a non-empty array of strings`);
  }
  if (c.env !== undefined && (typeof c.env !== "object" || c.env === null))
    throw invalid(`${where}.env must be an object`);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.env ?? {})) {
    if (typeof v !== "string" || k.length === 0 || k.includes("=")) {
      throw invalid(`${where}.env: invalid entry ${JSON.stringify(k)}`);
    }
    env[k] = v;
  }
  if (c.cwd !== undefined) checkPath(c.cwd);
  return { argv: c.argv, env, cwd: c.cwd, user: c.user };
}

export function processArgs(spec: ProcessSpec): Record<string, unknown> {
  if (typeof spec !== "object" || spec === null) throw invalid("exec/spawn options must be an object");
  const base = commandArgs(spec, "options");
  const stage = (spec.stage ?? []).map((s, i) => {
    checkPath(s.path);
    if (!(s.data instanceof Uint8Array)) throw invalid(`stage[${i}].data must be a Buffer`);
    checkRange(`stage[${i}].mode`, s.mode, 0, 0o7777);
    return { path: s.path, data: s.data, mode: s.mode ?? 0o644 };
  });
  const ws = spec.winsize;
  if (ws !== undefined) {
    checkRange("winsize.cols", ws.cols, 1, 65535);
    checkRange("winsize.rows", ws.rows, 1, 65535);
  }
  return {
    ...base,
    stage: stage.length > 0 ? stage : undefined,
    chain: spec.chain == null ? undefined : commandArgs(spec.chain, "chain"),
    tty: spec.tty === true ? true : undefined,
    cols: ws?.cols,
    rows: ws?.rows,
  };
}
