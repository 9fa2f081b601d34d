/**
 * Where a registry-style image reference is read from, by environment:
 * - `SUPERMACHINE_IMAGE_SOURCE=docker`: a Docker-Engine-API daemon (docker or podman; DOCKER_HOST honoured);
 * - otherwise its registry — Docker Hub names at Docker Hub's API, or at a mirror from
 *   `SUPERMACHINE_REGISTRY_MIRRORS`. The image keeps its own name either way.
 * An unknown SUPERMACHINE_IMAGE_SOURCE or a malformed mirror list throws `SM_OCI_OPTIONS` before any work.
 * Shared by `Image.build` (runtime.ts) and the CLI's `pull`.
 */
import {
  imageSourceFromEnv,
  loadFromDaemon,
  type Image as OciImage,
  type Platform,
  type ProgressListener,
  type PullPolicy,
  pull,
} from "@supermachine/oci";

export interface EnvSourceOptions {
  platform?: string | Platform;
  pullPolicy?: PullPolicy;
  onProgress?: ProgressListener;
}

export async function loadFromEnvSource(ref: string, options: EnvSourceOptions = {}): Promise<OciImage> {
  if (imageSourceFromEnv() === "docker") return loadFromDaemon(ref, options);
  return pull(ref, options);
}
