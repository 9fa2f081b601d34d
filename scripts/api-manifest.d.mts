/** Types for scripts/api-manifest.mjs (used by each package's src/exports.test.ts). */

/** `node scripts/api-manifest.mjs --write`: the command that regenerates every manifest. */
export declare const UPDATE_COMMAND: string;
/** Directory names under packages/ whose package.json has `exports`. */
export declare function packageNames(): string[];
/** The code entry points of packages/<dir>: export key, source file and manifest path (relative to the package). */
export declare function entryPoints(dir: string): { entry: string; file: string; manifest: string }[];
/** Generated manifests: "packages/<dir>/api/<x>.api.md" → text. */
export declare function generate(dirs?: string[]): Map<string, string>;
/** "" when every manifest of these packages is current; otherwise diffs and the command to update. */
export declare function check(dirs?: string[]): string;
/** `check([dir])`. */
export declare function checkPackage(dir: string): string;
/** The names the committed manifest of one entry says exist at runtime, sorted. */
export declare function runtimeNames(dir: string, entry?: string): string[];
/** Regenerate the manifests of these packages; returns what was written or removed. */
export declare function write(dirs?: string[]): string[];
/** Line diff of two texts, "" when equal. */
export declare function diffLines(a: string, b: string, labelA?: string, labelB?: string): string;
