/**
 * The node table: the inodes the guest kernel knows (LOOKUP results), by FUSE node id and by
 * parent/name, with the kernel's lookup counts (FORGET) and child counts that keep a node's ancestors
 * alive. A node whose host object was unlinked or replaced is detached (stale) but lives on until
 * the kernel forgets it.
 */
import type * as fs from "node:fs";
import { E, EMPTY, fail } from "./host-fs";
import { FUSE_ROOT_ID } from "./proto";

export interface Node {
  id: number;
  parent: number;
  name: Buffer;
  /** Map key `${parent}/${name(latin1)}`, or null when detached (unlinked/replaced: stale). */
  key: string | null;
  nlookup: number;
  /** Child nodes still referencing this one as parent. */
  children: number;
  ino: bigint;
}

function keyOf(parent: number, name: Buffer): string {
  return `${parent}/${name.toString("latin1")}`;
}

export class NodeTable {
  private nodes = new Map<number, Node>();
  private byKey = new Map<string, Node>();
  private nextNodeId = FUSE_ROOT_ID + 1;

  /**
   * @param maxNodes beyond this many remembered nodes, remember() fails with ENFILE
   * @param onGone called with the id of a node that was dropped or detached (its cached fds go)
   */
  constructor(
    private readonly maxNodes: number,
    private readonly onGone: (id: number) => void,
  ) {}

  get size(): number {
    return this.nodes.size;
  }

  /** Forgets every node and starts over with the root (directory inode `ino`). */
  reset(rootIno: bigint): void {
    this.clear();
    this.nodes.set(FUSE_ROOT_ID, {
      id: FUSE_ROOT_ID,
      parent: 0,
      name: EMPTY,
      key: null,
      nlookup: 1,
      children: 0,
      ino: rootIno,
    });
  }

  clear(): void {
    this.nodes.clear();
    this.byKey.clear();
  }

  /** The node of a guest-sent node id; ESTALE when unknown. */
  node(nodeid: bigint): Node {
    const n = nodeid <= BigInt(Number.MAX_SAFE_INTEGER) ? this.nodes.get(Number(nodeid)) : undefined;
    if (!n) fail(E.ESTALE);
    return n;
  }

  /** The parent of a node, if still remembered. */
  parentOf(n: Node): Node | undefined {
    return this.nodes.get(n.parent);
  }

  /** Still in the table and not detached (the root always is, while remembered). */
  isLive(n: Node | undefined): n is Node {
    return n !== undefined && this.nodes.get(n.id) === n && (n.id === FUSE_ROOT_ID || n.key !== null);
  }

  forget(nodeid: bigint, nlookup: bigint): void {
    if (nodeid > BigInt(Number.MAX_SAFE_INTEGER)) return;
    const n = this.nodes.get(Number(nodeid));
    if (!n || n.id === FUSE_ROOT_ID) return;
    n.nlookup -= nlookup > BigInt(n.nlookup) ? n.nlookup : Number(nlookup);
    this.maybeDrop(n);
  }

  private maybeDrop(n: Node | undefined): void {
    while (n && n.id !== FUSE_ROOT_ID && n.nlookup <= 0 && n.children <= 0) {
      this.nodes.delete(n.id);
      this.onGone(n.id);
      if (n.key !== null && this.byKey.get(n.key) === n) this.byKey.delete(n.key);
      const parent = this.nodes.get(n.parent);
      if (parent) parent.children--;
      n = parent;
    }
  }

  private detach(n: Node | undefined): void {
    if (!n || n.key === null) return;
    this.onGone(n.id);
    if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
    n.key = null;
  }

  /** After unlink/rmdir of parent/name on the host: its node (if any) goes stale. */
  removed(parent: Node, name: Buffer): void {
    this.detach(this.byKey.get(keyOf(parent.id, name)));
  }

  /** Remembers (or re-references) the node for parent/name with the given stat. */
  remember(parent: Node, name: Buffer, st: fs.BigIntStats): Node {
    const key = keyOf(parent.id, name);
    const old = this.byKey.get(key);
    if (old && old.ino === st.ino) {
      old.nlookup++;
      return old;
    }
    if (this.nodes.size >= this.maxNodes) fail(E.ENFILE);
    this.detach(old);
    const n: Node = {
      id: this.nextNodeId++,
      parent: parent.id,
      name: Buffer.from(name),
      key,
      nlookup: 1,
      children: 0,
      ino: st.ino,
    };
    this.nodes.set(n.id, n);
    this.byKey.set(key, n);
    parent.children++;
    return n;
  }

  /** After a host rename: the moved node follows its new name, a replaced one goes stale. */
  renamed(oldParent: Node, oldName: Buffer, newParent: Node, newName: Buffer): void {
    const moved = this.byKey.get(keyOf(oldParent.id, oldName));
    const replaced = this.byKey.get(keyOf(newParent.id, newName));
    if (replaced && replaced !== moved) this.detach(replaced);
    if (!moved) return;
    this.detach(moved);
    const key = keyOf(newParent.id, newName);
    moved.key = key;
    moved.name = Buffer.from(newName);
    if (moved.parent !== newParent.id) {
      const op = this.nodes.get(moved.parent);
      moved.parent = newParent.id;
      newParent.children++;
      if (op) {
        op.children--;
        this.maybeDrop(op);
      }
    }
    this.byKey.set(key, moved);
  }
}
