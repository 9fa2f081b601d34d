export type { HvfBackendOptions } from "./backend";
export { createHvfBackend, hvfUnavailableReason, resolveHvfAccel, virtHvfProfile } from "./backend";
export { PACKAGE_NAME } from "./package-name";
