export type { KvmBackendOptions } from "./backend";
export {
  createKvmBackend,
  microvmX86Profile,
  resolveKvmAccel,
  virtArm64KvmProfile,
  x86KernelFile,
} from "./backend";
export { PACKAGE_NAME } from "./package-name";
