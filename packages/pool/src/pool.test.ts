import { afterEach, describe, expect, it, vi } from "vitest";
import { PoolError } from "./errors";
import { createPool } from "./pool";
import { flush, makeHarness, Res, track } from "./test-utils";
import type { PoolEventName, PoolEvents } from "./types";

const noop = () => {};
const base = { create: async () => new Res(0), destroy: noop };

function configError(fn: () => unknown): PoolError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PoolError);
    expect((error as PoolError).code).toBe("SM_POOL_CONFIG");
    return error as PoolError;
  }
  throw new Error("expected SM_POOL_CONFIG");
}

function codeOf(error: unknown): string | undefined {
  return (error as { code?: string } | undefined)?.code;
}

describe("options", () => {
  it("rejects min > max naming the field", () => {
    const e = configError(() => createPool({ ...base, min: 3, max: 2 }));
    expect(e.field).toBe("min");
    expect(e.message).toMatch(/min \(3\) must not exceed max \(2\)/);
  });

  it.each([
    ["acquireTimeoutMs", -1],
    ["idleTimeoutMs", -5],
    ["max", 0],
    ["max", 1.5],
    ["min", Number.NaN],
    ["createRetries", "3"],
    ["maxConcurrentCreates", 0],
    ["createTimeoutMs", 2 ** 40],
  ])("rejects %s = %s", (field, value) => {
    const e = configError(() => createPool({ ...base, [field]: value }));
    expect(e.field).toBe(field);
    expect(e.message).toContain(field);
  });

  it("rejects unknown keys (typos) naming them", () => {
    const e = configError(() => createPool({ ...base, maxSize: 4 } as never));
    expect(e.field).toBe("maxSize");
    expect(e.message).toMatch(/unknown option/);
  });

  it("requires create and destroy functions", () => {
    expect(configError(() => createPool({ destroy: noop } as never)).field).toBe("create");
    expect(configError(() => createPool({ create: base.create } as never)).field).toBe("destroy");
    expect(configError(() => createPool({ ...base, reset: 1 } as never)).field).toBe("reset");
  });

  it("checks backoff, fifo, initial and clock", () => {
    expect(
      configError(() => createPool({ ...base, createBackoffMs: 500, createBackoffMaxMs: 100 })).field,
    ).toBe("createBackoffMaxMs");
    expect(configError(() => createPool({ ...base, fifo: "yes" } as never)).field).toBe("fifo");
    expect(configError(() => createPool({ ...base, max: 1, initial: [new Res(1), new Res(2)] })).field).toBe(
      "initial",
    );
    const r = new Res(1);
    expect(configError(() => createPool({ ...base, max: 2, initial: [r, r] })).field).toBe("initial");
    expect(configError(() => createPool({ ...base, clock: { now: () => 0 } } as never)).field).toBe("clock");
  });

  it("applies documented defaults", () => {
    const pool = createPool(base);
    expect(pool.stats()).toEqual({ alive: 0, inUse: 0, idle: 0, waiting: 0, creating: 0, min: 0, max: 1 });
  });
});

describe("filling and growing", () => {
  it("fills to min eagerly in the background, at most maxConcurrentCreates at a time", async () => {
    const h = makeHarness({ manual: true, min: 5, max: 5, maxConcurrentCreates: 2 });
    expect(h.pool.stats()).toMatchObject({ alive: 0, creating: 2 });
    expect(h.pending).toHaveLength(2);
    await h.resolveNext();
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1, creating: 2 });
    for (let i = 0; i < 4; i++) await h.resolveNext();
    expect(h.pool.stats()).toMatchObject({ alive: 5, idle: 5, creating: 0 });
    expect(h.pending).toHaveLength(0);
  });

  it("grows to max under demand, then queues", async () => {
    const h = makeHarness({ max: 2 });
    const a = await h.pool.acquire();
    const b = await h.pool.acquire();
    expect(a).not.toBe(b);
    const c = track(h.pool.acquire());
    await flush();
    expect(c.state).toBe("pending");
    expect(h.pool.stats()).toMatchObject({ alive: 2, inUse: 2, waiting: 1, creating: 0 });
    expect(h.created).toHaveLength(2);
    h.pool.release(a);
    await flush();
    expect(c.value).toBe(a);
    h.pool.assertInvariants();
  });

  it("hands an idle resource out synchronously-cheap and reuses it", async () => {
    const h = makeHarness({ min: 1, max: 1 });
    await flush();
    const r = await h.pool.acquire();
    h.pool.release(r);
    expect(await h.pool.acquire()).toBe(r);
    expect(h.created).toHaveLength(1);
  });
});

