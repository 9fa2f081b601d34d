// A program written for the ORIGINAL @supermachine/core, typed by its published declarations. The
// compatibility test compiles it twice: against original/index.d.ts (it is a valid original program)
// and against our package (it must compile unchanged, with zero errors).
import {
  type BuildOptions,
  ExecChild,
  type ExecOptions,
  type ExecOutput,
  type ExecWaitResult,
  type ExtraFileSpec,
  Image,
  type MountSpec,
  Pool,
  type PoolOptions,
  type PoolStats,
  type StagedFileMode,
  TcpForwarder,
  Vm,
  type VolumeSpec,
  type WarmupVm,
  type Winsize,
} from "@supermachine/core";

// README quick start
export async function quickStart(ref: string): Promise<void> {
  const image = await Image.build({ ref });
  const pool = await image.pool();
  const vm = await pool.acquire();
  const out = await vm.exec({ argv: ["echo", "hello"] });
  console.log(out.stdout.toString());
  await vm.release();
}

// README pattern 1: untrusted Python on clean VMs from a warm pool
export async function pattern1(code: string): Promise<ExecOutput> {
  const image = await Image.build({ ref: "python:3.12-slim", memoryMib: 512 });
  const pool = await image.pool({ min: 8, max: 8 });
  const vm = await pool.acquire();
  try {
    return await vm.exec({
      argv: ["python3", "/tmp/main.py"],
      stageFiles: { "/tmp/main.py": Buffer.from(code) },
      timeoutMs: 10_000,
    });
  } finally {
    await vm.release();
  }
}

// Every option the original declares, with the original's (looser) types
const policy: string = process.env.PULL_POLICY ?? "missing";
const symlinks: string = "follow";
const extra: ExtraFileSpec = { hostPath: "./config.json", guestPath: "/etc/app/config.json" };
const mount: MountSpec = { hostPath: "/srv/data", guestTag: "workspace", symlinks };
const volume: VolumeSpec = { hostPath: "./cache.img", guestPath: "/cache", sizeMib: 2048 };
const warmup = async (vm: WarmupVm): Promise<void> => {
  await vm.exec({ argv: ["sh", "-c", "mkdir -p /work && mount -t virtiofs workspace /work"] });
};
export const buildOptions: BuildOptions = {
  ref: "node:20-slim",
  name: "app",
  memoryMib: 1024,
  vcpus: 2,
  pullPolicy: policy,
  guestPort: 8080,
  cmd: ["node", "server.js"],
  env: { NODE_ENV: "production" },
  listenerRequired: true,
  snapshotsDir: "/tmp/snaps",
  extraFiles: [extra],
  warmupTag: "v2",
  warmup,
  mounts: [mount],
  volumes: [volume],
  extraKernelArgs: ["quiet"],
};
export const poolOptions: PoolOptions = {
  min: 2,
  max: 4,
  acquireTimeoutMs: 0,
  idleTimeoutMs: 30_000,
  restoreOnRelease: false,
  memoryMib: 2048,
  vcpus: 2,
  restoreTimeoutMs: 30_000,
};
const staged: StagedFileMode = { guestPath: "/tmp/run.sh", bytes: Buffer.from("#!/bin/sh\n"), mode: null };
const winsize: Winsize = { cols: 0, rows: 0 };
export const execOptions: ExecOptions = {
  argv: ["sh", "/tmp/run.sh"],
  stageFiles: { "/tmp/in.txt": Buffer.from("x") },
  stageFilesMode: [staged, { guestPath: "/tmp/x", bytes: Buffer.alloc(1), mode: 0o755 }],
  timeoutMs: 5_000,
  env: { A: "1" },
  cwd: "/tmp",
  chain: ["cat", "/tmp/out.txt"],
  tty: true,
  winsize,
};

export async function everything(): Promise<void> {
  const image = await Image.build(buildOptions);
  const again: Image = await Image.fromSnapshot(image.snapshotPath);
  const sizes: number = again.memoryMib + again.vcpus;
  const pool: Pool = await image.pool(null);
  const other = await image.pool(undefined);
  const tuned = await image.pool(poolOptions);
  const stats: PoolStats = pool.stats();
  console.log(sizes, stats.alive, stats.inUse, stats.idle, stats.waiting, stats.min, stats.max);
  const vm = await tuned.acquire();
  if (!(vm instanceof Vm) || !(pool instanceof Pool) || !(image instanceof Image)) throw new Error("class");
  const out: ExecOutput = await vm.exec(execOptions);
  const code: number = out.exitCode;
  const child = await vm.spawn({ argv: ["cat"], tty: true, winsize: { cols: 120, rows: 40 } });
  if (!(child instanceof ExecChild)) throw new Error("class");
  await child.writeStdin(Buffer.from("hi\n"));
  await child.closeStdin();
  const chunk: Buffer = await child.readStdout(null);
  const err: Buffer = await child.readStderr(4096);
  const rest: Buffer = await child.readStdout();
  await child.resize(100, 30);
  await child.signal(15);
  const result: ExecWaitResult = await child.wait();
  const peak: number | undefined = result.peakRssKib;
  const timedOut: boolean = result.timedOut;
  console.log(code, chunk, err, rest, peak, timedOut);
  await vm.writeFile("/tmp/a", Buffer.from("a"));
  const a: Buffer = await vm.readFile("/tmp/a");
  const snap: Image = await vm.snapshot("/tmp/snap");
  await vm.workloadSignal(1);
  const fwd = await vm.exposeTcp(0, 8080);
  if (!(fwd instanceof TcpForwarder)) throw new Error("class");
  const addr: string = fwd.localAddr;
  await fwd.stop();
  const paths: string = vm.vsockPath + vm.execPath;
  console.log(a, snap, addr, paths);
  await vm.dispose();
  await vm.release();
  await Promise.all([pool.shutdown(), other.shutdown(), tuned.shutdown()]);
}

// Functions typed with the original's option types, results with its result types
export function runWith(vm: Vm, options: ExecOptions): Promise<ExecOutput> {
  return vm.exec(options);
}
export function poolOf(image: Image, options?: PoolOptions | null): Promise<Pool> {
  return image.pool(options);
}
