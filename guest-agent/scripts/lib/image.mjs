// Hand-built guest artifacts for the agent's own smoke test and bench: a busybox
// squashfs, an initramfs (cpio newc) with the agent as /init, and a QEMU launcher.
// The product path builds these with @supermachine/rootfs and @supermachine/hypervisor;
// this file exists so the agent can be proved without them.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Encoder } from "cbor-x";

const enc = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false, variableMapSize: true });
const here = path.dirname(new URL(import.meta.url).pathname);
export const agentDir = path.resolve(here, "../..");

export const cacheRoot = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "supermachine");

export function kernelBundle(arch = "x86_64") {
  const dir = path.join(cacheRoot, "kernels");
  const entries = fs.existsSync(dir) ? fs.readdirSync(dir).filter((d) => d.endsWith(`-${arch}`)).sort() : [];
  if (!entries.length) throw new Error(`no kernel bundle for ${arch} under ${dir} (run npm run setup)`);
  const b = path.join(dir, entries[entries.length - 1]);
  const vmlinux = process.env.SM_VMLINUX || path.join(b, arch === "x86_64" ? "vmlinux" : "vmlinuz");
  if (!fs.existsSync(vmlinux))
    throw new Error(`${vmlinux} missing: x86_64 needs the ELF vmlinux (derived by @supermachine/hypervisor, or set SM_VMLINUX)`);
  return { dir: b, kernel: vmlinux, modules: path.join(b, "modules") };
}

export function buildAgent(arch = "x86_64") {
  execFileSync("make", ["-s", "-C", agentDir, `ARCH=${arch}`], { stdio: ["ignore", "ignore", "inherit"] });
  return path.join(agentDir, "out", arch, "sm-agent");
}

// busybox: the static busybox to install (default the host's; for aarch64 guests pass an
// arm64 busybox-static, e.g. from `apt-get download busybox-static:arm64`). The applet list
// is taken from the host busybox (same Debian version).
export function buildBusyboxSquashfs(work, { busybox = "/bin/busybox" } = {}) {
  const root = path.join(work, "root");
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app", "www"])
    fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.copyFileSync(busybox, path.join(root, "bin/busybox"));
  fs.chmodSync(path.join(root, "bin/busybox"), 0o755);
  const applets = execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const a of applets) if (a !== "busybox") fs.symlinkSync("busybox", path.join(root, "bin", a));
  fs.writeFileSync(path.join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n");
  fs.writeFileSync(path.join(root, "etc/group"), "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n");
  fs.writeFileSync(path.join(root, "www/index.html"), "hello from sm\n");
  fs.chmodSync(path.join(root, "tmp"), 0o1777);
  fs.chownSync(path.join(root, "home/app"), 1000, 1000);
  const out = path.join(work, "rootfs.sqfs");
  execFileSync("mksquashfs", [root, out, "-noappend", "-quiet", "-no-progress", "-all-root"], { stdio: "ignore" });
  return out;
}

function findModule(modulesDir, name) {
  const want = new Set([`${name}.ko`, `${name.replace(/_/g, "-")}.ko`]);
  const stack = [modulesDir];
  while (stack.length) {
    const d = stack.pop();
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (want.has(e.name)) return p;
    }
  }
  throw new Error(`module ${name} not found under ${modulesDir}`);
}

export const DEFAULT_MODULES = [
  "virtio_ring", "virtio", "virtio_mmio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
  "virtio_blk", "virtio_console", "virtio-rng", "squashfs", "overlay",
];

export function buildInitramfs(work, { agent, modulesDir, modules = DEFAULT_MODULES, config }) {
  const st = path.join(work, "initramfs");
  fs.rmSync(st, { recursive: true, force: true });
  for (const d of ["dev", "proc", "sys", "newroot", "sm/modules"]) fs.mkdirSync(path.join(st, d), { recursive: true });
  fs.copyFileSync(agent, path.join(st, "init"));
  fs.chmodSync(path.join(st, "init"), 0o755);
  const order = [];
  for (const m of modules) {
    const src = findModule(modulesDir, m);
    fs.copyFileSync(src, path.join(st, "sm/modules", path.basename(src)));
    order.push(path.basename(src));
  }
  fs.writeFileSync(path.join(st, "sm/modules.order"), `${order.join("\n")}\n`);
  fs.writeFileSync(path.join(st, "sm/config.cbor"), enc.encode(config));
  const out = path.join(work, "initrd.cpio");
  const list = execFileSync("find", ["."], { cwd: st, encoding: "utf8" });
  execFileSync("cpio", ["-o", "-H", "newc", "--quiet", "-R", "0:0", "-O", out], { cwd: st, input: list });
  return out;
}