describe("waiters", () => {
  it("serves waiters in FIFO order", async () => {
    const h = makeHarness({ max: 1 });
    const r = await h.pool.acquire();
    const order: number[] = [];
    const waits = [1, 2, 3].map((i) =>
      h.pool.acquire().then((x) => {
        order.push(i);
        h.pool.release(x);
      }),
    );
    h.pool.release(r);
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
  });

  it("rejects with SM_ACQUIRE_TIMEOUT after acquireTimeoutMs, with stats in message and error", async () => {
    const h = makeHarness({ max: 1, acquireTimeoutMs: 100 });
    await h.pool.acquire();
    const w = track(h.pool.acquire());
    await h.clock.advance(99);
    expect(w.state).toBe("pending");
    await h.clock.advance(1);
    expect(w.state).toBe("rejected");
    const e = w.error as PoolError;
    expect(e.code).toBe("SM_ACQUIRE_TIMEOUT");
    expect(e.message).toContain("alive=1 inUse=1 idle=0 waiting=1 creating=0 min=0 max=1");
    expect(e.stats).toEqual({ alive: 1, inUse: 1, idle: 0, waiting: 1, creating: 0, min: 0, max: 1 });
    expect(h.pool.stats().waiting).toBe(0);
  });

  it("waits forever with acquireTimeoutMs: 0", async () => {
    const h = makeHarness({ max: 1, acquireTimeoutMs: 0 });
    const r = await h.pool.acquire();
    const w = track(h.pool.acquire());
    await h.clock.advance(10 ** 9);
    expect(w.state).toBe("pending");
    expect(h.clock.pendingTimers).toBe(0);
    h.pool.release(r);
    await flush();
    expect(w.value).toBe(r);
  });

  it("abort removes the waiter; the next waiter gets the resource", async () => {
    const h = makeHarness({ max: 1 });
    const r = await h.pool.acquire();
    const ac = new AbortController();
    const first = track(h.pool.acquire({ signal: ac.signal }));
    const second = track(h.pool.acquire());
    expect(h.pool.stats().waiting).toBe(2);
    const reason = new Error("user gave up");
    ac.abort(reason);
    await flush();
    expect(first.state).toBe("rejected");
    expect(codeOf(first.error)).toBe("SM_ACQUIRE_ABORTED");
    expect((first.error as Error).cause).toBe(reason);
    expect(h.pool.stats().waiting).toBe(1);
    h.pool.release(r);
    await flush();
    expect(second.value).toBe(r);
    h.pool.assertInvariants();
  });

  it("rejects at once for an already aborted signal", async () => {
    const h = makeHarness({ min: 1 });
    await flush();
    await expect(h.pool.acquire({ signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: "SM_ACQUIRE_ABORTED",
    });
    expect(h.pool.stats()).toMatchObject({ idle: 1, waiting: 0 });
  });
});

describe("reset and validate", () => {
  it("runs reset on release before the resource becomes idle again", async () => {
    let finishReset: () => void = noop;
    const reset = vi.fn(
      () =>
        new Promise<void>((r) => {
          finishReset = r;
        }),
    );
    const h = makeHarness({ max: 1, reset });
    const r = await h.pool.acquire();
    h.pool.release(r);
    expect(reset).toHaveBeenCalledWith(r);
    expect(h.pool.stats()).toMatchObject({ inUse: 1, idle: 0 });
    const w = track(h.pool.acquire());
    await flush();
    expect(w.state).toBe("pending");
    expect(h.created).toHaveLength(1); // no extra creation while the reset is running
    finishReset();
    await flush();
    expect(w.value).toBe(r);
  });

  it("destroys and replaces a resource whose reset fails", async () => {
    const h = makeHarness({
      min: 1,
      max: 1,
      reset: () => Promise.reject(new Error("dirty")),
    });
    const events: PoolEvents["reset-fail"][] = [];
    h.pool.on("reset-fail", (e) => events.push(e));
    const r = await h.pool.acquire();
    h.pool.release(r);
    await flush();
    expect(h.destroyed).toEqual([r]);
    expect(events).toHaveLength(1);
    expect((events[0]!.error as Error).message).toBe("dirty");
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1 });
    expect(await h.pool.acquire()).not.toBe(r);
  });

  it("validates on checkout of idle resources, never fresh ones; invalid ones are destroyed", async () => {
    const bad = new Set<Res>();
    const validate = vi.fn((r: Res) => !bad.has(r));
    const h = makeHarness({ max: 2, validate });
    const a = await h.pool.acquire();
    expect(validate).not.toHaveBeenCalled();
    h.pool.release(a);
    bad.add(a);
    const b = await h.pool.acquire();
    expect(validate).toHaveBeenCalledWith(a);
    expect(b).not.toBe(a);
    expect(h.destroyed).toEqual([a]);
    h.pool.assertInvariants();
  });

  it("a synchronous validate hands an idle resource out in the same call: no wait, no timer armed", async () => {
    const h = makeHarness({ max: 1, acquireTimeoutMs: 50, validate: () => true });
    const r = await h.pool.acquire();
    h.pool.release(r);
    const timers = h.clock.pendingTimers;
    const got = track(h.pool.acquire());
    expect(h.clock.pendingTimers).toBe(timers); // the acquire timeout was never armed
    await Promise.resolve(); // one microtask: no queue, no dispatch round
    expect(got.value).toBe(r);
    expect(h.pool.stats()).toMatchObject({ inUse: 1, waiting: 0 });
    h.pool.assertInvariants();
  });

  it("a validate that throws on the fast path destroys that resource; the acquire gets a new one", async () => {
    let fail = false;
    const events: PoolEvents["validate-fail"][] = [];
    const h = makeHarness({
      max: 1,
      validate: () => {
        if (fail) throw new Error("probe failed");
        return true;
      },
    });
    h.pool.on("validate-fail", (e) => events.push(e));
    const a = await h.pool.acquire();
    h.pool.release(a);
    fail = true;
    const b = await h.pool.acquire();
    expect(b).not.toBe(a);
    expect(h.destroyed).toEqual([a]);
    expect((events[0]!.error as Error).message).toBe("probe failed");
    h.pool.assertInvariants();
  });

  it("async validate: a waiter timing out meanwhile leaves the valid resource idle", async () => {
    let pass: (ok: boolean) => void = noop;
    const h = makeHarness({
      max: 1,
      acquireTimeoutMs: 50,
      validate: () =>
        new Promise<boolean>((r) => {
          pass = r;
        }),
    });
    const r = await h.pool.acquire();
    h.pool.release(r);
    const w = track(h.pool.acquire());
    await flush();
    h.pool.assertInvariants();
    expect(h.pool.stats()).toMatchObject({ inUse: 1, waiting: 1 });
    await h.clock.advance(50);
    expect(codeOf(w.error)).toBe("SM_ACQUIRE_TIMEOUT");
    pass(true);
    await flush();
    expect(h.pool.stats()).toMatchObject({ idle: 1, waiting: 0 });
    h.pool.assertInvariants();
  });
});

