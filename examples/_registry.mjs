// Where the examples find their images: $SUPERMACHINE_REGISTRY (host:port), else the local test registry
// that `npm run setup` started (its state file in the cache). Images: busybox, httpd (see scripts/setup).
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export function registry() {
  if (process.env.SUPERMACHINE_REGISTRY) return process.env.SUPERMACHINE_REGISTRY;
  const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "supermachine");
  try {
    return JSON.parse(readFileSync(join(cache, "registry", "state.json"), "utf8")).host;
  } catch {
    throw new Error(
      "No registry: run `npm run setup` (starts the local test registry) or set SUPERMACHINE_REGISTRY=host:port",
    );
  }
}

/** Run `main` when the file is executed directly (`node examples/x.mjs`). */
export function runIfMain(meta, main) {
  if (process.argv[1] && new URL(meta.url).pathname === process.argv[1]) {
    main().then(
      () => process.exit(0),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  }
}
