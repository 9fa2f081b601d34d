/**
 * Frame types of SPEC §3 as a discriminated union on `t`, and their strict validation.
 * `decodeFrame` turns a frame body into a validated frame or throws SM_AGENT_PROTOCOL with the
 * SPEC §9.1 reason the receiver must send in its `fatal` frame.
 */

import { isIP } from "node:net";
import { type CborMap, type CborValue, decodeCbor, type EncodableValue, encodeFrameBytes } from "./cbor";
import {
  CAPS_MAX,
  EGRESS_DNS_QUERY_MAX,
  EXEC_RESULT_MAX,
  FILE_MAX,
  MAX_FRAME,
  MAX_WINDOW,
  MESSAGE_MAX,
  MIN_MAX_FRAME,
  MIN_WINDOW,
  NAME_MAX,
  UINT32_MAX,
  VERSION_TEXT_MAX,
} from "./constants";
import { type FatalCode, violation } from "./errors";

/** The direction a frame travels in; schema checks depend on it. */
export type Direction = "host-to-agent" | "agent-to-host";

export interface HostHelloFrame {
  t: "hello";
  v: number;
  host: string;
  maxFrame: number;
  window: number;
  nonce?: number | undefined;
}
export interface AgentHelloFrame {
  t: "hello";
  v: number;
  agent: string;
  caps: string[];
  maxFrame: number;
  window: number;
  ready: boolean;
  listening: number | null;
  bootMs: number;
  nonce?: number | undefined;
}
export interface RequestFrame {
  t: "req";
  id: number;
  op: string;
  args: CborMap;
}
export interface ResponseError {
  code: string;
  message: string;
}
export interface ResponseFrame {
  t: "res";
  id: number;
  result?: CborMap | undefined;
  error?: ResponseError | undefined;
}
export interface EventFrame {
  t: "evt";
  ev: string;
  data: CborMap;
}
export interface DataFrame {
  t: "data";
  ch: number;
  d: Buffer;
}
export interface CreditFrame {
  t: "credit";
  ch: number;
  n: number;
}
export interface EofFrame {
  t: "eof";
  ch: number;
}
export interface CloseFrame {
  t: "close";
  ch: number;
}
export interface FatalFrame {
  t: "fatal";
  code: string;
  message: string;
}

export type ChannelFrame = DataFrame | CreditFrame | EofFrame | CloseFrame;
/** Frames the host sends. */
export type HostFrame = HostHelloFrame | RequestFrame | ChannelFrame | FatalFrame;
/** Frames the agent sends. */
export type AgentFrame = AgentHelloFrame | ResponseFrame | EventFrame | ChannelFrame | FatalFrame;
export type Frame = HostFrame | AgentFrame;

// ---------------------------------------------------------------------------------------------
// field readers: each throws SM_AGENT_PROTOCOL/SM_BAD_FRAME naming the field

const badFrame = (message: string) => violation("SM_BAD_FRAME", message);

/** Reads typed fields of one map and reports errors with a path prefix. */
export class Fields {
  constructor(
    readonly map: CborMap,
    readonly where: string,
    readonly fail: (message: string) => Error = badFrame,
  ) {}

  private has(key: string): boolean {
    return Object.hasOwn(this.map, key) && this.map[key] !== undefined;
  }
  private err(key: string, what: string): Error {
    return this.fail(`${this.where}.${key}: ${what}`);
  }
  present(key: string): boolean {
    return this.has(key) && this.map[key] !== null;
  }
  raw(key: string): CborValue | undefined {
    return this.has(key) ? this.map[key] : undefined;
  }