describe("idle eviction", () => {
  it("destroys idle resources above min after idleTimeoutMs, keeps min", async () => {
    const h = makeHarness({ min: 1, max: 3, idleTimeoutMs: 1000 });
    const rs = await Promise.all([h.pool.acquire(), h.pool.acquire(), h.pool.acquire()]);
    for (const r of rs) h.pool.release(r);
    await h.clock.advance(999);
    expect(h.pool.stats().alive).toBe(3);
    await h.clock.advance(1);
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1 });
    expect(h.destroyed).toEqual([rs[0], rs[1]]); // oldest idle first
    await h.clock.advance(10_000);
    expect(h.pool.stats().alive).toBe(1);
  });

  it("does not evict a resource that was reused before its deadline", async () => {
    const h = makeHarness({ min: 0, max: 1, idleTimeoutMs: 100 });
    const r = await h.pool.acquire();
    h.pool.release(r);
    await h.clock.advance(60);
    const again = await h.pool.acquire();
    await h.clock.advance(60);
    h.pool.release(again);
    await h.clock.advance(99);
    expect(h.destroyed).toHaveLength(0);
    await h.clock.advance(1);
    expect(h.destroyed).toEqual([r]);
  });

  it("fifo: false hands out the most recently released resource", async () => {
    const lifo = makeHarness({ max: 2, fifo: false });
    const [a, b] = [await lifo.pool.acquire(), await lifo.pool.acquire()];
    lifo.pool.release(a);
    lifo.pool.release(b);
    expect(await lifo.pool.acquire()).toBe(b);
    const fifo = makeHarness({ max: 2 });
    const [c, d] = [await fifo.pool.acquire(), await fifo.pool.acquire()];
    fifo.pool.release(c);
    fifo.pool.release(d);
    expect(await fifo.pool.acquire()).toBe(c);
  });
});

