/**
 * TEST FAKE: a scripted QMP server on a Unix socket, for unit tests that need no QEMU.
 * It sends the greeting, accepts qmp_capabilities, and answers commands through `handler`.
 */
import { createServer, type Server, type Socket } from "node:net";

export type FakeReply = { return: unknown } | { error: { class: string; desc: string } } | "ignore";

export class FakeQmpServer {
  readonly commands: { execute: string; arguments?: unknown; id?: unknown }[] = [];
  private server: Server;
  private sockets = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly handler: (cmd: string, args: unknown) => FakeReply | Promise<FakeReply> = () => ({
      return: {},
    }),
  ) {
    this.server = createServer((s) => this.onConn(s));
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(this.path, () => r()));
  }

  private onConn(s: Socket): void {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => {});
    s.write(
      `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } })}\n`,
    );
    let buf = "";
    s.on("data", (d) => {
      buf += d.toString();
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
        const msg = JSON.parse(line);
        this.commands.push(msg);
        // Each command is answered independently (replies may be out of order, like QEMU's OOB/async cases).
        void (async () => {
          const reply =
            msg.execute === "qmp_capabilities"
              ? { return: {} }
              : await this.handler(msg.execute, msg.arguments);
          if (reply === "ignore" || s.destroyed) return;
          s.write(`${JSON.stringify({ ...reply, id: msg.id })}\n`);
        })();
      }
    });
  }

  /** Send an asynchronous event to every client. */
  event(event: string, data?: Record<string, unknown>): void {
    for (const s of this.sockets) {
      s.write(`${JSON.stringify({ event, data, timestamp: { seconds: 0, microseconds: 0 } })}\n`);
    }
  }

  /** Send a raw line to every client. */
  raw(line: string): void {
    for (const s of this.sockets) s.write(`${line}\n`);
  }

  dropClients(): void {
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    this.dropClients();
    return new Promise((r) => this.server.close(() => r()));
  }
}
