export type { RootfsErrorCode } from "./errors";
export { isRootfsError, RootfsError } from "./errors";
export { tarFileLayer, tarLayer } from "./layers";
export type { BuildRootfsOptions, BuildRootfsResult, RootfsProgress } from "./rootfs";
export { buildRootfs } from "./rootfs";
export type { ExtraFile, LayerEntry, LayerInput, TarHeader } from "./types";