describe("creation failures", () => {
  it("rejects the waiter with SM_CREATE_FAILED only after createRetries, backing off exponentially", async () => {
    const h = makeHarness({ max: 1, failCreates: 100, createRetries: 2, createBackoffMs: 100 });
    const fails: PoolEvents["create-fail"][] = [];
    h.pool.on("create-fail", (e) => fails.push(e));
    const w = track(h.pool.acquire());
    await flush();
    expect(h.createCalls).toHaveLength(1);
    await h.clock.advance(99);
    expect(h.createCalls).toHaveLength(1);
    await h.clock.advance(1);
    expect(h.createCalls).toHaveLength(2);
    expect(w.state).toBe("pending");
    await h.clock.advance(200);
    expect(h.createCalls).toHaveLength(3);
    expect(h.createTimes).toEqual([0, 100, 300]);
    expect(w.state).toBe("rejected");
    const e = w.error as PoolError;
    expect(e.code).toBe("SM_CREATE_FAILED");
    expect((e.cause as Error).message).toMatch(/create failed/);
    expect(fails.map((f) => [f.attempt, f.willRetry])).toEqual([
      [1, true],
      [2, true],
      [3, false],
    ]);
    // nothing needs a resource any more: no further attempts
    await h.clock.advance(100_000);
    expect(h.createCalls).toHaveLength(3);
    expect(h.pool.stats()).toMatchObject({ alive: 0, creating: 0, waiting: 0 });
  });

  it("never stays below min: keeps retrying with capped backoff until creation works", async () => {
    const h = makeHarness({ min: 2, max: 2, failCreates: 12, createBackoffMs: 10, createBackoffMaxMs: 1000 });
    await h.clock.advance(60_000);
    expect(h.pool.stats()).toMatchObject({ alive: 2, idle: 2, creating: 0 });
    const gaps = h.createTimes.slice(1).map((t, i) => t - h.createTimes[i]!);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1000);
  });

  it("aborts an attempt after createTimeoutMs, retries, and destroys the late resource", async () => {
    const h = makeHarness({ manual: true, max: 1, createTimeoutMs: 500, createBackoffMs: 10 });
    const destroyEvents: PoolEvents["destroy"][] = [];
    h.pool.on("destroy", (e) => destroyEvents.push(e));
    const w = track(h.pool.acquire());
    await flush();
    const first = h.pending[0]!;
    await h.clock.advance(500);
    expect(first.ctx.signal.aborted).toBe(true);
    expect(codeOf(first.ctx.signal.reason)).toBe("SM_CREATE_TIMEOUT");
    await h.clock.advance(10);
    expect(h.pending).toHaveLength(2);
    const late = await h.resolveNext(); // the timed-out attempt finally answers
    expect(h.destroyed).toEqual([late]);
    expect(destroyEvents).toEqual([{ resourceId: first.ctx.resourceId, reason: "late-create" }]);
    const good = await h.resolveNext();
    expect(w.value).toBe(good);
    expect(h.pool.stats()).toMatchObject({ alive: 1, inUse: 1, creating: 0 });
  });

  it("treats a synchronous throw or a non-object result of create as a failure", async () => {
    let calls = 0;
    const pool = createPool<Res>({
      create: () => {
        calls++;
        if (calls === 1) throw new Error("sync boom");
        if (calls === 2) return 42 as unknown as Res;
        return new Res(calls);
      },
      destroy: noop,
      createBackoffMs: 0,
      createRetries: 5,
    });
    const r = await pool.acquire();
    expect(r.n).toBe(3);
  });
});

