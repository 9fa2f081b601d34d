/**
 * @supermachine/base: the primitives every supermachine layer needs, with one home each. No VM, OCI or
 * protocol knowledge lives here, and no runtime dependencies.
 */
export type { SupermachineErrorBaseOptions } from "./errors";
export { codeGuard, SupermachineErrorBase } from "./errors";
export type { GuestArch } from "./paths";
export { cacheRoot, hostArch } from "./paths";
export { MAX_TIMER_MS } from "./timers";