  uint(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    return this.int(key, min, max);
  }
  optUint(key: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    return this.present(key) ? this.uint(key, min, max) : dflt;
  }
  /** Unsigned integer up to 2^64-1, as bigint when above 2^53-1. */
  uint64(key: string): number | bigint {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (typeof v !== "number" && typeof v !== "bigint")
      throw this.err(key, `expected an integer, got ${kind(v)}`);
    if (v < 0) throw this.err(key, "must not be negative");
    return v;
  }
  int(key: string, min: number, max: number): number {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (typeof v !== "number" && typeof v !== "bigint")
      throw this.err(key, `expected an integer, got ${kind(v)}`);
    if (typeof v === "bigint" || v < min || v > max) throw this.err(key, `${v} is outside ${min}..${max}`);
    return v;
  }
  uintOrNull(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | null {
    if (!this.has(key)) throw this.err(key, "missing");
    return this.map[key] === null ? null : this.uint(key, min, max);
  }
  text(key: string, maxBytes: number, minBytes = 0): string {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (typeof v !== "string") throw this.err(key, `expected text, got ${kind(v)}`);
    // byteLength is between length and 3 * length: skip measuring when that already decides it
    if (v.length * 3 <= maxBytes && v.length >= minBytes) return v;
    const n = Buffer.byteLength(v);
    if (n > maxBytes || n < minBytes)
      throw this.err(key, `text of ${n} bytes is outside ${minBytes}..${maxBytes}`);
    return v;
  }
  optText(key: string, dflt: string, maxBytes: number): string {
    return this.present(key) ? this.text(key, maxBytes) : dflt;
  }
  bool(key: string): boolean {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (typeof v !== "boolean") throw this.err(key, `expected a bool, got ${kind(v)}`);
    return v;
  }
  optBool(key: string, dflt: boolean): boolean {
    return this.present(key) ? this.bool(key) : dflt;
  }
  bytes(key: string, maxBytes: number, minBytes = 0): Buffer {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (!Buffer.isBuffer(v)) throw this.err(key, `expected bytes, got ${kind(v)}`);
    if (v.length > maxBytes || v.length < minBytes) {
      throw this.err(key, `${v.length} bytes is outside ${minBytes}..${maxBytes}`);
    }
    return v;
  }
  map_(key: string): CborMap {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (!isMap(v)) throw this.err(key, `expected a map, got ${kind(v)}`);
    return v;
  }
  optMap(key: string): CborMap | null {
    return this.present(key) ? this.map_(key) : null;
  }
  array(key: string, maxItems: number, minItems = 0): CborValue[] {
    if (!this.has(key)) throw this.err(key, "missing");
    const v = this.map[key];
    if (!Array.isArray(v)) throw this.err(key, `expected an array, got ${kind(v)}`);
    if (v.length > maxItems || v.length < minItems) {
      throw this.err(key, `${v.length} entries is outside ${minItems}..${maxItems}`);
    }
    return v;
  }
  textArray(key: string, maxItems: number, maxBytes: number, minItems = 0): string[] {
    const arr = this.array(key, maxItems, minItems);
    for (let i = 0; i < arr.length; i++) {
      const s = arr[i];
      if (typeof s !== "string") throw this.err(`${key}[${i}]`, `expected text, got ${kind(s)}`);
      if (s.length > maxBytes / 3 && Buffer.byteLength(s) > maxBytes) {
        throw this.err(`${key}[${i}]`, `longer than ${maxBytes} bytes`);
      }
    }
    return arr as string[];
  }
}

export function isMap(v: unknown): v is CborMap {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

export function kind(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return "an array";
  if (Buffer.isBuffer(v)) return "bytes";
  if (typeof v === "object") return "a map";
  if (typeof v === "bigint") return "an integer";
  return typeof v === "number" ? "an integer" : typeof v === "string" ? "text" : `a ${typeof v}`;
}

const CH = (f: Fields) => f.uint("ch", 1, UINT32_MAX);

function clampMaxFrame(f: Fields): number {
  const v = f.uint64("maxFrame");
  if (v < MIN_MAX_FRAME) throw badFrame(`hello.maxFrame: ${v} is below ${MIN_MAX_FRAME}`);
  return v > MAX_FRAME ? MAX_FRAME : Number(v);
}
function optNonce(f: Fields): number | undefined {
  return f.present("nonce") ? f.uint("nonce", 0, UINT32_MAX) : undefined;
}

function parseHello(m: CborMap, direction: Direction): HostHelloFrame | AgentHelloFrame {
  const f = new Fields(m, "hello");
  const v = f.uint("v", 1);
  if (direction === "host-to-agent") {
    return {
      t: "hello",
      v,
      host: f.text("host", VERSION_TEXT_MAX),
      maxFrame: clampMaxFrame(f),
      window: f.uint("window", MIN_WINDOW, MAX_WINDOW),
      nonce: optNonce(f),
    };
  }
  return {
    t: "hello",
    v,
    agent: f.text("agent", VERSION_TEXT_MAX),
    caps: f.textArray("caps", CAPS_MAX, NAME_MAX),
    maxFrame: clampMaxFrame(f),
    window: f.uint("window", MIN_WINDOW, MAX_WINDOW),
    ready: f.bool("ready"),
    listening: f.uintOrNull("listening", 0, 65535),
    bootMs: f.uint("bootMs"),
    nonce: optNonce(f),
  };
}

/** Validates a known event's data (SPEC §7). Unknown events pass through unchecked (they are ignored). */
export function validateEventData(ev: string, data: CborMap): void {
  const f = new Fields(data, `evt ${ev}`);
  switch (ev) {
    case "ready":
      f.uint("bootMs");
      return;
    case "listening":
      f.uint("port", 0, 65535);
      return;
    case "exit":
      f.uint("pid", 1, UINT32_MAX);
      f.int("exitCode", -1, 255);
      f.uintOrNull("signal", 1, 255);
      f.bool("timedOut");
      f.uint("peakRssKib");
      return;
    case "workload-exit":
      f.int("exitCode", -1, 255);
      f.uintOrNull("signal", 1, 255);
      return;
    case "dial": {
      f.uint("id", 1, UINT32_MAX);
      const addr = f.text("addr", 45, 2);
      if (isIP(addr) === 0) throw violation("SM_BAD_FRAME", "evt dial.addr: not an IP address");
      f.uint("port", 1, 65535);
      return;
    }
    case "dns":
      f.uint("id", 1, UINT32_MAX);
      f.bytes("q", EGRESS_DNS_QUERY_MAX, 12);
      return;
    default:
      return;
  }
}

/** Validates a successful result against the op's result schema (SPEC §6). Unknown ops: any map. */
export function validateResult(op: string, result: CborMap): void {
  const f = new Fields(result, `res ${op}.result`);
  switch (op) {
    case "exec":
      f.int("exitCode", -1, 255);
      f.uintOrNull("signal", 1, 255);
      f.bool("timedOut");
      f.uint("peakRssKib");
      f.bytes("stdout", EXEC_RESULT_MAX);
      f.bytes("stderr", EXEC_RESULT_MAX);
      return;
    case "spawn":
      f.uint("pid", 1, UINT32_MAX);
      return;
    case "read-file":
      f.bytes("data", FILE_MAX);
      f.uint("mode", 0, 0o7777);
      return;
    case "stats":
      f.uint("memTotalKib");
      f.uint("memAvailKib");
      f.uint("uptimeMs");
      f.uint("loadAvg1Milli");
      return;
    default:
      return;
  }
}

function parseMap(m: CborMap, direction: Direction): Frame {
  const t = m.t;
  if (t === undefined) throw badFrame("frame has no key t");
  if (typeof t !== "string") throw badFrame(`frame key t must be text, got ${kind(t)}`);
  const toAgent = direction === "host-to-agent";
  switch (t) {
    case "hello":
      return parseHello(m, direction);
    case "req": {
      if (!toAgent) throw violation("SM_UNKNOWN_FRAME", "req frames are only sent by the host");
      const f = new Fields(m, "req");
      return { t, id: f.uint("id", 0, UINT32_MAX), op: f.text("op", NAME_MAX, 1), args: f.map_("args") };
    }
    case "res": {
      if (toAgent) throw violation("SM_UNKNOWN_FRAME", "res frames are only sent by the agent");
      const f = new Fields(m, "res");
      const id = f.uint("id", 0, UINT32_MAX);
      const hasResult = f.present("result");
      const hasError = f.present("error");
      if (hasResult === hasError) throw badFrame("res must have exactly one of result and error");
      if (hasResult) return { t, id, result: f.map_("result") };
      const e = new Fields(f.map_("error"), "res.error");
      return { t, id, error: { code: e.text("code", NAME_MAX, 1), message: e.text("message", MESSAGE_MAX) } };
    }
    case "evt": {
      if (toAgent) throw violation("SM_UNKNOWN_FRAME", "evt frames are only sent by the agent");
      const f = new Fields(m, "evt");
      const ev = f.text("ev", NAME_MAX, 1);
      const data = f.map_("data");
      validateEventData(ev, data);
      return { t, ev, data };
    }
    case "data": {
      const f = new Fields(m, "data");
      return { t, ch: CH(f), d: f.bytes("d", MAX_FRAME, 1) };
    }
    case "credit": {
      const f = new Fields(m, "credit");
      return { t, ch: CH(f), n: f.uint("n", 1, UINT32_MAX) };
    }
    case "eof":
      return { t, ch: CH(new Fields(m, "eof")) };
    case "close":
      return { t, ch: CH(new Fields(m, "close")) };
    case "fatal": {
      const f = new Fields(m, "fatal");
      return { t, code: f.text("code", NAME_MAX), message: f.text("message", MESSAGE_MAX) };
    }
    default:
      throw violation("SM_UNKNOWN_FRAME", `unknown frame type "${t.slice(0, 64)}"`);
  }
}

/**
 * Decodes and validates one frame body (without the length prefix) travelling in `direction`.
 * Throws AgentError SM_AGENT_PROTOCOL whose `reason` is the fatal code of SPEC §9.1.
 * Byte strings are views into `body`.
 */
export function decodeFrame(body: Buffer, direction: Direction): Frame {
  const v = decodeCbor(body);
  if (!isMap(v)) throw badFrame(`frame is ${kind(v)}, expected a map`);
  return parseMap(v, direction);
}

/** Encodes a frame with its length prefix (`t` first, as SPEC §1 requires). */
export function encodeFrame(frame: Frame): Buffer {
  return encodeFrameBytes(frame as unknown as EncodableValue);
}

/** Reason codes of SPEC §9.1, in order. */
export const FATAL_CODES: readonly FatalCode[] = [
  "SM_FRAME_EMPTY",
  "SM_FRAME_TOO_LARGE",
  "SM_BAD_CBOR",
  "SM_BAD_FRAME",
  "SM_UNKNOWN_FRAME",
  "SM_UNKNOWN_ID",
  "SM_DUPLICATE_ID",
  "SM_UNKNOWN_CHANNEL",
  "SM_DATA_AFTER_EOF",
  "SM_CREDIT_EXCEEDED",
  "SM_CREDIT_OVERFLOW",
  "SM_VERSION",
];
