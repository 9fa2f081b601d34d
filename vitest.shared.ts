import { fileURLToPath } from "node:url";

/** Resolve every @supermachine/* import to its TypeScript source, so tests never need a build first. */
export const sourceAlias = [
  {
    find: /^@supermachine\/([a-z-]+)\/testing$/,
    replacement: fileURLToPath(new URL("./packages/$1/src/testing/index.ts", import.meta.url)),
  },
  {
    find: /^@supermachine\/([a-z-]+)$/,
    replacement: fileURLToPath(new URL("./packages/$1/src/index.ts", import.meta.url)),
  },
];
