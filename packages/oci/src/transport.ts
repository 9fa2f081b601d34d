import { loadFromDaemon } from "./daemon";
import { OciError } from "./errors";
import type { Image } from "./image";
import { importArchive, importLayout, writeLayout } from "./local";
import { type PullOptions, pull } from "./pull";
import { type PushOptions, push } from "./push";

/** Where an image lives, in skopeo's transport syntax. */
export type ImageLocation =
  | { transport: "docker"; reference: string }
  | { transport: "docker-daemon"; reference: string }
  | { transport: "oci"; path: string; tag: string | undefined }
  | { transport: "oci-archive"; path: string; tag: string | undefined }
  | { transport: "docker-archive"; path: string; tag: string | undefined };

function splitPathTag(rest: string): { path: string; tag: string | undefined } {
  const i = rest.lastIndexOf(":");
  if (i > 0 && !rest.slice(i + 1).includes("/"))
    return { path: rest.slice(0, i), tag: rest.slice(i + 1) || undefined };
  return { path: rest, tag: undefined };
}

/**
 * Parse `docker://REF`, `docker-daemon:REF`, `oci:DIR[:tag]`, `oci-archive:FILE[:tag]`,
 * `docker-archive:FILE[:tag]`; anything else is a registry reference.
 */
export function parseLocation(s: string): ImageLocation {
  if (s.startsWith("docker://")) return { transport: "docker", reference: s.slice(9) };
  if (s.startsWith("docker-daemon:")) return { transport: "docker-daemon", reference: s.slice(14) };
  for (const t of ["oci-archive", "docker-archive", "oci"] as const) {
    if (s.startsWith(`${t}:`)) {
      const { path, tag } = splitPathTag(s.slice(t.length + 1));
      if (!path) throw new OciError("SM_INVALID_REFERENCE", `"${s}" names no path`);
      return { transport: t, path, tag };
    }
  }
  return { transport: "docker", reference: s };
}

/** Load an image from any location into the store (pull, or import a layout/archive). */
export async function loadFrom(location: string | ImageLocation, options: PullOptions = {}): Promise<Image> {
  const loc = typeof location === "string" ? parseLocation(location) : location;
  const local = {
    ...(options.store !== undefined ? { store: options.store } : {}),
    ...(options.platform !== undefined ? { platform: options.platform } : {}),
    ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
    ...("tag" in loc && loc.tag !== undefined ? { tag: loc.tag } : {}),
  };
  switch (loc.transport) {
    case "docker":
      return pull(loc.reference, options);
    case "docker-daemon":
      return loadFromDaemon(loc.reference, {
        ...(options.store !== undefined ? { store: options.store } : {}),
        ...(options.platform !== undefined ? { platform: options.platform } : {}),
        ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
      });
    case "oci":
      return importLayout(loc.path, local);
    case "oci-archive":
    case "docker-archive":
      return importArchive(loc.path, local);
  }
}

/** Copy an image between locations: registry ↔ OCI layout (archives are sources only). */
export async function copy(
  source: string | ImageLocation,
  destination: string | ImageLocation,
  options: PullOptions & PushOptions = {},
): Promise<{ image: Image; digest: string }> {
  const dst = typeof destination === "string" ? parseLocation(destination) : destination;
  if (
    dst.transport === "oci-archive" ||
    dst.transport === "docker-archive" ||
    dst.transport === "docker-daemon"
  ) {
    throw new OciError(
      "SM_OCI_OPTIONS",
      `writing ${dst.transport} is not supported; write an oci: layout instead`,
    );
  }
  const image = await loadFrom(source, {
    allPlatforms: true,
    ...options,
    pullPolicy: options.pullPolicy ?? "always",
  });
  if (dst.transport === "oci") {
    const d = await writeLayout(image, dst.path, dst.tag !== undefined ? { tag: dst.tag } : {});
    return { image, digest: d.digest };
  }
  const r = await push(image, dst.reference, options);
  return { image, digest: r.digest };
}
