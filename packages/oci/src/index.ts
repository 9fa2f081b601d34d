export type { Credentials, CredentialsInput } from "./auth";
export { credentialsFromDockerConfig } from "./auth";
export { parseImageConfig, runtimeConfig } from "./config";
export type { DaemonEndpoint, DaemonOptions, ImageSourceKind } from "./daemon";
export {
  daemonEndpoints,
  findDaemon,
  IMAGE_SOURCE_ENV,
  imageSourceFromEnv,
  loadFromDaemon,
} from "./daemon";
export type { OciErrorCode, OciErrorOptions } from "./errors";
export { isOciError, OCI_ERROR_CODES, OciError } from "./errors";
export type { Image } from "./image";
export { loadImage } from "./image";
export type { LayerInput, TarEntry, TarHeader } from "./layers";
export { imageLayers, layerEntries } from "./layers";
export type { LocalOptions } from "./local";
export { importArchive, importLayout, writeLayout } from "./local";
export type { Compression } from "./media-types";
export { MediaType } from "./media-types";
export type { RegistryMirror } from "./mirrors";
export { MIRRORS_ENV, parseMirrorList } from "./mirrors";
export { formatPlatform, hostPlatform, parsePlatform, platformMatches } from "./platform";
export type { BlobKind, ProgressEvent, ProgressListener } from "./progress";
export type { PullOptions, PullPolicy } from "./pull";
export { inspect, pull } from "./pull";
export type { PushOptions, PushResult } from "./push";
export { push } from "./push";
export type { ImageReference } from "./reference";
export { DOCKER_HUB_API, familiarReference, formatReference, parseReference } from "./reference";
export type { RegistryOptions } from "./registry";
export { RegistryClient } from "./registry";
export type { BlobWriter, StoredRef } from "./store";
export { defaultStoreDir, OciStore } from "./store";
export type { ImageLocation } from "./transport";
export { copy, loadFrom, parseLocation } from "./transport";
export type {
  ContainerConfig,
  Descriptor,
  ImageConfigFile,
  ImageIndex,
  ImageManifest,
  Platform,
  RuntimeConfig,
} from "./types";
