/** OCI descriptor (image-spec descriptor.md). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

/** The runtime part of an image config (OCI `config` / Docker `config`). */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

/** An image configuration document (OCI image-spec config.md). */
export interface ImageConfigFile {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  author?: string;
  config?: ContainerConfig;
  rootfs: { type: "layers"; diff_ids: string[] };
  history?: Array<{ created?: string; created_by?: string; empty_layer?: boolean; comment?: string }>;
}

/** The config as a VM runner needs it, normalised (never undefined arrays). */
export interface RuntimeConfig {
  entrypoint: string[];
  cmd: string[];
  /** `KEY=VALUE` strings as in the image. */
  env: string[];
  workingDir: string;
  /** User as written in the image (`name`, `uid`, `uid:gid`, `name:group`), "" = root. */
  user: string;
  /** Exposed ports, e.g. `[{ port: 80, protocol: "tcp" }]`. */
  exposedPorts: Array<{ port: number; protocol: "tcp" | "udp" | "sctp" }>;
  labels: Record<string, string>;
  stopSignal: string | undefined;
}
