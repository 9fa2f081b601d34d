// Helpers shared by this package's tests (not exported from the package).
import { readFileSync } from "node:fs";
import { createServer, connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CborValue } from "./cbor";
import type { AgentError } from "./errors";

export interface Vector {
  name: string;
  hex: string;
  valid: boolean;
  direction?: "host-to-agent" | "agent-to-host";
  meaning?: unknown;
  error?: string;
  canonical?: boolean;
  incomplete?: boolean;
  op?: string;
  resError?: string;
  note?: string;
}

export function loadVectors(): Vector[] {
  return JSON.parse(
    readFileSync(new URL("../test-vectors/vectors.json", import.meta.url), "utf8"),
  ) as Vector[];
}

function setKey(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** Decoded value → the vectors' JSON form ({$bytes}, {$int}). */
export function toMeaning(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return { $bytes: v.toString("hex") };
  if (typeof v === "bigint") return { $int: v.toString() };
  if (Array.isArray(v)) return v.map(toMeaning);
  if (typeof v === "object" && v !== null) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) setKey(out, k, toMeaning((v as Record<string, unknown>)[k]));
    return out;
  }
  return v;
}

/** The vectors' JSON form → encodable value. */
export function fromMeaning(v: unknown): CborValue {
  if (Array.isArray(v)) return v.map(fromMeaning);
  if (typeof v === "object" && v !== null) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === "$bytes") return Buffer.from(o.$bytes as string, "hex");
    if (keys.length === 1 && keys[0] === "$int") return BigInt(o.$int as string);
    const out: Record<string, unknown> = {};
    for (const k of keys) setKey(out, k, fromMeaning(o[k]));
    return out as CborValue;
  }
  return v as CborValue;
}

/** A connected pair of Unix-domain sockets (host side, agent side) and a cleanup function. */
export async function socketPair(): Promise<{ host: Socket; agent: Socket; close: () => Promise<void> }> {
  const path = join(tmpdir(), `sm-ap-${process.pid}-${Math.random().toString(36).slice(2)}.sock`);
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const host = netConnect(path);
  await new Promise<void>((resolve) => host.once("connect", resolve));
  const agent = await accepted;
  return {
    host,
    agent,
    close: async () => {
      host.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The error `p` rejects with (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (e) {
    return e as AgentError;
  }
  throw new Error("expected a rejection");
}
