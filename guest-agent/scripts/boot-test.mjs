#!/usr/bin/env node
// Smoke test: boot the agent as PID 1 on a busybox squashfs under QEMU (TCG) and drive
// the protocol from the host. Usage: node guest-agent/scripts/boot-test.mjs [--keep]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { MiniClient } from "./lib/mini-client.mjs";
import { buildAgent, buildBusyboxSquashfs, buildInitramfs, connectUnix, defaultConfig, kernelBundle, startQemu } from "./lib/image.mjs";

const keep = process.argv.includes("--keep");
// --arch aarch64 needs an arm64 busybox-static: SM_BUSYBOX=<path> (apt-get download busybox-static:arm64; dpkg -x)
const arch = process.argv.includes("--arch") ? process.argv[process.argv.indexOf("--arch") + 1] : "x86_64";
const work = fs.mkdtempSync(path.join(os.tmpdir(), "sm-agent-boot-"));
const kb = kernelBundle(arch);
const agent = buildAgent(arch);
const rootfs = buildBusyboxSquashfs(work, { busybox: process.env.SM_BUSYBOX || "/bin/busybox" });
const initrd = buildInitramfs(work, { agent, modulesDir: kb.modules, config: defaultConfig() });
const t0 = Date.now();
const vm = startQemu(work, { kernel: kb.kernel, initrd, rootfs, arch });
console.log(`# ${arch}, agent ${fs.statSync(agent).size} bytes`);
let failures = 0;
const check = (name, ok, detail = "") => {
  console.log(`${ok ? "ok" : "not ok"} - ${name}${detail ? ` # ${detail}` : ""}`);
  if (!ok) failures++;
};
try {
  const sock = await connectUnix(vm.sock);
  const c = new MiniClient(sock);
  const hello = await c.handshake(Number(process.env.SM_TEST_HELLO_MS || 180000));
  check("hello answer", hello.ready === true, `wall ${Date.now() - t0} ms, guest bootMs ${hello.bootMs}, agent ${hello.agent}`);
  let t = process.hrtime.bigint();
  const N = 200;
  for (let i = 0; i < N; i++) await c.req("ping");
  check("ping", true, `${(Number(process.hrtime.bigint() - t) / 1e3 / N).toFixed(0)} µs avg round trip`);
  const e1 = await c.exec(["echo", "hello"]);
  check("exec echo", e1.exitCode === 0 && e1.stdout === "hello\n", JSON.stringify(e1.stdout));
  const e2 = await c.exec(["sh", "-c", "echo err >&2; exit 3"]);
  check("exec exit code", e2.exitCode === 3 && e2.stderr === "err\n", `exit ${e2.exitCode}`);
  const e3 = await c.exec(["sleep", "30"], { timeoutMs: 500 });
  check("exec timeout", e3.exitCode === -1 && e3.timedOut === true && e3.signal === 9, JSON.stringify({ ...e3, stdout: undefined, stderr: undefined }));
  const e4 = await c.exec(["no-such-binary"]);
  check("missing binary", e4.exitCode === 127 && e4.stderr.includes("command not found"), e4.stderr.trim());
  await c.req("write-file", { path: "/tmp/a/b/c.txt", data: Buffer.from("content"), mode: 0o600 });
  const rf = await c.req("read-file", { path: "/tmp/a/b/c.txt" });
  check("write/read file", Buffer.from(rf.data).toString() === "content" && rf.mode === 0o600, `mode ${rf.mode.toString(8)}`);
  const big = await c.exec(["sh", "-c", "head -c 3000000 /dev/zero"]);
  check("3 MB stdout", big.stdout.length === 3000000, `${big.stdout.length} bytes`);
  const id = await c.exec(["id"], { user: "app" });
  check("user app", id.stdout.includes("uid=1000(app)") && id.stdout.includes("10(wheel)"), id.stdout.trim());
  const rss = await c.exec(["sh", "-c", "grep VmRSS /proc/1/status"]);
  check("agent RSS", rss.exitCode === 0, rss.stdout.trim());
  const st = await c.req("stats");
  check("stats", st.memTotalKib > 0, JSON.stringify(st));
  const zz = await c.exec(["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; sleep 0.5; ps -o stat,pid,comm | grep -c '^Z' || true"]);
  check("no zombies", zz.stdout.trim() === "0", zz.stdout.trim());
  const mounts = await c.exec(["cat", "/proc/mounts"]);
  const rootLine = mounts.stdout.split("\n").find((l) => / \/ /.test(l)) ?? "";
  check("overlay root", rootLine.startsWith("overlay / overlay"), rootLine);
  // hostile input: a zero-length frame is a violation → fatal, then a new hello starts over
  sock.write(Buffer.from([0, 0, 0, 0, 0xff, 0xff]));
  await new Promise((r) => setTimeout(r, 2000));
  const fatal = c.fatals?.[0];
  await c.rehello(60000);
  const again = await c.exec(["echo", "still here"]);
  check("violation → fatal, resync, new session", fatal?.code === "SM_FRAME_EMPTY" && again.stdout === "still here\n", fatal ? `${fatal.code}: ${fatal.message}` : "no fatal");
  // garbage CBOR inside a valid length: SM_BAD_CBOR
  sock.write(Buffer.from([0, 0, 0, 3, 0xbf, 0x61, 0x74]));
  await new Promise((r) => setTimeout(r, 2000));
  await c.rehello(60000);
  check("indefinite map → SM_BAD_CBOR", c.fatals?.[1]?.code === "SM_BAD_CBOR", c.fatals?.[1]?.code ?? "none");
  await c.req("shutdown");
  const r = await Promise.race([vm.exited, new Promise((res) => setTimeout(() => res(null), 20000))]);
  check("shutdown powers off", r !== null, r ? `qemu exit ${r.code}` : "still running");
} catch (e) {
  check("boot test", false, e.stack);
} finally {
  vm.kill();
  await vm.exited;
  fs.rmSync(vm.mem, { force: true });
  if (failures || keep) console.log(`# console: ${fs.existsSync(vm.consoleLog) ? fs.readFileSync(vm.consoleLog, "utf8").slice(-3000) : "-"}`);
  if (!keep) fs.rmSync(work, { recursive: true, force: true });
  else console.log(`# kept ${work}`);
  process.exit(failures ? 1 : 0);
}
