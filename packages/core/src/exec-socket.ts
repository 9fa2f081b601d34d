/**
 * The JSON-lines exec server behind `vm.execPath`: one ExecOptions object per request line, one
 * `{exitCode, stdout, stderr, timedOut}` (base64 output) or `{error: {code, message}}` per reply line.
 */
import { existsSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { codeOf } from "./errors";
import type { ExecOptions, ExecOutput } from "./types";

/** JSON-lines exec server behind `vm.execPath` (see README "Escape hatches"). */
export function serveExecSocket(path: string, exec: (o: ExecOptions) => Promise<ExecOutput>): Server {
  if (existsSync(path)) rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = "";
    let chain = Promise.resolve();
    sock.setEncoding("utf8");
    sock.on("error", () => undefined);
    sock.on("data", (chunk: string) => {
      buf += chunk;
      if (buf.length > 8 * 1024 * 1024) {
        sock.destroy();
        return;
      }
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
        if (!line.trim()) continue;
        chain = chain.then(async () => {
          let reply: Record<string, unknown>;
          try {
            const req = JSON.parse(line) as Record<string, unknown>;
            const { stdin: _ignored, ...opts } = req;
            const out = await exec(opts as unknown as ExecOptions);
            reply = {
              exitCode: out.exitCode,
              stdout: out.stdout.toString("base64"),
              stderr: out.stderr.toString("base64"),
              timedOut: out.timedOut ?? false,
            };
          } catch (err) {
            reply = { error: { code: codeOf(err) ?? "EIO", message: (err as Error).message } };
          }
          if (!sock.destroyed) sock.write(`${JSON.stringify(reply)}\n`);
        });
      }
    });
  });
  server.listen(path);
  server.unref();
  return server;
}
