import { MAX_TIMER_MS } from "@supermachine/base";
import { PoolError } from "./errors";
import type { PoolClock, PoolOptions } from "./types";

/** Options after validation, every default applied. */
export interface PoolConfig<T> {
  create: PoolOptions<T>["create"];
  destroy: PoolOptions<T>["destroy"];
  reset: PoolOptions<T>["reset"];
  validate: PoolOptions<T>["validate"];
  min: number;
  max: number;
  acquireTimeoutMs: number;
  idleTimeoutMs: number;
  createTimeoutMs: number;
  createRetries: number;
  createBackoffMs: number;
  createBackoffMaxMs: number;
  fifo: boolean;
  maxConcurrentCreates: number;
  initial: readonly T[];
  clock: PoolClock;
}

export const DEFAULTS = {
  min: 0,
  max: 1,
  acquireTimeoutMs: 60_000,
  idleTimeoutMs: 0,
  createTimeoutMs: 30_000,
  createRetries: 2,
  createBackoffMs: 100,
  createBackoffMaxMs: 10_000,
  fifo: true,
  maxConcurrentCreates: 4,
} as const;

const KNOWN_KEYS = new Set<string>([
  "create",
  "destroy",
  "reset",
  "validate",
  "min",
  "max",
  "acquireTimeoutMs",
  "idleTimeoutMs",
  "createTimeoutMs",
  "createRetries",
  "createBackoffMs",
  "createBackoffMaxMs",
  "fifo",
  "maxConcurrentCreates",
  "initial",
  "clock",
]);

/** The longest delay a Node timer takes (2^31 - 1 ms); every duration option is capped to it. Its home is @supermachine/base. */
export { MAX_TIMER_MS };

export const defaultClock: PoolClock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

function configError(field: string, message: string): PoolError {
  return new PoolError("SM_POOL_CONFIG", `Invalid pool option "${field}": ${message}`, {
    details: { field },
  });
}

function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "function") return "a function";
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  return typeof v === "object" ? "an object" : String(v);
}

function integer(
  o: Record<string, unknown>,
  key: string,
  def: number,
  lowest: number,
  highest = MAX_TIMER_MS,
) {
  const v = o[key];
  if (v === undefined) return def;
  if (typeof v !== "number" || !Number.isInteger(v) || v < lowest || v > highest) {
    throw configError(key, `expected an integer from ${lowest} to ${highest}, got ${describe(v)}`);
  }
  return v;
}

function fn<F>(o: Record<string, unknown>, key: string, required: boolean): F | undefined {
  const v = o[key];
  if (v === undefined && !required) return undefined;
  if (typeof v !== "function") {
    throw configError(key, `expected a function, got ${describe(v)}${required ? " (required)" : ""}`);
  }
  return v as F;
}

export function resolveOptions<T>(options: PoolOptions<T>): PoolConfig<T> {
  if (typeof options !== "object" || options === null) {
    throw configError("options", `expected an object, got ${describe(options)}`);
  }
  const o = options as unknown as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!KNOWN_KEYS.has(key)) {
      throw configError(key, `unknown option (known: ${[...KNOWN_KEYS].join(", ")})`);
    }
  }
  const create = fn<PoolConfig<T>["create"]>(o, "create", true)!;
  const destroy = fn<PoolConfig<T>["destroy"]>(o, "destroy", true)!;
  const reset = fn<PoolConfig<T>["reset"]>(o, "reset", false);
  const validate = fn<PoolConfig<T>["validate"]>(o, "validate", false);
  const max = integer(o, "max", DEFAULTS.max, 1, Number.MAX_SAFE_INTEGER);
  const min = integer(o, "min", DEFAULTS.min, 0, Number.MAX_SAFE_INTEGER);
  if (min > max) throw configError("min", `min (${min}) must not exceed max (${max})`);
  const acquireTimeoutMs = integer(o, "acquireTimeoutMs", DEFAULTS.acquireTimeoutMs, 0);
  const idleTimeoutMs = integer(o, "idleTimeoutMs", DEFAULTS.idleTimeoutMs, 0);
  const createTimeoutMs = integer(o, "createTimeoutMs", DEFAULTS.createTimeoutMs, 0);
  const createRetries = integer(o, "createRetries", DEFAULTS.createRetries, 0, Number.MAX_SAFE_INTEGER);
  const createBackoffMs = integer(o, "createBackoffMs", DEFAULTS.createBackoffMs, 0);
  const createBackoffMaxMs = integer(
    o,
    "createBackoffMaxMs",
    Math.max(DEFAULTS.createBackoffMaxMs, createBackoffMs),
    0,
  );
  if (createBackoffMaxMs < createBackoffMs) {
    throw configError(
      "createBackoffMaxMs",
      `must be >= createBackoffMs (${createBackoffMs}), got ${createBackoffMaxMs}`,
    );
  }
  const maxConcurrentCreates = integer(
    o,
    "maxConcurrentCreates",
    DEFAULTS.maxConcurrentCreates,
    1,
    Number.MAX_SAFE_INTEGER,
  );
  let fifo: boolean = DEFAULTS.fifo;
  if (o.fifo !== undefined) {
    if (typeof o.fifo !== "boolean") throw configError("fifo", `expected a boolean, got ${describe(o.fifo)}`);
    fifo = o.fifo;
  }
  let initial: readonly T[] = [];
  if (o.initial !== undefined) {
    if (!Array.isArray(o.initial)) {
      throw configError("initial", `expected an array of resources, got ${describe(o.initial)}`);
    }
    if (o.initial.length > max) {
      throw configError("initial", `holds ${o.initial.length} resources, more than max (${max})`);
    }
    const seen = new Set<unknown>();
    for (const r of o.initial) {
      if ((typeof r !== "object" && typeof r !== "function") || r === null) {
        throw configError("initial", `resources must be objects (tracked by identity), got ${describe(r)}`);
      }
      if (seen.has(r)) throw configError("initial", "holds the same resource twice");
      seen.add(r);
    }
    initial = o.initial as T[];
  }
  let clock = defaultClock;
  if (o.clock !== undefined) {
    const c = o.clock as Partial<PoolClock> | null;
    if (
      typeof c !== "object" ||
      c === null ||
      typeof c.now !== "function" ||
      typeof c.setTimeout !== "function" ||
      typeof c.clearTimeout !== "function"
    ) {
      throw configError(
        "clock",
        "expected an object with now(), setTimeout(cb, ms) and clearTimeout(handle)",
      );
    }
    clock = c as PoolClock;
  }
  return {
    create,
    destroy,
    reset,
    validate,
    min,
    max,
    acquireTimeoutMs,
    idleTimeoutMs,
    createTimeoutMs,
    createRetries,
    createBackoffMs,
    createBackoffMaxMs,
    fifo,
    maxConcurrentCreates,
    initial,
    clock,
  };
}
