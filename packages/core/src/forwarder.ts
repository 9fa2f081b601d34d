/**
 * exposeTcp (and vm.vsockPath): a host listener on 127.0.0.1 (or a Unix socket) whose connections are forwarded, one agent channel each
 * (`tcp-connect`), to a port inside the guest. Backpressure comes from the channel's credit window.
 */
import { rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { SupermachineError } from "./errors";

export type GuestConnector = (guestPort: number) => Promise<Duplex>;

const INTERNAL_TOKEN = Symbol("TcpForwarder");
let newForwarder: (localAddr: string, stop: () => Promise<void>, closeAll: () => void) => TcpForwarder;
const closers = new WeakMap<TcpForwarder, () => void>();

/**
 * A host listener forwarding to a guest port, from `vm.exposeTcp()`. Objects come from exposeTcp only
 * (no public constructor). Like a `net.Server`, a running forwarder keeps the process alive until
 * `stop()` (or the VM's release).
 */
export class TcpForwarder {
  readonly #localAddr: string;
  readonly #stop: () => Promise<void>;

  private constructor(token: symbol, localAddr: string, stop: () => Promise<void>) {
    if (token !== INTERNAL_TOKEN)
      throw new SupermachineError(
        "SM_UNSUPPORTED",
        "TcpForwarder has no public constructor: use vm.exposeTcp().",
      );
    this.#localAddr = localAddr;
    this.#stop = stop;
  }

  static {
    newForwarder = (localAddr, stop, closeAll) => {
      const f = new TcpForwarder(INTERNAL_TOKEN, localAddr, stop);
      closers.set(f, closeAll);
      return f;
    };
  }

  /** "127.0.0.1:54321" */
  get localAddr(): string {
    return this.#localAddr;
  }

  /** Stop listening; idempotent; in-flight connections finish naturally. */
  stop(): Promise<void> {
    return this.#stop();
  }
}

/** Stop a forwarder and drop its connections at once (the VM is going away). */
export function closeForwarder(f: TcpForwarder): void {
  closers.get(f)?.();
}

/** The forwarding server (not listening yet) and the host sockets it holds. */
function forwardingServer(
  guestPort: number,
  connect: GuestConnector,
  unix: boolean,
): { server: Server; sockets: Set<Socket> } {
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    sock.pause();
    let guest: Duplex | undefined;
    const done = () => {
      sockets.delete(sock);
    };
    sock.on("close", done);
    sock.on("error", () => {
      guest?.destroy();
    });
    connect(guestPort).then(
      (g) => {
        guest = g;
        if (sock.destroyed) {
          g.destroy();
          return;
        }
        g.on("error", () => sock.destroy());
        sock.on("close", () => g.destroy());
        g.on("close", () => {
          if (!sock.writableEnded) sock.end();
        });
        sock.pipe(g);
        g.pipe(sock);
        sock.resume();
      },
      () => {
        // Connection refused in the guest → reset the host connection (a Unix socket has no RST).
        if (unix) sock.destroy();
        else sock.resetAndDestroy();
      },
    );
  });
  return { server, sockets };
}

function forwarder(server: Server, sockets: Set<Socket>, localAddr: string): TcpForwarder {
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= new Promise<void>((resolve) => server.close(() => resolve()));
    return stopped;
  };
  return newForwarder(localAddr, stop, () => {
    void stop();
    for (const s of sockets) s.destroy();
  });
}

export async function startForwarder(
  hostPort: number,
  guestPort: number,
  connect: GuestConnector,
): Promise<TcpForwarder> {
  const { server, sockets } = forwardingServer(guestPort, connect, false);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: hostPort }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : hostPort;
  return forwarder(server, sockets, `127.0.0.1:${port}`);
}

/**
 * vm.vsockPath: a Unix stream socket at `path` (an existing file there is replaced; Node removes the
 * socket file when the server closes), forwarding like startForwarder. Synchronous: binding a Unix path
 * happens inside listen(), so a client may connect as soon as this returns. The server does not keep
 * Node's event loop alive.
 */
export function startUnixForwarder(path: string, guestPort: number, connect: GuestConnector): TcpForwarder {
  const { server, sockets } = forwardingServer(guestPort, connect, true);
  rmSync(path, { force: true });
  server.on("error", () => undefined);
  server.listen(path);
  server.unref();
  return forwarder(server, sockets, path);
}
