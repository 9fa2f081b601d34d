export type { HvfBackendOptions } from "./backend";
export { createHvfBackend } from "./backend";
export { PACKAGE_NAME } from "./package-name";
