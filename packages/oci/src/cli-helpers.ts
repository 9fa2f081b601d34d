import type { Image } from "./image";
import type { PullOptions } from "./pull";
import { loadFrom, parseLocation } from "./transport";

export { copy } from "./transport";

/** `push` takes a layout dir (`DIR[:tag]`, `oci:` optional) or any other local location. */
export function importLayoutOrArchive(arg: string, options: PullOptions): Promise<Image> {
  const loc = /^(oci|oci-archive|docker-archive):/.test(arg)
    ? parseLocation(arg)
    : parseLocation(`oci:${arg}`);
  return loadFrom(loc, options);
}