export function defaultConfig(extra = {}) {
  return {
    v: 1,
    hostname: "sm-test",
    rootDevice: "/dev/vda",
    tmpfsMib: 64,
    workload: null,
    startWorkload: "never",
    guestPort: 0,
    listenerRequired: false,
    volumes: [],
    network: null,
    ...extra,
  };
}

// Boot (or restore, with `incoming`) a microvm the way the hypervisor package runs one (microvm, TCG).
// TCG microvm: the MADT has no IRQ0 override, so the guest cannot calibrate the TSC and
// stalls in early boot; giving it the TSC frequency and lpj skips both calibrations
// (same finding as @supermachine/hypervisor-kvm's tcgTimerArgs).
function tcgTimerArgs() {
  let khz = 2_000_000;
  try {
    const info = fs.readFileSync("/proc/cpuinfo", "utf8");
    const ghz = /model name\s*:.*@\s*([\d.]+)\s*GHz/i.exec(info);
    const mhz = /cpu MHz\s*:\s*([\d.]+)/i.exec(info);
    if (ghz) khz = Math.round(Number(ghz[1]) * 1_000_000);
    else if (mhz) khz = Math.round(Number(mhz[1]) * 1000);
  } catch {}
  return `tsc_early_khz=${khz} lpj=${Math.round((khz * 1000) / 250)}`;
}

// machine: "microvm" (virtio-mmio described by ACPI) or "q35" (virtio-pci).
export function startQemu(work, { kernel, initrd, rootfs, name = "vm", memMib = 256, memPath, incoming = false, share = true, arch = "x86_64", machine = arch === "aarch64" ? "virt" : process.env.SM_TEST_MACHINE || "microvm" }) {
  const dev = (d) => (machine === "q35" ? `${d}-pci` : `${d}-device`);
  const arm = arch === "aarch64";
  const sock = path.join(work, `${name}.agent.sock`);
  const qmp = path.join(work, `${name}.qmp.sock`);
  const consoleLog = path.join(work, `${name}.console.log`);
  for (const f of [sock, qmp]) fs.rmSync(f, { force: true });
  const mem = memPath || `/dev/shm/sm-agent-test-${process.pid}-${name}.mem`;
  const args = [
    "--pdeathsig", "KILL", "--",
    arm ? "qemu-system-aarch64" : "qemu-system-x86_64",
    "-M", arm ? "virt,gic-version=max" : machine === "microvm" ? "microvm,rtc=off" : "q35",
    "-accel", "tcg,thread=multi", "-cpu", "max",
    "-m", String(memMib), "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
    "-kernel", kernel, "-initrd", initrd,
    "-append", `console=${arm ? "ttyAMA0" : "ttyS0"} ${process.env.SM_TEST_VERBOSE ? "" : "quiet "}reboot=t panic=-1 rdinit=/init ${machine === "microvm" ? tcgTimerArgs() : ""} ${process.env.SM_TEST_APPEND || ""}`.trim(),
    "-object", `memory-backend-file,id=mem,size=${memMib}M,mem-path=${mem},share=${share ? "on" : "off"}`,
    "-machine", "memory-backend=mem",
    "-drive", `id=root,file=${rootfs},format=raw,if=none,read-only=on`, "-device", `${dev("virtio-blk")},drive=root`,
    "-device", dev("virtio-rng"),
    "-device", dev("virtio-serial"), "-chardev", `socket,id=ag,path=${sock},server=on,wait=off`,
    "-device", "virtserialport,chardev=ag,name=agent",
    "-qmp", `unix:${qmp},server=on,wait=off`, "-serial", `file:${consoleLog}`,
  ];
  if (incoming) args.push("-incoming", "defer");
  const proc = spawn("setpriv", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise((r) => proc.on("exit", (code, sig) => r({ code, sig, stderr })));
  // no orphans: QEMU dies with us (setpriv --pdeathsig); the RAM file must go too
  const cleanup = () => {
    proc.kill("SIGKILL");
    fs.rmSync(mem, { force: true });
  };
  process.once("exit", cleanup);
  for (const sig of ["SIGINT", "SIGTERM"])
    process.once(sig, () => {
      cleanup();
      process.exit(130);
    });
  exited.then(() => fs.rmSync(mem, { force: true }));
  return { proc, sock, qmp, consoleLog, mem, exited, kill: () => proc.kill("SIGKILL") };
}

export async function connectUnix(file, timeoutMs = 10000) {
  const net = await import("node:net");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise((resolve, reject) => {
        const s = net.createConnection(file);
        s.once("connect", () => resolve(s));
        s.once("error", reject);
      });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
