/**
 * exposeTcp: a host listener on 127.0.0.1 whose connections are forwarded, one agent channel each
 * (`tcp-connect`), to a port inside the guest. Backpressure comes from the channel's credit window.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { TcpForwarder } from "./types";

export type GuestConnector = (guestPort: number) => Promise<Duplex>;

export async function startForwarder(
  hostPort: number,
  guestPort: number,
  connect: GuestConnector,
): Promise<TcpForwarder & { closeAll(): void }> {
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
        // Connection refused in the guest → reset the host connection.
        sock.resetAndDestroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: hostPort }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : hostPort;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= new Promise<void>((resolve) => server.close(() => resolve()));
    return stopped;
  };
  return {
    localAddr: `127.0.0.1:${port}`,
    stop,
    closeAll() {
      void stop();
      for (const s of sockets) s.destroy();
    },
  };
}
