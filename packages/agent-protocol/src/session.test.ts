// AgentClient's session: handshake, protocol violations by the agent, events.
import { afterEach, describe, expect, it } from "vitest";
import { AgentClient, connectAgent } from "./client";
import { DEFAULT_WINDOW } from "./constants";
import { AgentError } from "./errors";
import { fakeAgent } from "./fake-agent.test-util";
import { encodeFrame, type Frame } from "./frames";
import { rejection, socketPair } from "./test-helpers";
import { ReferenceAgent } from "./testing/reference-agent";

describe("AgentClient handshake", () => {
  let cleanup: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanup.reverse()) await c();
    cleanup = [];
  });

  it("resends hello every 200 ms until the agent opens its port", async () => {
    const pair = await socketPair();
    cleanup.push(() => pair.close());
    let dropped = 0;
    const drop = (c: Buffer) => {
      dropped += c.length;
    };
    pair.agent.on("data", drop); // the guest has not opened its port yet: bytes are lost
    const client = new AgentClient(pair.host);
    cleanup.push(() => client.close());
    const connecting = client.connect();
    await new Promise((r) => setTimeout(r, 650));
    pair.agent.off("data", drop);
    const agent = new ReferenceAgent(pair.agent);
    cleanup.push(() => agent.close());
    const hello = await connecting;
    expect(hello.agentVersion).toMatch(/^reference-/);
    expect(dropped).toBeGreaterThan(0);
    const oneHello = encodeFrame({
      t: "hello",
      v: 1,
      host: "0.1.0",
      maxFrame: 5242880,
      window: 262144,
      nonce: 1,
    }).length;
    expect(dropped / oneHello).toBeGreaterThanOrEqual(3); // t=0, 200, 400, 600 ms
    await client.ping();
  });

  it("resynchronises past garbage and stale hello answers", async () => {
    const pair = await socketPair();
    cleanup.push(() => pair.close());
    // stale bytes from before a snapshot: a frame tail, a hello answer with another nonce, junk
    pair.agent.write(Buffer.from("6c6c6f00ff", "hex"));
    pair.agent.write(
      encodeFrame({
        t: "hello",
        v: 1,
        agent: "stale",
        caps: [],
        maxFrame: 5242880,
        window: 262144,
        ready: true,
        listening: null,
        bootMs: 1,
        nonce: 12345,
      }),
    );
    pair.agent.write(Buffer.from("0000000ba16174 65 68656c6c6f".replace(/ /g, ""), "hex")); // truncated candidate
    pair.agent.write(Buffer.from("deadbeef", "hex"));
    const agent = new ReferenceAgent(pair.agent);
    cleanup.push(() => agent.close());
    const client = await connectAgent(pair.host);
    cleanup.push(() => client.close());
    expect(client.hello?.agentVersion).toMatch(/^reference-/);
    await client.ping();
  });

  it("times out with SM_AGENT_LOST when nobody answers", async () => {
    const pair = await socketPair();
    cleanup.push(() => pair.close());
    const client = new AgentClient(pair.host, { helloTimeoutMs: 300 });
    const t0 = Date.now();
    const err = await rejection(client.connect());
    expect(err.code).toBe("SM_AGENT_LOST");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
    expect(client.state).toBe("failed");
  });

  it("tolerates one answer per resent hello", async () => {
    const pair = await socketPair();
    cleanup.push(() => pair.close());
    const fake = fakeAgent(pair.agent, { answerHello: false });
    const client = new AgentClient(pair.host, { helloResendMs: 20 });
    cleanup.push(() => client.close());
    const p = client.connect();
    await new Promise((r) => setTimeout(r, 90));
    const hellos = fake.frames.filter((f) => f.t === "hello") as Array<{ nonce?: number }>;
    expect(hellos.length).toBeGreaterThanOrEqual(3);
    for (const h of hellos) {
      fake.send({
        t: "hello",
        v: 1,
        agent: "f",
        caps: [],
        maxFrame: 5242880,
        window: 65536,
        ready: true,
        listening: null,
        bootMs: 1,
        nonce: h.nonce,
      });
    }
    await p;
    const ping = client.ping();
    const req = await fake.next((f) => f.t === "req");
    fake.send({ t: "res", id: (req as { id: number }).id, result: {} });
    await ping;
    expect(client.state).toBe("connected");
  });

  it("rejects unknown options", () => {
    expect(() => new AgentClient(null as never, { windw: 1 } as never)).toThrowError(
      /unknown AgentClient option/,
    );
    expect(() => new AgentClient(null as never, { window: 10 })).toThrowError(AgentError);
  });
});

