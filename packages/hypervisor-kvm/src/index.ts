export type { KvmBackendOptions } from "./backend";
export { createKvmBackend, x86KernelFile } from "./backend";
export { PACKAGE_NAME } from "./package-name";