describe("release and destroy misuse", () => {
  it("double release → SM_POOL_DOUBLE_RELEASE; foreign value → SM_POOL_FOREIGN", async () => {
    const h = makeHarness({ max: 1 });
    const r = await h.pool.acquire();
    h.pool.release(r);
    expect(() => h.pool.release(r)).toThrow(expect.objectContaining({ code: "SM_POOL_DOUBLE_RELEASE" }));
    expect(() => h.pool.release(new Res(99))).toThrow(expect.objectContaining({ code: "SM_POOL_FOREIGN" }));
    expect(() => h.pool.destroy(new Res(99))).toThrow(expect.objectContaining({ code: "SM_POOL_FOREIGN" }));
    h.pool.assertInvariants();
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1, inUse: 0 });
  });

  it("destroy() removes a checked-out resource, replaces it for min; later release is a double release", async () => {
    const h = makeHarness({ min: 1, max: 1 });
    const r = await h.pool.acquire();
    await h.pool.destroy(r);
    expect(h.destroyed).toEqual([r]);
    await flush();
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1 });
    expect(() => h.pool.release(r)).toThrow(expect.objectContaining({ code: "SM_POOL_DOUBLE_RELEASE" }));
  });

  it("reports destroy failures as events, never as rejections", async () => {
    const pool = createPool<Res>({
      create: async () => new Res(1),
      destroy: () => Promise.reject(new Error("stuck")),
    });
    const fails: unknown[] = [];
    pool.on("destroy-fail", (e) => fails.push(e));
    const r = await pool.acquire();
    await pool.destroy(r);
    expect(fails).toEqual([{ resourceId: 1, error: new Error("stuck") }]);
  });
});

describe("shutdown and drain", () => {
  it("rejects waiters, waits for in-flight creations, destroys everything, is idempotent", async () => {
    const h = makeHarness({ manual: true, max: 2 });
    const pw = h.pool.acquire();
    await h.resolveNext();
    const inUse = await pw;
    const waiter = track(h.pool.acquire());
    await flush();
    expect(h.pending).toHaveLength(1); // second creation in flight
    const p1 = h.pool.shutdown();
    const p2 = h.pool.shutdown();
    expect(p1).toBe(p2);
    await flush();
    expect(codeOf(waiter.error)).toBe("SM_POOL_CLOSED");
    expect(h.pending[0]!.ctx.signal.aborted).toBe(true);
    const done = track(p1);
    await flush();
    expect(done.state).toBe("pending"); // still waiting for the creation
    const late = await h.resolveNext();
    await flush();
    expect(done.state).toBe("resolved");
    expect(new Set(h.destroyed)).toEqual(new Set([inUse, late]));
    expect(h.pool.stats()).toMatchObject({ alive: 0, creating: 0, waiting: 0 });
    await expect(h.pool.acquire()).rejects.toMatchObject({ code: "SM_POOL_CLOSED" });
    expect(() => h.pool.release(inUse)).not.toThrow(); // releasing after shutdown is harmless
    expect(h.clock.pendingTimers).toBe(0);
  });

  it("waits for running resets before resolving", async () => {
    let finish: () => void = noop;
    const h = makeHarness({
      max: 1,
      reset: () =>
        new Promise<void>((r) => {
          finish = r;
        }),
    });
    const r = await h.pool.acquire();
    h.pool.release(r);
    const done = track(h.pool.shutdown());
    await flush();
    expect(done.state).toBe("pending");
    finish();
    await flush();
    expect(done.state).toBe("resolved");
    expect(h.destroyed).toEqual([r]);
  });

  it("drain serves queued waiters, refuses new ones, resolves after everything returned and destroyed", async () => {
    const h = makeHarness({ min: 1, max: 1 });
    const r = await h.pool.acquire();
    const queued = track(h.pool.acquire());
    const drained = track(h.pool.drain());
    await expect(h.pool.acquire()).rejects.toMatchObject({ code: "SM_POOL_CLOSED" });
    h.pool.release(r);
    await flush();
    expect(queued.value).toBe(r);
    expect(drained.state).toBe("pending");
    h.pool.release(r);
    await flush();
    expect(drained.state).toBe("resolved");
    expect(h.destroyed).toEqual([r]);
  });
});

it("drain cancels retries that only served min instead of waiting out their backoff", async () => {
  const h = makeHarness({ min: 1, max: 1, failCreates: 1, createBackoffMs: 5000 });
  await flush();
  expect(h.pool.stats()).toMatchObject({ alive: 0, creating: 1 });
  const drained = track(h.pool.drain());
  await flush();
  expect(drained.state).toBe("resolved");
  expect(h.createCalls).toHaveLength(1);
  expect(h.clock.pendingTimers).toBe(0);
});

