export type { ReaddirPlusMode, ShareServerOptions, ShareServerStats, SymlinkPolicy } from "./server";
export { ShareServer, validateName } from "./server";
