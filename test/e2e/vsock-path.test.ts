/**
 * vm.vsockPath on a real VM: a host Unix socket that reaches the workload's listener on guestPort (the
 * original's meaning); vm.agentSocketPath is the agent transport.
 */
import { existsSync } from "node:fs";
import { request } from "node:http";
import { dirname } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Image, type Pool } from "../../packages/core/src/index";
import { type FixtureRefs, fixtureRefs, sharedSnapshotsDir } from "./_shared";

let refs: FixtureRefs;
let shared: string;
const pools: Pool[] = [];

beforeAll(async () => {
  shared = sharedSnapshotsDir();
  refs = await fixtureRefs();
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.shutdown()));
});

function httpGet(socketPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: "/", headers: { Connection: "close" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("vm.vsockPath on a real VM", () => {
  it("an HTTP request on vsockPath reaches the workload's listener (httpd on guestPort 80); the socket goes away on release", async () => {
    const image = await Image.build({
      ref: refs.httpd,
      snapshotsDir: shared,
      listenerRequired: true,
      guestPort: 80,
    });
    const pool = await image.pool({ min: 0, max: 1 });
    pools.push(pool);
    const vm = await pool.acquire();
    const path = vm.vsockPath;
    expect(path).not.toBe(vm.agentSocketPath);
    expect(dirname(path)).toBe(dirname(vm.agentSocketPath)); // the VM's runtime dir
    // The page the guest serves, as exec sees it.
    const page = await vm.exec({ argv: ["wget", "-q", "-O", "-", "http://127.0.0.1:80/"] });
    expect(page.exitCode).toBe(0);
    const [a, b] = await Promise.all([httpGet(path), httpGet(path)]);
    expect(a.status).toBe(200);
    expect(a.body).toBe(page.stdout.toString());
    expect(b.body).toBe(a.body);
    await vm.release();
    expect(existsSync(path)).toBe(false);
    await pool.shutdown();
  });
});
