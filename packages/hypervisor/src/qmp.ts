/**
 * QMP client: JSON over a Unix socket (QEMU docs/interop/qmp-spec.rst). Reads the greeting, negotiates
 * capabilities, correlates commands and responses by `id`, and surfaces asynchronous events.
 */
import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import { QMP_COMMAND_TIMEOUT_MS, QMP_CONNECT_TIMEOUT_MS } from "./constants";
import { HypervisorError } from "./errors";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: string;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [];
}

/** A connected QMP session. Create with `QmpClient.connect(path)`. Emits "event" (QmpEvent) and "close". */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  private buf = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  private greetingResolve?: (g: unknown) => void;
  /** The `QMP` member of the greeting (version, capabilities). */
  greeting: Record<string, unknown> = {};

  /** The idle session stops keeping Node's event loop alive (a command in flight still does: its timer). */
  unref(): void {
    this.sock.unref();
  }

  private constructor(private readonly sock: Socket) {
    super();
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => this.onData(chunk));
    sock.on("error", () => {});
    sock.on("close", () => this.onClose());
  }

  /**
   * Connect to a QMP socket, retrying while it does not exist yet (QEMU creates it at startup), read the
   * greeting and run `qmp_capabilities`. `abort` cancels the retries (e.g. when the QEMU process exits).
   */
  static async connect(
    path: string,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? QMP_CONNECT_TIMEOUT_MS);
    let lastErr: unknown;
    while (Date.now() < deadline) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error("aborted");
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(path);
          s.once("connect", () => {
            s.removeAllListeners("error");
            res(s);
          });
          s.once("error", rej);
        });
        const client = new QmpClient(sock);
        await client.handshake(Math.max(100, deadline - Date.now()));
        return client;
      } catch (err) {
        lastErr = err;
        if (err instanceof HypervisorError) throw err;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    throw new HypervisorError(
      "SM_QMP",
      `could not connect to QMP socket ${path}: ${(lastErr as Error)?.message ?? "timeout"}`,
      {
        cause: lastErr,
      },
    );
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeting = await new Promise<unknown>((res, rej) => {
      const t = setTimeout(
        () => rej(new HypervisorError("SM_QMP", "timed out waiting for the QMP greeting")),
        timeoutMs,
      );
      this.greetingResolve = (g) => {
        clearTimeout(t);
        res(g);
      };
      this.once("close", () => {
        clearTimeout(t);
        rej(new HypervisorError("SM_QMP", "QMP socket closed before the greeting"));
      });
    });
    this.greeting = (greeting as { QMP?: Record<string, unknown> }).QMP ?? {};
    await this.execute("qmp_capabilities", undefined, timeoutMs);
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl = this.buf.indexOf("\n");
    while (nl >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
      nl = this.buf.indexOf("\n");
    }
    if (this.buf.length > 16 * 1024 * 1024) {
      // A QMP peer sending an unbounded line is broken: drop the session rather than buffer forever.
      this.sock.destroy();
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // not JSON: ignore (QEMU never does this)
    }
    if ("QMP" in msg) {
      this.greetingResolve?.(msg);
      this.greetingResolve = undefined;
      return;
    }
    if (typeof msg.event === "string") {
      this.emit("event", msg as unknown as QmpEvent);
      return;
    }
    const id = msg.id === undefined ? undefined : String(msg.id);
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ("error" in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(
        new HypervisorError(
          "SM_QMP",
          `QMP ${p.command} failed: ${e?.desc ?? "unknown error"} (${e?.class ?? "?"})`,
          {
            details: { qmpClass: e?.class, command: p.command },
          },
        ),
      );
    } else p.resolve(msg.return);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new HypervisorError("SM_QMP", `QMP connection closed while waiting for ${p.command}`));
    }
    this.pending.clear();
    this.emit("close");
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Send a command and resolve with its `return` value; rejects with SM_QMP on error, close or timeout. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = QMP_COMMAND_TIMEOUT_MS,
  ): Promise<T> {
    if (this.closed)
      return Promise.reject(new HypervisorError("SM_QMP", `QMP connection is closed (command ${command})`));
    const id = `sm-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new HypervisorError("SM_TIMEOUT", `QMP ${command} timed out after ${timeoutMs} ms`, {
            details: { command },
          }),
        );
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args) msg.arguments = args;
      this.sock.write(`${JSON.stringify(msg)}\n`);
    });
  }

  /** Wait for the next event named `name` (optionally matching `pred`). */
  waitForEvent(name: string, timeoutMs: number, pred?: (e: QmpEvent) => boolean): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || (pred && !pred(e))) return;
        cleanup();
        resolve(e);
      };
      const onClose = () => {
        cleanup();
        reject(new HypervisorError("SM_QMP", `QMP connection closed while waiting for event ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new HypervisorError("SM_TIMEOUT", `timed out after ${timeoutMs} ms waiting for QMP event ${name}`),
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off("event", onEvent);
        this.off("close", onClose);
      };
      this.on("event", onEvent);
      this.on("close", onClose);
    });
  }

  /** Close the connection (pending commands reject). */
  close(): void {
    this.sock.destroy();
  }
}
