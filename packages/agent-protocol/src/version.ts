/** Version of this package, sent as `host` in the hello frame (SPEC §4.1). */
export const VERSION = "0.1.0";
