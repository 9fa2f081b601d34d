// Our objects where the original's types are expected, and the original's values where ours are:
// everything an original program can hold or pass must fit (original/index.d.ts). Compiled against ours.
import * as Ours from "@supermachine/core";
import type * as Orig from "supermachine-original";

// Inputs: a value of the original's option type is accepted by our API.
declare const buildOptions: Orig.BuildOptions;
declare const poolOptions: Orig.PoolOptions;
declare const execOptions: Orig.ExecOptions;
declare const staged: Orig.StagedFileMode;
declare const winsize: Orig.Winsize;
declare const mount: Orig.MountSpec;
declare const volume: Orig.VolumeSpec;
declare const extra: Orig.ExtraFileSpec;
export const b: Ours.BuildOptions = buildOptions;
export const p: Ours.PoolOptions = poolOptions;
export const e: Ours.ExecOptions = execOptions;
export const s: Ours.StagedFileMode = staged;
export const w: Ours.Winsize = winsize;
export const m: Ours.MountSpec = mount;
export const v: Ours.VolumeSpec = volume;
export const x: Ours.ExtraFileSpec = extra;
// A warmup written for the original's WarmupVm is accepted, and ours is one.
declare const origWarmup: (vm: Orig.WarmupVm) => Promise<void>;
export const warm: Ours.BuildOptions = { ref: "a", warmup: origWarmup };
declare const ourWarmupVm: Ours.WarmupVm;
export const wv: Orig.WarmupVm = ourWarmupVm;

// Outputs: what our API returns can be held in the original's types.
export async function outputs(): Promise<void> {
  const image: Orig.Image = await Ours.Image.build(buildOptions);
  const fromSnap: Orig.Image = await Ours.Image.fromSnapshot("/snap");
  const ourImage = await Ours.Image.build({ ref: "a" });
  const pool: Orig.Pool = await ourImage.pool(null);
  const stats: Orig.PoolStats = pool.stats();
  const ourPool = await ourImage.pool(poolOptions);
  const vm: Orig.Vm = await ourPool.acquire();
  const ourVm = await ourPool.acquire();
  const out: Orig.ExecOutput = await ourVm.exec(execOptions);
  const child: Orig.ExecChild = await ourVm.spawn(execOptions);
  const ourChild = await ourVm.spawn({ argv: ["cat"] });
  const waited: Orig.ExecWaitResult = await ourChild.wait();
  const fwd: Orig.TcpForwarder = await ourVm.exposeTcp(0, 80);
  const snap: Orig.Image = await ourVm.snapshot("/d");
  console.log(image, fromSnap, stats, vm, out, child, waited, fwd, snap);
}

// The classes themselves: same statics, and instances of ours are instances of the original's shape.
export const ImageClass: typeof Orig.Image = Ours.Image;
export const PoolClass: typeof Orig.Pool = Ours.Pool;
export const VmClass: typeof Orig.Vm = Ours.Vm;
export const ExecChildClass: typeof Orig.ExecChild = Ours.ExecChild;
export const TcpForwarderClass: typeof Orig.TcpForwarder = Ours.TcpForwarder;
declare const ourInstances: [Ours.Image, Ours.Pool, Ours.Vm, Ours.ExecChild, Ours.TcpForwarder];
export const origInstances: [Orig.Image, Orig.Pool, Orig.Vm, Orig.ExecChild, Orig.TcpForwarder] =
  ourInstances;