describe("protocol violations by the agent", () => {
  let cleanup: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanup.reverse()) await c();
    cleanup = [];
  });

  async function setup(window = DEFAULT_WINDOW) {
    const pair = await socketPair();
    cleanup.push(() => pair.close());
    const fake = fakeAgent(pair.agent, { window });
    const client = await connectAgent(pair.host);
    cleanup.push(() => client.close());
    const failed = new Promise<AgentError>((r) => client.once("failed", r));
    return { pair, fake, client, failed };
  }

  async function expectFatal(
    fake: ReturnType<typeof fakeAgent>,
    client: AgentClient,
    failed: Promise<AgentError>,
    reason: string,
  ) {
    const err = await failed;
    expect(err.code).toBe("SM_AGENT_PROTOCOL");
    expect(err.reason).toBe(reason);
    expect(client.state).toBe("failed");
    const fatal = (await fake.next((f) => f.t === "fatal")) as { code: string };
    expect(fatal.code).toBe(reason);
  }

  it("data on an unknown channel", async () => {
    const { fake, client, failed } = await setup();
    const ping = rejection(client.ping());
    fake.send({ t: "data", ch: 99, d: Buffer.from("x") });
    await expectFatal(fake, client, failed, "SM_UNKNOWN_CHANNEL");
    expect((await ping).code).toBe("SM_AGENT_PROTOCOL");
  });

  it("more data than the window allows", async () => {
    const { fake, client, failed } = await setup();
    const child = client.spawn({ argv: ["x"] });
    const req = (await fake.next((f) => f.t === "req")) as unknown as { id: number; args: { chOut: number } };
    fake.send({ t: "res", id: req.id, result: { pid: 9 } });
    await child;
    // nobody reads stdout, so no credit comes back: window + 1 bytes is one too many
    fake.send({ t: "data", ch: req.args.chOut, d: Buffer.alloc(DEFAULT_WINDOW - 10) });
    fake.send({ t: "data", ch: req.args.chOut, d: Buffer.alloc(11) });
    await expectFatal(fake, client, failed, "SM_CREDIT_EXCEEDED");
  });

  it("a consumer that drains returns credit, so the same bytes are legal", async () => {
    const { fake, client } = await setup();
    const child = await (async () => {
      const c = client.spawn({ argv: ["x"] });
      const req = (await fake.next((f) => f.t === "req")) as unknown as {
        id: number;
        args: { chOut: number };
      };
      fake.send({ t: "res", id: req.id, result: { pid: 9 } });
      return { c: await c, chOut: req.args.chOut };
    })();
    fake.send({ t: "data", ch: child.chOut, d: Buffer.alloc(DEFAULT_WINDOW) });
    let got = 0;
    while (got < DEFAULT_WINDOW) got += (await child.c.readStdout(DEFAULT_WINDOW)).length;
    const credit = (await fake.next((f) => f.t === "credit")) as { n: number };
    expect(credit.n).toBe(DEFAULT_WINDOW);
    fake.send({ t: "data", ch: child.chOut, d: Buffer.alloc(DEFAULT_WINDOW) });
    got = 0;
    while (got < DEFAULT_WINDOW) got += (await child.c.readStdout(DEFAULT_WINDOW)).length;
    expect(client.state).toBe("connected");
  });

  it("data after eof, and credit beyond the window", async () => {
    {
      const { fake, client, failed } = await setup();
      const child = client.spawn({ argv: ["x"] });
      const req = (await fake.next((f) => f.t === "req")) as unknown as {
        id: number;
        args: { chOut: number };
      };
      fake.send({ t: "res", id: req.id, result: { pid: 5 } });
      await child;
      fake.send({ t: "eof", ch: req.args.chOut });
      fake.send({ t: "data", ch: req.args.chOut, d: Buffer.from("late") });
      // after eof the channel may be removed already (both halves closed): either code names the fault
      const err = await failed;
      expect(["SM_DATA_AFTER_EOF", "SM_UNKNOWN_CHANNEL"]).toContain(err.reason);
    }
    {
      const { fake, client, failed } = await setup(65536);
      const child = client.spawn({ argv: ["x"] });
      const req = (await fake.next((f) => f.t === "req")) as unknown as {
        id: number;
        args: { chIn: number };
      };
      fake.send({ t: "res", id: req.id, result: { pid: 6 } });
      await child;
      fake.send({ t: "credit", ch: req.args.chIn, n: 1 });
      await expectFatal(fake, client, failed, "SM_CREDIT_OVERFLOW");
    }
  });

  it("oversized frame, res for an unknown id, wrong field types, unknown frame type", async () => {
    const cases: Array<[Buffer | Frame, string]> = [
      [Buffer.from("00500001", "hex"), "SM_FRAME_TOO_LARGE"],
      [{ t: "res", id: 777, result: {} }, "SM_UNKNOWN_ID"],
      [encodeFrame({ t: "evt", ev: "exit", data: { pid: "1" } } as never), "SM_BAD_FRAME"],
      [encodeFrame({ t: "bogus" } as never), "SM_UNKNOWN_FRAME"],
      [Buffer.from("00000003a1f7f7", "hex"), "SM_BAD_CBOR"],
    ];
    for (const [bytes, reason] of cases) {
      const { fake, client, failed } = await setup();
      fake.send(bytes);
      await expectFatal(fake, client, failed, reason);
    }
  });

  it("a res that does not match the op's result schema", async () => {
    const { fake, client, failed } = await setup();
    const p = rejection(client.exec({ argv: ["x"] }));
    const req = (await fake.next((f) => f.t === "req")) as { id: number };
    fake.send({ t: "res", id: req.id, result: { exitCode: "0" } } as never);
    await expectFatal(fake, client, failed, "SM_BAD_FRAME");
    expect((await p).code).toBe("SM_AGENT_PROTOCOL");
  });

  it("a fatal from the agent tears the session down without a fatal reply", async () => {
    const { fake, client, failed } = await setup();
    fake.send({ t: "fatal", code: "SM_BAD_CBOR", message: "you sent junk" });
    const err = await failed;
    expect(client.state).toBe("failed");
    expect(err.reason).toBe("SM_BAD_CBOR");
    expect(err.remote).toBe(true);
    expect(err.message).toContain("you sent junk");
    await new Promise((r) => setTimeout(r, 20));
    expect(fake.frames.some((f) => f.t === "fatal")).toBe(false);
  });

  it("a process that exits at once: res, eofs and exit in one chunk still resolve wait()", async () => {
    const { fake, client } = await setup();
    const p = client.spawn({ argv: ["true"] });
    const req = (await fake.next((f) => f.t === "req")) as unknown as {
      id: number;
      args: { chOut: number; chErr: number; chIn: number };
    };
    fake.send(
      Buffer.concat([
        encodeFrame({ t: "res", id: req.id, result: { pid: 321 } }),
        encodeFrame({ t: "data", ch: req.args.chOut, d: Buffer.from("bye") }),
        encodeFrame({ t: "eof", ch: req.args.chOut }),
        encodeFrame({ t: "eof", ch: req.args.chErr }),
        encodeFrame({ t: "close", ch: req.args.chIn }),
        encodeFrame({
          t: "evt",
          ev: "exit",
          data: { pid: 321, exitCode: 0, signal: null, timedOut: false, peakRssKib: 1 },
        }),
      ]),
    );
    const child = await p;
    expect((await child.readStdout()).toString()).toBe("bye");
    expect(await child.readStdout()).toHaveLength(0);
    expect(await child.wait()).toEqual({ exitCode: 0, signal: null, timedOut: false, peakRssKib: 1 });
    // the host answered the agent's close on chIn
    expect(((await fake.next((f) => f.t === "close")) as { ch: number }).ch).toBe(req.args.chIn);
    expect(client.openChannels).toBe(0);
  });

  it("ignores credit/close for unknown channels and unknown events", async () => {
    const { fake, client } = await setup();
    fake.send({ t: "credit", ch: 1234, n: 5 });
    fake.send({ t: "close", ch: 1234 });
    fake.send({ t: "evt", ev: "from-the-future", data: { x: [1] } });
    const ping = client.ping();
    const req = (await fake.next((f) => f.t === "req")) as { id: number };
    fake.send({ t: "res", id: req.id, result: {} });
    await ping;
    expect(client.state).toBe("connected");
  });

  it("emits 'error' only when someone listens, never throws", async () => {
    const { fake, client } = await setup();
    const errors: AgentError[] = [];
    client.on("error", (e) => errors.push(e));
    fake.send({ t: "bogus" } as never);
    for (let i = 0; i < 50 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(errors[0]?.reason).toBe("SM_UNKNOWN_FRAME");
  });
});

describe("events", () => {
  it("ready, listening, workload-exit", async () => {
    const pair = await socketPair();
    const agent = new ReferenceAgent(pair.agent, { ready: false, workload: { argv: ["sleep", "30"] } });
    const client = await connectAgent(pair.host);
    try {
      expect(client.ready).toBe(false);
      const ready = new Promise((r) => client.once("ready", r));
      agent.markReady(42);
      expect(await ready).toEqual({ bootMs: 42 });
      expect(client.ready).toBe(true);
      const listening = new Promise((r) => client.once("listening", r));
      agent.event("listening", { port: 8080 });
      expect(await listening).toEqual({ port: 8080 });
      expect(client.listeningPort).toBe(8080);
      const wexit = new Promise((r) => client.once("workload-exit", r));
      await client.workloadSignal(15);
      expect(await wexit).toEqual({ exitCode: -1, signal: 15 });
      expect((await rejection(client.workloadSignal(15))).remoteCode).toBe("ESRCH");
    } finally {
      client.close();
      agent.close();
      await pair.close();
    }
  });
});
