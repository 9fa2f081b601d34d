export type { KvmBackendOptions } from "./backend";
export {
  createKvmBackend,
  hostTscKhz,
  microvmX86Profile,
  resolveKvmAccel,
  tcgTimerArgs,
  virtArm64KvmProfile,
  x86KernelFile,
} from "./backend";
export { PACKAGE_NAME } from "./package-name";
