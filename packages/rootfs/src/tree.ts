import type { Content } from "./spool";

/** Extended attributes of an inode, by full name ("security.capability"). */
export type Xattrs = Map<string, Buffer>;

interface Meta {
  /** Permission bits incl. setuid/setgid/sticky (mask 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, clamped to 0..2^32-1. */
  mtime: number;
  xattrs?: Xattrs;
}

export interface DirNode extends Meta {
  kind: "dir";
  children: Map<string, Child>;
}
export interface FileNode extends Meta {
  kind: "file";
  content: Content;
}
export interface SymlinkNode extends Meta {
  kind: "symlink";
  target: string;
}
export interface DeviceNode extends Meta {
  kind: "char" | "block";
  major: number;
  minor: number;
}
export interface SpecialNode extends Meta {
  kind: "fifo" | "socket";
}
export type Node = DirNode | FileNode | SymlinkNode | DeviceNode | SpecialNode;

/** A directory entry: the node (shared between hard links) and the layer that last wrote this entry. */
export interface Child {
  node: Node;
  layer: number;
}

export function newDir(meta: Meta): DirNode {
  return { kind: "dir", children: new Map(), ...meta };
}
