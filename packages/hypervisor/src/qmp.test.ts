import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeQmpServer } from "./__fixtures__/fake-qmp-server";
import { QmpClient, type QmpEvent } from "./qmp";

describe("QmpClient (against a fake QMP server)", () => {
  let dir: string;
  let server: FakeQmpServer | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "sm-qmp-"));
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("negotiates capabilities and correlates out-of-order replies by id", async () => {
    const slow: ((v: unknown) => void)[] = [];
    server = new FakeQmpServer(join(dir, "q.sock"), (cmd) => {
      if (cmd === "slow") return new Promise((r) => slow.push(() => r({ return: "slow-result" })));
      return { return: { status: cmd } };
    });
    await server.listen();
    const qmp = await QmpClient.connect(join(dir, "q.sock"));
    expect(qmp.greeting).toMatchObject({ version: { qemu: { major: 7 } } });
    expect(server.commands[0]?.execute).toBe("qmp_capabilities");
    const a = qmp.execute("slow");
    const b = qmp.execute<{ status: string }>("query-status");
    await expect(b).resolves.toEqual({ status: "query-status" });
    slow[0]?.(undefined);
    await expect(a).resolves.toBe("slow-result");
    qmp.close();
  });

  it("retries until the socket appears (QEMU creates it after start)", async () => {
    const path = join(dir, "late.sock");
    setTimeout(() => {
      server = new FakeQmpServer(path);
      void server.listen();
    }, 150);
    const qmp = await QmpClient.connect(path, { timeoutMs: 5000 });
    await expect(qmp.execute("cont")).resolves.toEqual({});
    qmp.close();
  });

  it("rejects with SM_QMP carrying the QEMU error class and description", async () => {
    server = new FakeQmpServer(join(dir, "q.sock"), () => ({
      error: { class: "GenericError", desc: "no such thing" },
    }));
    await server.listen();
    const qmp = await QmpClient.connect(join(dir, "q.sock"));
    await expect(qmp.execute("bogus")).rejects.toMatchObject({
      code: "SM_QMP",
      message: expect.stringContaining("no such thing"),
    });
    qmp.close();
  });

  it("times out a command with SM_TIMEOUT and keeps working afterwards", async () => {
    server = new FakeQmpServer(join(dir, "q.sock"), (cmd) => (cmd === "hang" ? "ignore" : { return: 1 }));
    await server.listen();
    const qmp = await QmpClient.connect(join(dir, "q.sock"));
    await expect(qmp.execute("hang", undefined, 100)).rejects.toMatchObject({ code: "SM_TIMEOUT" });
    await expect(qmp.execute("ok")).resolves.toBe(1);
    qmp.close();
  });

  it("delivers SHUTDOWN / GUEST_PANICKED events and ignores non-JSON lines", async () => {
    server = new FakeQmpServer(join(dir, "q.sock"));
    await server.listen();
    const qmp = await QmpClient.connect(join(dir, "q.sock"));
    const seen: QmpEvent[] = [];
    qmp.on("event", (e) => seen.push(e));
    const waited = qmp.waitForEvent("GUEST_PANICKED", 2000);
    server.raw("this is not json");
    server.event("STOP");
    server.event("SHUTDOWN", { guest: true, reason: "guest-reset" });
    server.event("GUEST_PANICKED", { action: "pause" });
    await expect(waited).resolves.toMatchObject({ event: "GUEST_PANICKED" });
    expect(seen.map((e) => e.event)).toEqual(["STOP", "SHUTDOWN", "GUEST_PANICKED"]);
    expect(seen[1]?.data).toEqual({ guest: true, reason: "guest-reset" });
    qmp.close();
  });

  it("rejects pending commands when the connection closes", async () => {
    server = new FakeQmpServer(join(dir, "q.sock"), () => "ignore");
    await server.listen();
    const qmp = await QmpClient.connect(join(dir, "q.sock"));
    const closed = new Promise<void>((r) => qmp.once("close", () => r()));
    const p = qmp.execute("migrate");
    server.dropClients();
    await expect(p).rejects.toMatchObject({ code: "SM_QMP" });
    await closed;
    expect(qmp.isClosed).toBe(true);
    await expect(qmp.execute("cont")).rejects.toMatchObject({ code: "SM_QMP" });
  });

  it("fails to connect with SM_QMP when nothing listens", async () => {
    await expect(QmpClient.connect(join(dir, "none.sock"), { timeoutMs: 200 })).rejects.toMatchObject({
      code: "SM_QMP",
    });
  });
});
