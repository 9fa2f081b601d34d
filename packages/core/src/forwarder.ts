/**
 * exposeTcp (and vm.vsockPath): a host listener on 127.0.0.1 (or a Unix socket) whose connections are forwarded, one agent channel each
 * (`tcp-connect`), to a port inside the guest. Backpressure comes from the channel's credit window.
 */
import { rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { TcpForwarder } from "./types";

export type GuestConnector = (guestPort: number) => Promise<Duplex>;

type Forwarder = TcpForwarder & { closeAll(): void };

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

function forwarder(server: Server, sockets: Set<Socket>, localAddr: string): Forwarder {
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= new Promise<void>((resolve) => server.close(() => resolve()));
    return stopped;
  };
  return {
    localAddr,
    stop,
    closeAll() {
      void stop();
      for (const s of sockets) s.destroy();
    },
  };
}

export async function startForwarder(
  hostPort: number,
  guestPort: number,
  connect: GuestConnector,
): Promise<Forwarder> {
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
export function startUnixForwarder(path: string, guestPort: number, connect: GuestConnector): Forwarder {
  const { server, sockets } = forwardingServer(guestPort, connect, true);
  rmSync(path, { force: true });
  server.on("error", () => undefined);
  server.listen(path);
  server.unref();
  return forwarder(server, sockets, path);
}