describe("seeding", () => {
  it("initial resources count toward max and are handed out first", async () => {
    const warm = new Res(100);
    const h = makeHarness({ manual: true, min: 2, max: 2, initial: [warm] });
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1, creating: 1 });
    expect(await h.pool.acquire()).toBe(warm);
  });

  it("add() adopts a resource, hands it to a waiter, and refuses beyond max", async () => {
    const h = makeHarness({ manual: true, max: 2 });
    const w = track(h.pool.acquire());
    await flush();
    const extra = new Res(7);
    h.pool.add(extra);
    await flush();
    expect(w.value).toBe(extra);
    expect(() => h.pool.add(new Res(8))).toThrow(expect.objectContaining({ code: "SM_POOL_FULL" }));
    expect(() => h.pool.add(extra)).toThrow(expect.objectContaining({ code: "SM_POOL_CONFIG" }));
    h.pool.release(extra);
    expect(h.pool.stats()).toMatchObject({ alive: 1, idle: 1, creating: 1 });
  });
});

describe("events", () => {
  it("carry request and resource ids", async () => {
    const h = makeHarness({ max: 1 });
    const seen: [PoolEventName, unknown][] = [];
    for (const name of [
      "acquire-request",
      "acquire-success",
      "create-request",
      "create-success",
      "release",
    ] as const) {
      h.pool.on(name, (e) => seen.push([name, e]));
    }
    const r = await h.pool.acquire();
    h.pool.release(r);
    await h.pool.acquire();
    expect(seen).toEqual([
      ["acquire-request", { requestId: 1 }],
      ["create-request", { resourceId: 1, attempt: 1 }],
      ["create-success", { resourceId: 1, attempt: 1, durationMs: 0 }],
      ["acquire-success", { requestId: 1, resourceId: 1, waitedMs: 0 }],
      ["release", { resourceId: 1 }],
      ["acquire-request", { requestId: 2 }],
      ["acquire-success", { requestId: 2, resourceId: 1, waitedMs: 0 }],
    ]);
  });

  it("off() removes a listener; unknown events are refused", () => {
    const pool = createPool(base);
    const l = vi.fn();
    pool.on("acquire-request", l).off("acquire-request", l);
    void pool.acquire();
    expect(l).not.toHaveBeenCalled();
    expect(() => pool.on("nope" as never, l)).toThrow(expect.objectContaining({ code: "SM_POOL_CONFIG" }));
  });

  it("a throwing listener surfaces as an uncaught error and leaves the pool consistent", async () => {
    const h = makeHarness({ max: 1 });
    const caught: unknown[] = [];
    const orig = globalThis.queueMicrotask;
    globalThis.queueMicrotask = (cb) =>
      orig(() => {
        try {
          cb();
        } catch (e) {
          caught.push(e);
        }
      });
    try {
      h.pool.on("acquire-success", () => {
        throw new Error("listener bug");
      });
      const r = await h.pool.acquire();
      h.pool.assertInvariants();
      expect(h.pool.stats()).toMatchObject({ inUse: 1 });
      h.pool.release(r);
      await flush();
    } finally {
      globalThis.queueMicrotask = orig;
    }
    expect(caught).toEqual([new Error("listener bug")]);
  });
});

describe("default clock", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("follows the test framework's fake timers", async () => {
    vi.useFakeTimers();
    const pool = createPool<Res>({ create: async () => new Res(1), destroy: noop, acquireTimeoutMs: 5000 });
    await pool.acquire();
    const w = track(pool.acquire());
    await vi.advanceTimersByTimeAsync(4999);
    expect(w.state).toBe("pending");
    await vi.advanceTimersByTimeAsync(1);
    expect(codeOf(w.error)).toBe("SM_ACQUIRE_TIMEOUT");
    await pool.shutdown();
  });

  it("a pool with only idle timers does not keep the process alive (unref)", async () => {
    const pool = createPool<Res>({ create: async () => new Res(1), destroy: noop, idleTimeoutMs: 60_000 });
    const timeouts = () =>
      (process as unknown as { getActiveResourcesInfo(): string[] })
        .getActiveResourcesInfo()
        .filter((x) => x === "Timeout").length;
    const r = await pool.acquire();
    const before = timeouts();
    pool.release(r); // arms the idle-eviction timer
    expect(timeouts()).toBe(before);
    await pool.shutdown();
  });
});
