/** The tar-stream header shape (what @supermachine/oci's `layerEntries` yields). */
export interface TarHeader {
  name: string;
  mode?: number | undefined;
  uid?: number | undefined;
  gid?: number | undefined;
  size?: number | undefined;
  mtime?: Date | undefined;
  type?: string | null | undefined;
  linkname?: string | null | undefined;
  devmajor?: number | undefined;
  devminor?: number | undefined;
  pax?: Record<string, string> | null | undefined;
}

/** One tar entry: its header and its content stream (must be consumed before the next entry). */
export interface LayerEntry {
  header: TarHeader;
  stream: NodeJS.ReadableStream | AsyncIterable<Uint8Array>;
}

/** A layer, lowest first. rootfs does not depend on @supermachine/oci: any producer of this shape works. */
export interface LayerInput {
  digest: string;
  entries(): AsyncIterable<LayerEntry>;
}

/** A file added on top of the layers. */
export interface ExtraFile {
  /** Absolute path in the guest, e.g. "/etc/resolv.conf". */
  guestPath: string;
  /** Content as bytes (or a UTF-8 string)... */
  data?: Uint8Array | string;
  /** ...or read from this host file. */
  hostPath?: string;
  /** Permission bits, default 0o644. */
  mode?: number;
  uid?: number;
  gid?: number;
}
