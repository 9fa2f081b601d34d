/**
 * Directory fds of the share: the root's O_PATH fd and a bounded LRU of directory nodes' O_PATH
 * fds, handed out as leases (an evicted fd is closed once its last lease is released), plus the
 * component-by-component walk that resolves a node to a directory fd without following symlinks.
 */
import type * as fs from "node:fs";
import { at, closeFd, closeSoon, E, EMPTY, fail, fstatFd, O, O_PATH, openFd, openObject } from "./host-fs";
import type { Node, NodeTable } from "./nodes";
import { FUSE_ROOT_ID } from "./proto";

const MAX_DEPTH = 4096;
const noop = () => {};

interface CachedDir {
  fd: number;
  refs: number;
  dead: boolean;
}

interface DirLease {
  fd: number;
  release(): void;
}

/** A lease on an fd nobody else holds: closed on (the first) release. */
function ownLease(fd: number): DirLease {
  let done = false;
  return {
    fd,
    release: () => {
      if (!done) closeSoon(fd);
      done = true;
    },
  };
}

export class DirCache {
  /** O_PATH fd of the share root while serving, else -1. */
  rootFd = -1;
  private cache = new Map<number, CachedDir>();

  /**
   * @param maxCached directory fds kept open (0: walk from the root every time)
   * @param nofollow O_NOFOLLOW unless policy "follow"
   */
  constructor(
    private readonly nodes: NodeTable,
    private readonly maxCached: number,
    private readonly nofollow: number,
  ) {}

  /** Closes the root fd (after evictAll() and every lease released). */
  async closeRoot(): Promise<void> {
    if (this.rootFd >= 0) {
      const fd = this.rootFd;
      this.rootFd = -1;
      await closeFd(fd);
    }
  }

  evictAll(): void {
    for (const id of [...this.cache.keys()]) this.evict(id);
  }

  evict(id: number): void {
    const c = this.cache.get(id);
    if (!c) return;
    this.cache.delete(id);
    c.dead = true;
    if (c.refs === 0) closeSoon(c.fd);
  }

  private leaseOf(c: CachedDir): DirLease {
    c.refs++;
    let done = false;
    return {
      fd: c.fd,
      release: () => {
        if (done) return;
        done = true;
        c.refs--;
        if (c.dead && c.refs === 0) closeSoon(c.fd);
      },
    };
  }

  private add(id: number, fd: number): CachedDir {
    const c: CachedDir = { fd, refs: 0, dead: false };
    this.cache.set(id, c);
    while (this.cache.size > this.maxCached) {
      const oldest = this.cache.keys().next().value as number;
      this.evict(oldest);
    }
    return c;
  }

  /**
   * An O_PATH fd of directory node `n`. Resolved component by component from the nearest cached
   * ancestor (or the root), each component opened relative to the previous directory's fd with
   * O_DIRECTORY|O_NOFOLLOW (unless "follow"), so a symlink anywhere on the way is never followed.
   * Opened directory fds are kept in a bounded LRU (like an inode's O_PATH fd in a passthrough
   * server): a cached fd names the directory inode itself, whatever happens to its path later.
   */
  private async lease(n: Node): Promise<DirLease> {
    if (n.id === FUSE_ROOT_ID) return { fd: this.rootFd, release: noop };
    const hit = this.cache.get(n.id);
    if (hit) {
      this.cache.delete(n.id);
      this.cache.set(n.id, hit);
      return this.leaseOf(hit);
    }
    const todo: Node[] = [];
    let cur: Node = n;
    for (;;) {
      if (cur.key === null) fail(E.ESTALE);
      todo.push(cur);
      if (todo.length > MAX_DEPTH) fail(E.ELOOP);
      const p = this.nodes.parentOf(cur);
      if (!p) fail(E.ESTALE);
      cur = p;
      if (cur.id === FUSE_ROOT_ID || this.cache.has(cur.id)) break;
    }
    let lease = await this.lease(cur);
    try {
      for (let i = todo.length - 1; i >= 0; i--) {
        const node = todo[i]!;
        const fd = await openFd(at(lease.fd, node.name), O_PATH | O.O_DIRECTORY | this.nofollow);
        lease.release();
        if (this.maxCached > 0 && this.nodes.isLive(node) && !this.cache.has(node.id)) {
          lease = this.leaseOf(this.add(node.id, fd));
        } else {
          lease = ownLease(fd);
        }
      }
      return lease;
    } catch (e) {
      lease.release();
      throw e;
    }
  }

  /** Runs fn with an fd of the directory node `n`. */
  async withDir<T>(n: Node, fn: (dirfd: number) => Promise<T>): Promise<T> {
    const lease = await this.lease(n);
    try {
      return await fn(lease.fd);
    } finally {
      lease.release();
    }
  }

  /** Runs fn with the parent directory fd and final name of a non-root node. */
  async withParent<T>(n: Node, fn: (pfd: number, name: Buffer) => Promise<T>): Promise<T> {
    if (n.id === FUSE_ROOT_ID) fail(E.EINVAL);
    if (n.key === null) fail(E.ESTALE);
    const parent = this.nodes.parentOf(n);
    if (!parent) fail(E.ESTALE);
    return this.withDir(parent, (pfd) => fn(pfd, n.name));
  }

  /**
   * Runs fn with an O_PATH fd on the node's own inode (never following a final symlink unless
   * policy "follow") and its stat. For the root, `pfd` is -1 and `name` empty.
   */
  async withObject<T>(
    n: Node,
    fn: (fd: number, st: fs.BigIntStats, pfd: number, name: Buffer) => Promise<T>,
  ): Promise<T> {
    if (n.id === FUSE_ROOT_ID) return fn(this.rootFd, await fstatFd(this.rootFd), -1, EMPTY);
    return this.withParent(n, async (pfd, name) => {
      const fd = await openObject(pfd, name, this.nofollow !== 0);
      try {
        return await fn(fd, await fstatFd(fd), pfd, name);
      } finally {
        closeSoon(fd);
      }
    });
  }
}
