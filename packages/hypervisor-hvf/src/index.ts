export type { HvfBackendOptions } from "./backend";
export { createHvfBackend, resolveHvfAccel, virtHvfProfile } from "./backend";
export { PACKAGE_NAME } from "./package-name";
