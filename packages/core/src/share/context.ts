/**
 * The state the op handlers share, passed to each of them as an argument (no module globals): the
 * share's settings, its node, directory-fd and handle tables, the reply encoder, and what INIT
 * negotiated.
 */
import type { DirCache } from "./dir-cache";
import type { AttrEncoder } from "./encode";
import type { HandleTable } from "./handles";
import { E, fail } from "./host-fs";
import type { NodeTable } from "./nodes";

export type SymlinkPolicy = "deny" | "opaque" | "follow";
export type ReaddirPlusMode = "off" | "auto" | "always";

export interface ShareContext {
  readonly policy: SymlinkPolicy;
  readonly readOnly: boolean;
  readonly readdirPlus: ReaddirPlusMode;
  readonly nodes: NodeTable;
  readonly dirs: DirCache;
  readonly handles: HandleTable;
  readonly enc: AttrEncoder;
  /** Protocol minor negotiated by INIT; 0 before INIT (every other op then fails with EIO). */
  minor: number;
  /** READDIRPLUS negotiated by the last INIT. */
  plus: boolean;
}

/** EROFS on a read-only share. */
export function writable(s: ShareContext): void {
  if (s.readOnly) fail(E.EROFS);
}
